//! Identifiability metrics: the mean correlation coefficient (MCC) between recovered and true
//! latents after an optimal one-to-one matching, and the F1 of a recovered structure.
use tch::{Kind, Tensor};

use crate::error::{Result, ThoughtError};

/// A one-to-one matching of true latents to recovered ones.
#[derive(Clone, Debug, PartialEq)]
pub struct Matching {
    /// `estimated[j]`: the recovered latent matched to true latent j.
    pub estimated: Vec<usize>,
    /// `correlations[j]`: |Pearson correlation| between true latent j and its match.
    pub correlations: Vec<f64>,
}

impl Matching {
    /// Mean matched correlation over the true latents `j` with `keep(j)`; NaN when none is kept.
    pub fn mcc(&self, keep: impl Fn(usize) -> bool) -> f64 {
        let kept: Vec<f64> = (0..self.correlations.len()).filter(|&j| keep(j)).map(|j| self.correlations[j]).collect();
        kept.iter().sum::<f64>() / kept.len() as f64
    }
}

/// Matches true latents (`[samples, k_true]`) to recovered ones (`[samples, k_hat]`,
/// `k_hat >= k_true`) maximizing the total |Pearson correlation| (the Hungarian algorithm).
pub fn match_latents(recovered: &Tensor, truth: &Tensor) -> Result<Matching> {
    let (r, t) = (recovered.size(), truth.size());
    if r.len() != 2 || t.len() != 2 || r[0] != t[0] || r[1] < t[1] {
        return Err(ThoughtError::Config(format!(
            "cannot match latents of shapes {r:?} (recovered) and {t:?} (true): need [samples, k_hat] and [samples, k_true] with k_hat >= k_true"
        )));
    }
    let corr = abs_correlations(truth, recovered)?;
    let estimated = hungarian_max(&corr);
    let correlations = estimated.iter().enumerate().map(|(j, &e)| corr[j][e]).collect();
    Ok(Matching { estimated, correlations })
}

/// `|corr(a_i, b_j)|` for the columns of `a` (rows of the result) and of `b` (columns). A constant
/// column has correlation 0 with everything.
fn abs_correlations(a: &Tensor, b: &Tensor) -> Result<Vec<Vec<f64>>> {
    let standardize = |x: &Tensor| {
        let x = x.to_kind(Kind::Double);
        let c = &x - x.mean_dim(0, true, Kind::Double);
        let norm = c.square().sum_dim_intlist(0, true, Kind::Double).sqrt().clamp_min(1e-300);
        c / norm
    };
    let corr = standardize(a).tr().matmul(&standardize(b)).abs();
    let rows = corr.size()[0];
    (0..rows).map(|i| Ok(Vec::<f64>::try_from(&corr.get(i))?)).collect()
}

/// Maximum-weight assignment of each row to a distinct column (`rows <= cols`); returns the column
/// of each row. The O(rows^2 cols) shortest-augmenting-path form of the Hungarian algorithm with
/// potentials, run on costs `-w`.
pub fn hungarian_max(w: &[Vec<f64>]) -> Vec<usize> {
    let n = w.len();
    let m = w.first().map_or(0, Vec::len);
    // 1-based arrays with index 0 as the virtual source, as in the classic formulation.
    let (mut u, mut v) = (vec![0.0f64; n + 1], vec![0.0f64; m + 1]);
    let mut row_of = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        row_of[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let (mut delta, mut j1) = (f64::INFINITY, 0);
            for j in 1..=m {
                if used[j] {
                    continue;
                }
                let cur = -w[i0 - 1][j - 1] - u[i0] - v[j];
                if cur < minv[j] {
                    minv[j] = cur;
                    way[j] = j0;
                }
                if minv[j] < delta {
                    delta = minv[j];
                    j1 = j;
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        // Flip the augmenting path back to the source.
        while j0 != 0 {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
        }
    }
    let mut col_of = vec![0usize; n];
    for j in 1..=m {
        if row_of[j] != 0 {
            col_of[row_of[j] - 1] = j - 1;
        }
    }
    col_of
}

/// F1 of a recovered agent-by-latent structure against the true one, comparing true latent j with
/// its matched latent `matching.estimated[j]`; "agent i uses latent j" is the positive class.
pub fn structure_f1(truth: &[Vec<bool>], recovered: &[Vec<bool>], matching: &Matching) -> f64 {
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for (t_row, r_row) in truth.iter().zip(recovered) {
        for (j, &t) in t_row.iter().enumerate() {
            match (t, r_row[matching.estimated[j]]) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fn_ += 1,
                (false, false) => {}
            }
        }
    }
    if tp == 0 {
        return 0.0;
    }
    2.0 * tp as f64 / (2 * tp + fp + fn_) as f64
}

//! Synthetic agent states with a known thought structure, for the identifiability benchmark.
//!
//! Latents Z are i.i.d. Laplace. They fall into groups shared by all agents, by each pair of
//! agents (from 3 agents on) and private to each agent, assigned round-robin over the groups so
//! every group gets at least one latent. Agent i observes only its own thoughts S_i through an
//! invertible two-layer leaky-ReLU map with square layers,
//! `x_i = lrelu_0.2(W_i lrelu_0.5(a_i * z_{S_i} + c_i) + e_i)`, whose first layer is diagonal and
//! whose second layer `W_i` (`|S_i| x |S_i|`) is sparse. The sparsity pattern is built so that the
//! concatenated rows satisfy *structural sparsity* (for every latent j, the rows that depend on j
//! have only j in common), the row-level condition under which the identifiability results the
//! method rests on (Zheng, Ng & Zhang 2022) recover single latents and not just groups. With a
//! dense `W_i` only the groups would be identifiable, and matching single latents (the MCC) would
//! measure nothing the theory promises.
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use tch::Tensor;

use crate::error::{Result, ThoughtError};
use crate::states::AgentStates;

#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    pub agents: usize,
    /// The number of true latents.
    pub latent_dim: usize,
    pub samples: usize,
    pub seed: u64,
}

impl SyntheticConfig {
    /// Total state dimensions: each agent observes as many as it has thoughts, so this is the
    /// sum over latents of the number of agents sharing each.
    pub fn state_dim(&self) -> usize {
        let groups = groups(self.agents);
        (0..self.latent_dim).map(|j| groups[j % groups.len()].len()).sum()
    }
}

/// Generated states and the truth to score a recovery against.
#[derive(Debug)]
pub struct SyntheticData {
    pub states: AgentStates,
    /// The true latents, `[samples, latent_dim]`.
    pub latents: Tensor,
    /// `true_b[i][j]`: agent i's state depends on latent j.
    pub true_b: Vec<Vec<bool>>,
    /// `row_support[r][j]`: state dimension r depends on latent j (the row-level B).
    pub row_support: Vec<Vec<bool>>,
}

impl SyntheticData {
    /// How many agents share true latent j.
    pub fn alpha(&self, j: usize) -> usize {
        self.true_b.iter().filter(|row| row[j]).count()
    }
}

/// The agent groups in round-robin order: all agents, each pair (only if that is not "all"), each
/// single agent.
fn groups(agents: usize) -> Vec<Vec<usize>> {
    let mut out = vec![(0..agents).collect::<Vec<_>>()];
    if agents > 2 {
        for a in 0..agents {
            out.extend((a + 1..agents).map(|b| vec![a, b]));
        }
    }
    out.extend((0..agents).map(|a| vec![a]));
    out
}

pub(crate) fn normal(rng: &mut StdRng) -> f64 {
    // Box-Muller; 1 - u keeps the logarithm finite.
    let (u, v): (f64, f64) = (rng.random(), rng.random());
    (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn laplace(rng: &mut StdRng) -> f64 {
    // Inverse CDF of the unit Laplace; scaled by 1/sqrt(2) to unit variance.
    let u: f64 = rng.random::<f64>() - 0.5;
    -u.signum() * (1.0 - 2.0 * u.abs()).max(f64::MIN_POSITIVE).ln() / std::f64::consts::SQRT_2
}

/// A weight of magnitude in [0.5, 1.5) and random sign: bounded away from 0 so that every entry
/// of the support is a real dependence (a near-zero weight would make a latent nearly invisible
/// in that row, and the truth ambiguous).
fn signed_uniform(rng: &mut StdRng) -> f64 {
    rng.random_range(0.5..1.5) * if rng.random() { 1.0 } else { -1.0 }
}

fn lrelu(x: f64, slope: f64) -> f64 {
    if x > 0.0 {
        x
    } else {
        slope * x
    }
}

pub fn generate(config: &SyntheticConfig) -> Result<SyntheticData> {
    let groups = groups(config.agents);
    if config.agents < 2 {
        return Err(ThoughtError::Config(format!("{} agents (the benchmark needs at least 2)", config.agents)));
    }
    if config.latent_dim < groups.len() {
        return Err(ThoughtError::Config(format!(
            "latent dimension {} is below the {} thought groups of {} agents (each group needs a latent)",
            config.latent_dim,
            groups.len(),
            config.agents
        )));
    }
    if config.samples < 2 {
        return Err(ThoughtError::Config(format!("{} samples (need at least 2)", config.samples)));
    }
    let (n, k) = (config.samples, config.latent_dim);
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut true_b = vec![vec![false; k]; config.agents];
    for j in 0..k {
        for &a in &groups[j % groups.len()] {
            true_b[a][j] = true;
        }
    }
    let thoughts: Vec<Vec<usize>> = true_b.iter().map(|row| (0..k).filter(|&j| row[j]).collect()).collect();
    let row_support = sparse_support(&thoughts, k, &mut rng)?;
    let z: Vec<f64> = (0..n * k).map(|_| laplace(&mut rng)).collect();
    let mut blocks = Vec::with_capacity(config.agents);
    let mut row0 = 0;
    for s in &thoughts {
        let d = s.len();
        let support = &row_support[row0..row0 + d];
        row0 += d;
        let w = invertible_weights(support, s, &mut rng)?;
        let scale: Vec<f64> = (0..d).map(|_| signed_uniform(&mut rng)).collect();
        let shift: Vec<f64> = (0..d).map(|_| 0.5 * normal(&mut rng)).collect();
        let bias: Vec<f64> = (0..d).map(|_| 0.5 * normal(&mut rng)).collect();
        let mut x = vec![0f32; n * d];
        let mut h = vec![0f64; d];
        for t in 0..n {
            for (c, &j) in s.iter().enumerate() {
                h[c] = lrelu(scale[c] * z[t * k + j] + shift[c], 0.5);
            }
            for r in 0..d {
                let pre: f64 = (0..d).map(|c| w[r * d + c] * h[c]).sum::<f64>() + bias[r];
                x[t * d + r] = lrelu(pre, 0.2) as f32;
            }
        }
        blocks.push(Tensor::from_slice(&x).view([n as i64, d as i64]));
    }
    let zf: Vec<f32> = z.iter().map(|&v| v as f32).collect();
    Ok(SyntheticData {
        states: AgentStates::from_blocks(&blocks)?,
        latents: Tensor::from_slice(&zf).view([n as i64, k as i64]),
        true_b,
        row_support,
    })
}

/// Row supports (`[n_h][k]`) of all agents. Agent i gets `|S_i|` rows over S_i, each with one
/// entry of a random permutation (so the square layer can be invertible) and one random extra
/// entry. Then, while some latent j has another latent m in every row that contains j, j is added
/// to a row of an agent using j that lacks m; each such step shrinks j's common set.
fn sparse_support(thoughts: &[Vec<usize>], k: usize, rng: &mut StdRng) -> Result<Vec<Vec<bool>>> {
    let mut rows: Vec<Vec<bool>> = Vec::new();
    let mut owner: Vec<usize> = Vec::new();
    for (agent, s) in thoughts.iter().enumerate() {
        let mut perm = s.clone();
        perm.shuffle(rng);
        for &p in &perm {
            let mut row = vec![false; k];
            row[p] = true;
            row[s[rng.random_range(0..s.len())]] = true;
            rows.push(row);
            owner.push(agent);
        }
    }
    let uses = |agent: usize, j: usize| thoughts[agent].contains(&j);
    for _pass in 0..50 {
        let mut changed = false;
        for j in 0..k {
            while let Some(m) = common_other(&rows, j) {
                let candidates: Vec<usize> =
                    (0..rows.len()).filter(|&r| uses(owner[r], j) && !rows[r][m] && !rows[r][j]).collect();
                let Some(&r) = candidates.choose(rng) else {
                    return Err(ThoughtError::Config(format!(
                        "no sparse mixing separates latent {j} from latent {m} (too few latents per agent)"
                    )));
                };
                rows[r][j] = true;
                changed = true;
            }
        }
        if !changed {
            return Ok(rows);
        }
    }
    Err(ThoughtError::Config("could not build a structurally sparse mixing".into()))
}

/// A latent other than j present in every row that contains j, if any.
fn common_other(rows: &[Vec<bool>], j: usize) -> Option<usize> {
    let with_j: Vec<&Vec<bool>> = rows.iter().filter(|r| r[j]).collect();
    let k = rows.first().map_or(0, Vec::len);
    (0..k).find(|&m| m != j && !with_j.is_empty() && with_j.iter().all(|r| r[m]))
}

/// Random weights on `support` (rows of this agent, columns indexed by global latent ids) as a
/// `d x d` row-major matrix over the agent's thoughts `s`, redrawn until its condition number is
/// below `10 d` so that the map is invertible and not nearly singular.
fn invertible_weights(support: &[Vec<bool>], s: &[usize], rng: &mut StdRng) -> Result<Vec<f64>> {
    let d = s.len();
    for _ in 0..100 {
        let w: Vec<f64> = support
            .iter()
            .flat_map(|row| s.iter().map(|&j| if row[j] { signed_uniform(rng) } else { 0.0 }).collect::<Vec<_>>())
            .collect();
        let cond = Tensor::from_slice(&w).view([d as i64, d as i64]).linalg_cond(2.0).double_value(&[]);
        if cond.is_finite() && cond < 10.0 * d as f64 {
            return Ok(w);
        }
    }
    Err(ThoughtError::Config(format!("no well-conditioned {d}x{d} mixing found in 100 draws")))
}

//! Read-out of the thought structure from a trained autoencoder: which agents' states each latent
//! affects (B), its agreement level alpha_j, and each agent's shared and private thoughts.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{by_name, Result, ThoughtError};
use crate::states::AgentStates;
use crate::train::ThoughtAutoencoder;

/// How |J| is aggregated over samples before thresholding.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregate {
    /// The largest |dH_r/dZ_j| over samples: B's definition ("non-zero somewhere").
    Max,
    /// The mean over samples: less sensitive to a few outlying samples.
    Mean,
}

impl Aggregate {
    pub const ALL: [Aggregate; 2] = [Aggregate::Max, Aggregate::Mean];

    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Max => "max",
            Aggregate::Mean => "mean",
        }
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Aggregate {
    type Err = ThoughtError;

    fn from_str(s: &str) -> Result<Self> {
        by_name("aggregate", s, &Self::ALL, Self::name)
    }
}

/// The threshold rule. Scores are `S[i][j] = max over rows r of agent i of agg_samples |J_rj| *
/// std(z_j)`: the column scale makes latents of different spread comparable (the autoencoder does
/// not fix the latents' scale). Agent i uses latent j iff `S[i][j] > threshold * max S`, i.e. the
/// threshold is relative to the largest entry of the whole matrix.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StructureConfig {
    pub aggregate: Aggregate,
    pub threshold: f64,
}

impl Default for StructureConfig {
    fn default() -> Self {
        Self { aggregate: Aggregate::Max, threshold: 0.1 }
    }
}

/// The recovered structure over `n` agents and `k` latents. Routing consumes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ThoughtStructure {
    /// `b[i][j]`: latent j affects some dimension of agent i's state.
    pub b: Vec<Vec<bool>>,
    /// `alpha[j]`: the number of agents latent j affects (n: shared by all, 1: private, 0: unused).
    pub alpha: Vec<usize>,
    /// `scores[i][j]` divided by their maximum, so that `b[i][j] == scores[i][j] > threshold`.
    pub scores: Vec<Vec<f64>>,
    pub threshold: f64,
    pub aggregate: Aggregate,
}

/// Samples per Jacobian chunk: J is `[chunk, n_h, k]`, which for LLM-sized states (n_h in the
/// thousands, k up to 1024) must not be built for all samples at once.
const CHUNK: i64 = 256;

impl ThoughtStructure {
    /// Thresholds a score matrix (`[agent][latent]`, any non-negative scale).
    pub fn from_scores(scores: Vec<Vec<f64>>, config: &StructureConfig) -> Self {
        let max = scores.iter().flatten().copied().fold(0.0f64, f64::max);
        let scores: Vec<Vec<f64>> = scores
            .into_iter()
            .map(|row| row.into_iter().map(|s| if max > 0.0 { s / max } else { 0.0 }).collect())
            .collect();
        let b: Vec<Vec<bool>> = scores.iter().map(|row| row.iter().map(|&s| s > config.threshold).collect()).collect();
        let k = b.first().map_or(0, Vec::len);
        let alpha = (0..k).map(|j| b.iter().filter(|row| row[j]).count()).collect();
        Self { b, alpha, scores, threshold: config.threshold, aggregate: config.aggregate }
    }

    /// The structure of a trained autoencoder, read from its decoder Jacobian at the latents of
    /// `states` (usually the training states).
    pub fn recover(ae: &ThoughtAutoencoder, states: &AgentStates, config: &StructureConfig) -> Result<Self> {
        let x = ae.normalize(states)?;
        let n = states.samples();
        let net = ae.network();
        let agg = tch::no_grad(|| {
            let z = net.encoder.forward(&x);
            let scale = z.std_dim(0, true, false);
            let mut acc: Option<Tensor> = None;
            for start in (0..n).step_by(CHUNK as usize) {
                let len = CHUNK.min(n - start);
                let (_, jac) = net.decoder.forward_with_jacobian(&z.narrow(0, start, len), None);
                let jac = jac.abs();
                let part = match config.aggregate {
                    Aggregate::Max => jac.amax(0, false),
                    Aggregate::Mean => jac.sum_dim_intlist(0, false, Kind::Float),
                };
                acc = Some(match (acc, config.aggregate) {
                    (None, _) => part,
                    (Some(a), Aggregate::Max) => a.maximum(&part),
                    (Some(a), Aggregate::Mean) => a + part,
                });
            }
            let acc = acc.unwrap_or_else(|| scale.zeros_like().unsqueeze(0));
            let acc = if config.aggregate == Aggregate::Mean { acc / n as f64 } else { acc };
            acc * scale
        });
        let offs = states.block_offsets();
        let mut scores = Vec::with_capacity(states.num_agents());
        for w in offs.windows(2) {
            let block = agg.narrow(0, w[0], w[1] - w[0]).amax(0, false).to_kind(Kind::Double).to_device(tch::Device::Cpu);
            scores.push(Vec::<f64>::try_from(&block)?);
        }
        Ok(Self::from_scores(scores, config))
    }

    pub fn num_agents(&self) -> usize {
        self.b.len()
    }

    pub fn num_latents(&self) -> usize {
        self.alpha.len()
    }

    /// Agent i's thought set: the latents that affect its state.
    pub fn thoughts(&self, agent: usize) -> Vec<usize> {
        self.select(agent, |_| true)
    }

    /// Latents of agent i's set that at least one other agent also uses (alpha >= 2).
    pub fn shared(&self, agent: usize) -> Vec<usize> {
        self.select(agent, |alpha| alpha >= 2)
    }

    /// Latents that only agent i uses (alpha == 1).
    pub fn private(&self, agent: usize) -> Vec<usize> {
        self.select(agent, |alpha| alpha == 1)
    }

    fn select(&self, agent: usize, keep: impl Fn(usize) -> bool) -> Vec<usize> {
        let Some(row) = self.b.get(agent) else { return Vec::new() };
        (0..row.len()).filter(|&j| row[j] && keep(self.alpha[j])).collect()
    }
}

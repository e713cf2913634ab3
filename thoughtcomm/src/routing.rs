//! Routing with agreement (Section 3 of the design note): agent i receives only the latent
//! thoughts that affect its own state (B[i][j] = 1), each scaled by a weight that depends on how
//! many agents share it (its agreement level alpha_j). In the fixed-length form used here,
//! `Z_tilde^(i) = Z_hat * mask_i * w[alpha]`: zeros where agent i is not involved.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Result, ThoughtError};
use crate::structure::ThoughtStructure;

/// Which thoughts reach an agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// The paper: agent i gets the thoughts of its own set (shared and private ones).
    #[default]
    Routed,
    /// Ablation: every agent gets every thought (no routing).
    All,
}

/// How the agreement weights w[alpha] are set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Agreement {
    /// Learned jointly with the prefix adapter, starting from the fixed rule (the default).
    #[default]
    Learned,
    /// The fixed rule w[alpha] = alpha / n: thoughts more agents agree on weigh more.
    Fixed,
    /// Ablation: w = 1 for every level (no agreement reweighting).
    None,
}

macro_rules! kebab_enum {
    ($t:ty, $($v:ident => $s:literal),+) => {
        impl $t {
            pub fn name(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
        impl FromStr for $t {
            type Err = ThoughtError;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($s => Ok(Self::$v),)+
                    other => Err(ThoughtError::Config(format!(
                        "unknown {} '{other}' (known: {})", stringify!($t).to_lowercase(), [$($s),+].join(", ")
                    ))),
                }
            }
        }
    };
}
kebab_enum!(Routing, Routed => "routed", All => "all");
kebab_enum!(Agreement, Learned => "learned", Fixed => "fixed", None => "none");

/// The fixed rule `w[alpha] = alpha / n` for alpha = 0..=n (a `[n + 1]` f32 tensor).
pub fn fixed_agreement_weights(num_agents: usize) -> Tensor {
    let w: Vec<f32> = (0..=num_agents).map(|a| a as f32 / num_agents.max(1) as f32).collect();
    Tensor::from_slice(&w)
}

/// For each agent, which latents it receives and at which agreement level.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingPlan {
    /// `masks[i][j]`: agent i receives latent j.
    pub masks: Vec<Vec<bool>>,
    /// `alpha[j]`: how many agents latent j affects (from the recovered structure).
    pub alpha: Vec<usize>,
    pub routing: Routing,
}

impl RoutingPlan {
    pub fn new(structure: &ThoughtStructure, routing: Routing) -> Self {
        let masks = match routing {
            Routing::Routed => structure.b.clone(),
            Routing::All => vec![vec![true; structure.num_latents()]; structure.num_agents()],
        };
        RoutingPlan { masks, alpha: structure.alpha.clone(), routing }
    }

    pub fn num_agents(&self) -> usize {
        self.masks.len()
    }

    pub fn num_latents(&self) -> usize {
        self.alpha.len()
    }

    /// Latents agent i receives that at least two agents share.
    pub fn shared_count(&self, agent: usize) -> usize {
        self.count(agent, |a| a >= 2)
    }

    /// Latents agent i receives that only one agent uses.
    pub fn private_count(&self, agent: usize) -> usize {
        self.count(agent, |a| a == 1)
    }

    fn count(&self, agent: usize, keep: impl Fn(usize) -> bool) -> usize {
        self.masks.get(agent).map_or(0, |m| m.iter().zip(&self.alpha).filter(|(&on, &a)| on && keep(a)).count())
    }

    /// `[n, k]` f32: 1 where agent i receives latent j.
    pub fn mask_tensor(&self) -> Tensor {
        let flat: Vec<f32> = self.masks.iter().flatten().map(|&b| f32::from(u8::from(b))).collect();
        Tensor::from_slice(&flat).view([self.num_agents() as i64, self.num_latents() as i64])
    }

    /// `[k]` int64: each latent's agreement level, the index into the weights.
    pub fn alpha_tensor(&self) -> Tensor {
        let alpha: Vec<i64> = self.alpha.iter().map(|&a| a as i64).collect();
        Tensor::from_slice(&alpha)
    }

    /// The routed thoughts of every agent, `[n, k]`: row i is `z * mask_i * weights[alpha]`.
    /// `z` is one round's standardized latents (`[k]`), `weights` the agreement weights
    /// (`[n + 1]`, indexed by alpha). Differentiable in `z` and `weights`.
    pub fn route(&self, z: &Tensor, weights: &Tensor) -> Result<Tensor> {
        let (k, n) = (self.num_latents() as i64, self.num_agents() as i64);
        if z.size() != [k] {
            return Err(ThoughtError::DimensionMismatch {
                what: format!("the latent vector of shape {:?} to route", z.size()),
                expected: k,
                got: z.size().last().copied().unwrap_or(0),
            });
        }
        if weights.size() != [n + 1] {
            return Err(ThoughtError::DimensionMismatch {
                what: "the number of agreement weights (one per level 0..=n)".into(),
                expected: n + 1,
                got: weights.size().first().copied().unwrap_or(0),
            });
        }
        let device = z.device();
        let per_latent = weights.index_select(0, &self.alpha_tensor().to_device(device));
        Ok(self.mask_tensor().to_device(device).to_kind(Kind::Float) * (z * per_latent).unsqueeze(0))
    }
}

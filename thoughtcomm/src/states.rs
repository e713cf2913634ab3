//! Validated model states H = [h_1 .. h_n] of several agents, one row per sample, and the
//! per-dimension normalization the autoencoder trains on.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Result, ThoughtError};

/// The concatenated states of `n` agents: `h` is `[samples, sum(block_sizes)]` (f32, CPU) and
/// agent `i` owns the columns `block_offsets()[i] .. block_offsets()[i + 1]`. Construction checks
/// everything the autoencoder relies on, so later steps never see empty, ragged or non-finite data.
#[derive(Debug)]
pub struct AgentStates {
    h: Tensor,
    block_sizes: Vec<i64>,
}

impl AgentStates {
    /// One `[samples, d_i]` tensor per agent (any float kind, any device).
    pub fn from_blocks(blocks: &[Tensor]) -> Result<Self> {
        if blocks.is_empty() {
            return Err(ThoughtError::Empty("no agents were given".into()));
        }
        let mut sizes = Vec::with_capacity(blocks.len());
        let mut samples = None;
        for (agent, block) in blocks.iter().enumerate() {
            let shape = block.size();
            if shape.len() != 2 {
                return Err(ThoughtError::DimensionMismatch {
                    what: format!("the number of axes of agent {agent}'s states (expected [samples, dim])"),
                    expected: 2,
                    got: shape.len() as i64,
                });
            }
            let expected = *samples.get_or_insert(shape[0]);
            if shape[0] != expected {
                return Err(ThoughtError::SampleCountMismatch { agent, expected, got: shape[0] });
            }
            sizes.push(shape[1]);
        }
        let blocks: Vec<Tensor> = blocks.iter().map(|b| b.to_device(tch::Device::Cpu).to_kind(Kind::Float)).collect();
        Self::from_concat(Tensor::cat(&blocks, 1), sizes)
    }

    /// An already concatenated `[samples, sum(block_sizes)]` matrix.
    pub fn from_concat(h: Tensor, block_sizes: Vec<i64>) -> Result<Self> {
        if block_sizes.is_empty() {
            return Err(ThoughtError::Empty("no agents were given".into()));
        }
        if let Some(agent) = block_sizes.iter().position(|&d| d <= 0) {
            return Err(ThoughtError::Empty(format!("agent {agent} has state dimension {}", block_sizes[agent])));
        }
        let shape = h.size();
        if shape.len() != 2 {
            return Err(ThoughtError::DimensionMismatch {
                what: "the number of axes of the states (expected [samples, dim])".into(),
                expected: 2,
                got: shape.len() as i64,
            });
        }
        let total: i64 = block_sizes.iter().sum();
        if shape[1] != total {
            return Err(ThoughtError::DimensionMismatch {
                what: "the width of the concatenated states".into(),
                expected: total,
                got: shape[1],
            });
        }
        if shape[0] == 0 {
            return Err(ThoughtError::Empty("0 samples".into()));
        }
        let h = h.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous();
        let states = Self { h, block_sizes };
        states.check_finite()?;
        Ok(states)
    }

    fn check_finite(&self) -> Result<()> {
        let bad = self.h.isfinite().logical_not();
        if bad.any().int64_value(&[]) == 0 {
            return Ok(());
        }
        // Name the first offending entry and the agent that owns it: a NaN usually means one
        // agent's capture went wrong, and that is what the user needs to look at.
        let first = bad.nonzero().get(0);
        let (sample, col) = (first.int64_value(&[0]), first.int64_value(&[1]));
        let offsets = self.block_offsets();
        let agent = offsets.windows(2).position(|w| col >= w[0] && col < w[1]).unwrap_or(0);
        Err(ThoughtError::NonFinite { agent, sample, dim: col - offsets[agent] })
    }

    /// The `[samples, n_h]` matrix.
    pub fn h(&self) -> &Tensor {
        &self.h
    }

    pub fn block_sizes(&self) -> &[i64] {
        &self.block_sizes
    }

    /// `[0, d_1, d_1 + d_2, ..., n_h]`.
    pub fn block_offsets(&self) -> Vec<i64> {
        offsets(&self.block_sizes)
    }

    pub fn samples(&self) -> i64 {
        self.h.size()[0]
    }

    pub fn num_agents(&self) -> usize {
        self.block_sizes.len()
    }
}

pub(crate) fn offsets(block_sizes: &[i64]) -> Vec<i64> {
    let mut out = vec![0];
    for d in block_sizes {
        out.push(out.last().copied().unwrap_or(0) + d);
    }
    out
}

/// Per-dimension mean and standard deviation of the training states, stored with the checkpoint so
/// that later states are mapped exactly as the training states were.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Dimensions whose spread is below this are constant in the data; dividing by their tiny std
/// would turn rounding noise into unit-variance signal, so they are only centred.
const MIN_STD: f64 = 1e-6;

impl Normalization {
    pub(crate) fn fit(states: &AgentStates) -> Result<Self> {
        Self::of_rows(states.h())
    }

    /// Per-column mean and standard deviation of `h` (`[samples, dim]`, f32 on the CPU).
    pub(crate) fn of_rows(h: &Tensor) -> Result<Self> {
        let mean = h.mean_dim(0, false, Kind::Float);
        let std = h.std_dim(0, false, false);
        let std = std.where_self(&std.ge(MIN_STD), &Tensor::ones_like(&std));
        Ok(Self { mean: to_vec(&mean)?, std: to_vec(&std)? })
    }

    pub(crate) fn apply(&self, h: &Tensor) -> Tensor {
        (h - Tensor::from_slice(&self.mean)) / Tensor::from_slice(&self.std)
    }

    pub(crate) fn invert(&self, x: &Tensor) -> Tensor {
        x * Tensor::from_slice(&self.std) + Tensor::from_slice(&self.mean)
    }
}

pub(crate) fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1))?)
}

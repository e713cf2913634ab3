//! Training of the thought autoencoder: seeded mini-batches, Adam, and the state a checkpoint
//! needs to resume bit-for-bit (weights, Adam moments, step, normalization).
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::autoencoder::{AutoencoderConfig, ThoughtNetwork};
use crate::error::{Result, ThoughtError};
use crate::optim::{zero_grads, Adam};
use crate::states::{AgentStates, Normalization};

/// Optimization settings; stored in the checkpoint so a resumed run keeps them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub batch_size: i64,
    pub learning_rate: f64,
    /// Seeds the initial weights and every mini-batch.
    pub seed: u64,
    /// Latent columns of the decoder Jacobian the penalty is estimated on at each step, drawn at
    /// random without replacement (None, or k or more: all of them). The Jacobian costs about
    /// batch x k x width² per layer, the bulk of a step at large k; the penalties sum over
    /// columns, so a random subset scaled by k / columns is an unbiased estimate of the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jacobian_columns: Option<i64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { batch_size: 128, learning_rate: 1e-3, seed: 0, jacobian_columns: None }
    }
}

impl TrainConfig {
    fn validate(&self) -> Result<()> {
        if self.batch_size < 1 {
            return Err(ThoughtError::Config(format!("batch size {} (must be at least 1)", self.batch_size)));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(ThoughtError::Config(format!("learning rate {} (must be finite and > 0)", self.learning_rate)));
        }
        if let Some(c) = self.jacobian_columns.filter(|&c| c < 1) {
            return Err(ThoughtError::Config(format!("jacobian columns {c} (must be at least 1)")));
        }
        Ok(())
    }
}

/// What one `fit` call did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainReport {
    /// The autoencoder's step counter after the call.
    pub step: u64,
    /// Mean over the last 100 steps (fewer if the call ran fewer).
    pub reconstruction: f64,
    pub penalty: f64,
    pub seconds: f64,
    pub samples_per_second: f64,
}

/// A thought autoencoder with everything needed to train, resume and apply it.
#[derive(Debug)]
pub struct ThoughtAutoencoder {
    pub(crate) net: ThoughtNetwork,
    pub(crate) train: TrainConfig,
    /// Fitted on the states of the first `fit` call and fixed afterwards.
    pub(crate) normalization: Option<Normalization>,
    pub(crate) step: u64,
    pub(crate) adam: Adam,
}

impl ThoughtAutoencoder {
    pub fn new(config: AutoencoderConfig, train: TrainConfig) -> Result<Self> {
        train.validate()?;
        let net = ThoughtNetwork::new(&config, train.seed)?;
        let adam = Adam::new(&net.vs);
        Ok(Self { net, train, normalization: None, step: 0, adam })
    }

    /// The same autoencoder with its weights and Adam moments on `device`. Training and the
    /// Jacobian run there; states come in and latents go out on the CPU. Initial weights and
    /// mini-batches do not depend on the device, but on CUDA the arithmetic is not bit-for-bit
    /// that of the CPU (nor, with its nondeterministic kernels, of another CUDA run).
    pub fn to_device(mut self, device: Device) -> Self {
        if device != self.device() {
            self.net.vs.set_device(device);
            for (_, m, v) in self.adam.moments.iter_mut() {
                *m = m.to_device(device);
                *v = v.to_device(device);
            }
        }
        self
    }

    pub fn device(&self) -> Device {
        self.net.vs.device()
    }

    pub fn config(&self) -> &AutoencoderConfig {
        self.net.config()
    }

    pub fn train_config(&self) -> &TrainConfig {
        &self.train
    }

    pub fn network(&self) -> &ThoughtNetwork {
        &self.net
    }

    pub fn normalization(&self) -> Option<&Normalization> {
        self.normalization.as_ref()
    }

    /// Optimizer steps taken so far (over all `fit` calls, including before a checkpoint).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Checks that `states` have this autoencoder's agent blocks.
    pub fn check_states(&self, states: &AgentStates) -> Result<()> {
        let expected = &self.config().block_sizes;
        if states.num_agents() != expected.len() {
            return Err(ThoughtError::DimensionMismatch {
                what: "the number of agents".into(),
                expected: expected.len() as i64,
                got: states.num_agents() as i64,
            });
        }
        for (agent, (&got, &want)) in states.block_sizes().iter().zip(expected).enumerate() {
            if got != want {
                return Err(ThoughtError::DimensionMismatch {
                    what: format!("agent {agent}'s state dimension"),
                    expected: want,
                    got,
                });
            }
        }
        Ok(())
    }

    /// States mapped to the normalized space the networks work in, on the autoencoder's device.
    pub fn normalize(&self, states: &AgentStates) -> Result<Tensor> {
        self.check_states(states)?;
        let norm = self.normalization.as_ref().ok_or_else(|| {
            ThoughtError::Config("the autoencoder is untrained: it has no normalization statistics yet".into())
        })?;
        Ok(norm.apply(states.h()).to_device(self.device()))
    }

    /// `steps` more Adam steps on mini-batches of `states` (drawn with replacement; batch `s` is
    /// a function of the seed and `s` only, so a resumed run sees the batches it would have).
    pub fn fit(&mut self, states: &AgentStates, steps: u64) -> Result<TrainReport> {
        self.check_states(states)?;
        if self.normalization.is_none() {
            self.normalization = Some(Normalization::fit(states)?);
        }
        let x = self.normalize(states)?;
        let n = states.samples();
        let start = Instant::now();
        let window = 100.min(steps.max(1));
        let (mut rec_sum, mut pen_sum) = (0.0, 0.0);
        let k = self.config().latent_dim;
        let columns = self.train.jacobian_columns.filter(|&c| c < k);
        for i in 0..steps {
            let step = self.step + 1;
            let batch = x.index_select(0, &batch_indices(self.train.seed, step, self.train.batch_size, n).to_device(x.device()));
            let columns = columns.map(|c| column_indices(self.train.seed, step, c, k).to_device(x.device()));
            let loss = self.net.loss(&batch, columns.as_ref());
            zero_grads(&self.net.vs);
            loss.total.backward();
            self.adam.step(&self.net.vs, self.train.learning_rate, step)?;
            self.step = step;
            if steps - i <= window {
                rec_sum += loss.reconstruction.double_value(&[]);
                pen_sum += loss.penalty.double_value(&[]);
            }
            if step.is_multiple_of(1000) {
                tracing::debug!(step, total = loss.total.double_value(&[]), "thought autoencoder training");
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        Ok(TrainReport {
            step: self.step,
            reconstruction: rec_sum / window as f64,
            penalty: pen_sum / window as f64,
            seconds,
            samples_per_second: (steps as f64 * self.train.batch_size as f64) / seconds.max(1e-9),
        })
    }

    /// Trains up to step `until` in [`fit`](Self::fit) calls of at most `chunk` steps, calling
    /// `after_chunk` after each (progress, checkpoints). The report covers the whole call: the
    /// last chunk's losses, the time and throughput of all chunks; None when already at `until`.
    pub fn fit_until(
        &mut self,
        states: &AgentStates,
        until: u64,
        chunk: u64,
        mut after_chunk: impl FnMut(&Self, &TrainReport) -> Result<()>,
    ) -> Result<Option<TrainReport>> {
        let (first_step, mut seconds, mut last) = (self.step, 0.0, None);
        while self.step < until {
            let report = self.fit(states, chunk.max(1).min(until - self.step))?;
            after_chunk(self, &report)?;
            seconds += report.seconds;
            last = Some(report);
        }
        let samples = (self.step - first_step) as f64 * self.train.batch_size as f64;
        Ok(last.map(|report| TrainReport { seconds, samples_per_second: samples / seconds.max(1e-9), ..report }))
    }

    /// Z_hat (`[samples, k]`, on the CPU) of `states`.
    pub fn encode(&self, states: &AgentStates) -> Result<Tensor> {
        let x = self.normalize(states)?;
        Ok(tch::no_grad(|| self.net.encoder.forward(&x)).to_device(Device::Cpu))
    }

    /// The share of the states' variance the autoencoder reconstructs (R², in the normalized
    /// space the loss works in, around the states' own means): near 0 when the Jacobian penalty
    /// has switched the decoder off, so that its latents carry no thoughts.
    pub fn explained_variance(&self, states: &AgentStates) -> Result<f64> {
        let x = self.normalize(states)?;
        let residual = self.residual_sum(&x);
        let total = (&x - x.mean_dim(0, true, Kind::Float)).square().sum(Kind::Double).double_value(&[]);
        if total <= 0.0 {
            return Err(ThoughtError::Empty("the states do not vary: there is no variance to explain".into()));
        }
        Ok(1.0 - residual / total)
    }

    /// The reconstruction MSE over all of `states` (normalized units, as the training loss's
    /// reconstruction term, but over every sample rather than a mini-batch).
    pub fn reconstruction_mse(&self, states: &AgentStates) -> Result<f64> {
        let x = self.normalize(states)?;
        Ok(self.residual_sum(&x) / (x.numel().max(1) as f64))
    }

    /// Sum of squared reconstruction errors of normalized states `x`.
    fn residual_sum(&self, x: &Tensor) -> f64 {
        let x_hat = tch::no_grad(|| self.net.decoder.forward(&self.net.encoder.forward(x)));
        (x_hat - x).square().sum(Kind::Double).double_value(&[])
    }

    /// States (`[samples, n_h]`, original units) decoded from latents `z` (`[samples, k]`).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let norm = self.normalization.as_ref().ok_or_else(|| {
            ThoughtError::Config("the autoencoder is untrained: it has no normalization statistics yet".into())
        })?;
        let shape = z.size();
        if shape.len() != 2 || shape[1] != self.config().latent_dim {
            return Err(ThoughtError::DimensionMismatch {
                what: format!("the latent width of a [samples, k] tensor of shape {shape:?}"),
                expected: self.config().latent_dim,
                got: shape.last().copied().unwrap_or(0),
            });
        }
        let z = z.to_device(self.device()).to_kind(Kind::Float);
        Ok(tch::no_grad(|| norm.invert(&self.net.decoder.forward(&z).to_device(Device::Cpu))))
    }
}

/// Indices of mini-batch `step`: its own generator seeded from (seed, step) by a SplitMix64 mix,
/// so no generator state has to be checkpointed.
pub(crate) fn batch_indices(seed: u64, step: u64, batch: i64, n: i64) -> Tensor {
    let mut rng = step_rng(seed, step);
    let idx: Vec<i64> = (0..batch).map(|_| rng.random_range(0..n)).collect();
    Tensor::from_slice(&idx)
}

/// The `columns` of the k Jacobian columns the penalty is estimated on at `step`, distinct; from
/// a generator of their own (the mini-batches stay those of a run on all columns).
fn column_indices(seed: u64, step: u64, columns: i64, k: i64) -> Tensor {
    const STREAM: u64 = 0x6A09_E667_F3BC_C908;
    let mut rng = step_rng(seed ^ STREAM, step);
    let idx: Vec<i64> =
        rand::seq::index::sample(&mut rng, k as usize, columns as usize).into_iter().map(|j| j as i64).collect();
    Tensor::from_slice(&idx)
}

/// A generator for step `step` of a run seeded `seed` (a SplitMix64 mix of both).
fn step_rng(seed: u64, step: u64) -> StdRng {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

//! The prefix adapter (Section 4 of the design note): a small MLP that maps an agent's routed
//! thoughts `Z_tilde^(i)` to `m` prefix embeddings `P^(i)` (`[m, hidden]`) that are placed before
//! the agent's next prompt, with the backbone frozen. It also owns the agreement weights
//! `w[alpha]` (learned by default) and the standardization of the autoencoder's latents, so that
//! everything between `Z_hat` and the prefix lives in one checkpoint.
use std::path::Path;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::adapter_train::AdapterObjective;
use crate::autoencoder::Dense;
use crate::checkpoint::{config_path, read_json, write_json};
use crate::error::{Result, ThoughtError};
use crate::optim::{load_trainable, save_trainable, Adam};
use crate::routing::{fixed_agreement_weights, Agreement, RoutingPlan};
use crate::states::{to_vec, Normalization};

/// Bumped when the layout of the adapter checkpoint changes.
const FORMAT_VERSION: u32 = 1;

/// Shape of an adapter; stored verbatim in its JSON file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdapterConfig {
    /// Agents of the debate (the autoencoder's blocks); there are `num_agents + 1` agreement levels.
    pub num_agents: usize,
    /// k, the autoencoder's number of latent thoughts.
    pub latent_dim: i64,
    /// Width of the model's embeddings (one prefix vector).
    pub hidden_size: i64,
    /// m, the number of prefix vectors (1 in the paper's main results).
    pub prefix_len: i64,
    /// Hidden width of the MLP.
    pub width: i64,
    pub agreement: Agreement,
    /// The output layer starts at this scale, so that the first prefixes are small next to
    /// embedding rows (a reproduction's advice: large initial prefixes derail generation).
    pub init_scale: f64,
}

impl AdapterConfig {
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("num_agents", self.num_agents as i64),
            ("latent_dim", self.latent_dim),
            ("hidden_size", self.hidden_size),
            ("prefix_len", self.prefix_len),
            ("width", self.width),
        ];
        if let Some((name, v)) = positive.iter().find(|(_, v)| *v < 1) {
            return Err(ThoughtError::Config(format!("adapter {name} is {v} (must be at least 1)")));
        }
        if !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            return Err(ThoughtError::Config(format!("adapter init_scale {} (must be finite and > 0)", self.init_scale)));
        }
        Ok(())
    }
}

/// The JSON half of an adapter checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct AdapterMeta {
    format_version: u32,
    config: AdapterConfig,
    latent_mean: Vec<f32>,
    latent_std: Vec<f32>,
    seed: u64,
    step: u64,
    /// None before the first step (and in checkpoints written before this field existed).
    #[serde(default)]
    objective: Option<AdapterObjective>,
}

#[derive(Debug)]
pub struct PrefixAdapter {
    pub(crate) vs: nn::VarStore,
    hidden: Dense,
    out: Dense,
    /// `[n + 1]` raw agreement weights (a parameter when learned).
    agreement: Tensor,
    latent_mean: Tensor,
    latent_std: Tensor,
    config: AdapterConfig,
    seed: u64,
    pub(crate) step: u64,
    /// The objective its steps so far trained with: a resume must use the same one.
    pub(crate) objective: Option<AdapterObjective>,
    pub(crate) adam: Adam,
}

impl PrefixAdapter {
    /// A fresh adapter on `device`; `latents` (`[samples, k]`, the autoencoder's codes of the
    /// training states) fix the standardization. The same config, latents and seed give the same
    /// weights.
    pub fn new(config: AdapterConfig, latents: &Tensor, seed: u64, device: Device) -> Result<Self> {
        config.validate()?;
        let size = latents.size();
        if size.len() != 2 || size[1] != config.latent_dim || size[0] < 1 {
            return Err(ThoughtError::DimensionMismatch {
                what: format!("the latent width of the adapter's training codes (shape {size:?})"),
                expected: config.latent_dim,
                got: size.last().copied().unwrap_or(0),
            });
        }
        // The same statistics as the state normalization (a constant latent is only centred).
        let stats = Normalization::of_rows(&latents.to_device(Device::Cpu).to_kind(Kind::Float))?;
        Self::build(config, stats.mean, stats.std, seed, device)
    }

    fn build(config: AdapterConfig, mean: Vec<f32>, std: Vec<f32>, seed: u64, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mut rng = StdRng::seed_from_u64(seed);
        let hidden = Dense::new(&root / "hidden", config.latent_dim, config.width, &mut rng);
        let out = Dense::new(&root / "out", config.width, config.prefix_len * config.hidden_size, &mut rng);
        tch::no_grad(|| {
            // PyTorch's init has scale 1/sqrt(width); bring it to init_scale.
            let _ = out.w.shallow_clone().g_mul_scalar_(config.init_scale * (config.width as f64).sqrt());
            let _ = out.b.shallow_clone().zero_();
        });
        let fixed = fixed_agreement_weights(config.num_agents);
        let agreement = match config.agreement {
            Agreement::Learned => root.var_copy("agreement", &fixed),
            Agreement::Fixed => fixed.to_device(device),
            Agreement::None => fixed.ones_like().to_device(device),
        };
        let adam = Adam::new(&vs);
        let latent_mean = Tensor::from_slice(&mean).to_device(device);
        let latent_std = Tensor::from_slice(&std).to_device(device);
        Ok(Self { vs, hidden, out, agreement, latent_mean, latent_std, config, seed, step: 0, objective: None, adam })
    }

    pub fn config(&self) -> &AdapterConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Optimizer steps taken so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The objective it was trained with (None before its first step).
    pub fn objective(&self) -> Option<AdapterObjective> {
        self.objective
    }

    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// The agreement weights `w[alpha]`, alpha = 0..=n, as used (`override_with` replaces the
    /// trained ones, for the ablations).
    pub fn agreement_weights(&self, override_with: Option<Agreement>) -> Tensor {
        match override_with {
            None | Some(Agreement::Learned) => self.agreement.shallow_clone(),
            Some(Agreement::Fixed) => fixed_agreement_weights(self.config.num_agents).to_device(self.device()),
            Some(Agreement::None) => self.agreement.ones_like().detach(),
        }
    }

    /// `Z_hat` (`[k]`, the autoencoder's code) mapped to the standardized space routing works in.
    pub fn standardize(&self, z_hat: &Tensor) -> Tensor {
        (z_hat.to_device(self.device()).to_kind(Kind::Float) - &self.latent_mean) / &self.latent_std
    }

    /// Prefix embeddings `[m, hidden]` from agent i's routed thoughts (`[k]`).
    pub fn forward(&self, routed: &Tensor) -> Tensor {
        let h = self.hidden.forward(routed).gelu("tanh");
        self.out.forward(&h).view([self.config.prefix_len, self.config.hidden_size])
    }

    /// The prefix of agent `agent` for the standardized latents `z` (`[k]`): route, weight, map.
    /// Differentiable in the adapter's parameters.
    pub fn prefix_for(&self, plan: &RoutingPlan, z: &Tensor, agent: usize, agreement: Option<Agreement>) -> Result<Tensor> {
        if plan.num_agents() != self.config.num_agents || plan.num_latents() as i64 != self.config.latent_dim {
            return Err(ThoughtError::DimensionMismatch {
                what: format!("the routing plan's agents x latents ({} x {}) for this adapter", plan.num_agents(), plan.num_latents()),
                expected: self.config.latent_dim,
                got: plan.num_latents() as i64,
            });
        }
        if agent >= plan.num_agents() {
            return Err(ThoughtError::Config(format!("agent {agent} does not exist ({} agents)", plan.num_agents())));
        }
        let routed = plan.route(z, &self.agreement_weights(agreement))?;
        Ok(self.forward(&routed.get(agent as i64)))
    }

    /// Writes `weights` (`.safetensors`: parameters and Adam moments) and its JSON beside it.
    pub fn save(&self, weights: &Path) -> Result<()> {
        save_trainable(&self.vs, &self.adam, weights)?;
        let meta = AdapterMeta {
            format_version: FORMAT_VERSION,
            config: self.config.clone(),
            latent_mean: to_vec(&self.latent_mean)?,
            latent_std: to_vec(&self.latent_std)?,
            seed: self.seed,
            step: self.step,
            objective: self.objective,
        };
        write_json(&config_path(weights), &meta)
    }

    /// Loads an adapter written by [`PrefixAdapter::save`] onto `device`.
    pub fn load(weights: &Path, device: Device) -> Result<Self> {
        let path = config_path(weights);
        let meta: AdapterMeta = read_json(&path)?;
        if meta.format_version != FORMAT_VERSION {
            return Err(ThoughtError::checkpoint_mismatch(&path, "format_version", meta.format_version, FORMAT_VERSION));
        }
        let bad = |message: String| ThoughtError::Checkpoint { path: path.clone(), message };
        meta.config.validate().map_err(|e| bad(e.to_string()))?;
        let k = meta.config.latent_dim as usize;
        if meta.latent_mean.len() != k || meta.latent_std.len() != k {
            return Err(bad(format!("{} latent means and {} stds for latent_dim {k}", meta.latent_mean.len(), meta.latent_std.len())));
        }
        let mut adapter = Self::build(meta.config, meta.latent_mean, meta.latent_std, meta.seed, device)?;
        adapter.adam = load_trainable(&adapter.vs, weights)?;
        adapter.step = meta.step;
        adapter.objective = meta.objective;
        Ok(adapter)
    }
}

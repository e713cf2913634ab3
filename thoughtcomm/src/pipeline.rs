//! A trained thought pipeline: the autoencoder, its recovered structure and one prefix adapter per
//! model, described by `manifest.json` in one folder (what `tcomm train` writes). The runtime
//! loads it next to the weights and, before each debate round, turns the agents' hidden states
//! into one prefix per agent: encode (Z_hat = g(H)), route (mask and agreement weights), inject
//! (the adapter's prefix).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::adapter::PrefixAdapter;
use crate::checkpoint::{config_path, read_json, write_json};
use crate::error::{Result, ThoughtError};
use crate::routing::{Agreement, Routing, RoutingPlan};
use crate::states::AgentStates;
use crate::structure::ThoughtStructure;
use crate::train::ThoughtAutoencoder;

pub const MANIFEST_FILE: &str = "manifest.json";
const FORMAT_VERSION: u32 = 1;

/// One agent of the debate the pipeline was trained for, in the autoencoder's block order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PipelineAgent {
    /// The model name the agent runs on (as the runtime knows it).
    pub model: String,
    /// The model's hidden size: the agent's block of H and the width of its prefix vectors.
    pub hidden_size: i64,
}

/// `manifest.json`: what the pipeline is and where its parts are (paths relative to its folder).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PipelineManifest {
    pub format_version: u32,
    pub agents: Vec<PipelineAgent>,
    /// The layer of the states (transformers' numbering: 0 = embeddings, L = final-normed output).
    pub layer: u32,
    /// The autoencoder's weights (its JSON beside it).
    pub autoencoder: PathBuf,
    /// The recovered `ThoughtStructure` (JSON).
    pub structure: PathBuf,
    /// One adapter per model name.
    pub adapters: BTreeMap<String, PathBuf>,
    /// How it was made (dataset, problems, steps, losses): informational.
    #[serde(default)]
    pub provenance: serde_json::Value,
}

impl PipelineManifest {
    pub fn new(agents: Vec<PipelineAgent>, layer: u32) -> Self {
        PipelineManifest {
            format_version: FORMAT_VERSION,
            agents,
            layer,
            autoencoder: PathBuf::from("autoencoder.safetensors"),
            structure: PathBuf::from("structure.json"),
            adapters: BTreeMap::new(),
            provenance: serde_json::Value::Null,
        }
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let manifest: PipelineManifest = read_json(&dir.join(MANIFEST_FILE))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(ThoughtError::Checkpoint {
                path: dir.join(MANIFEST_FILE),
                message: format!("format_version {} (this build reads {FORMAT_VERSION})", manifest.format_version),
            });
        }
        Ok(manifest)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json(&dir.join(MANIFEST_FILE), self)
    }

    /// The files of the pipeline in `dir` that the manifest names, in its order, each checkpoint
    /// followed by the JSON config beside it (which holds, e.g., an adapter's step).
    pub fn part_files(&self, dir: &Path) -> Vec<PathBuf> {
        let parts = [&self.autoencoder, &self.structure].into_iter().chain(self.adapters.values());
        parts
            .flat_map(|part| {
                let path = dir.join(part);
                let config = config_path(&path);
                if config != path && config.is_file() { vec![path, config] } else { vec![path] }
            })
            .collect()
    }

    /// The file name an adapter for `model` gets in the pipeline folder.
    pub fn adapter_file(model: &str) -> PathBuf {
        let safe: String = model.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
        PathBuf::from(format!("adapter-{safe}.safetensors"))
    }
}

/// Inference-time choices, for the ablations.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ComposeOptions {
    pub routing: Routing,
    /// Replaces the trained agreement weights when set.
    pub agreement: Option<Agreement>,
    /// Replace each agent's routed thoughts by routed seeded Gaussian noise scaled to the same
    /// norm (shows whether the thoughts carry information: the adapter reads an input of the
    /// same size, without the content).
    pub random_latents: Option<u64>,
}

/// What one agent receives.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AgentThoughts {
    /// Routed latents that two or more agents share, and that only this agent has.
    pub shared: usize,
    pub private: usize,
    /// The agreement weights used, w[alpha] for alpha = 0..=n.
    pub weights: Vec<f64>,
    /// Mean l2 norm of the prefix vectors.
    pub prefix_norm: f64,
    /// l2 norm of the routed thoughts the adapter read (standardized by the training latents).
    pub thought_norm: f64,
    /// What `thought_norm` is on states like the training ones: each standardized latent has
    /// unit variance there, so sqrt(sum over the routed thoughts of w[alpha]^2).
    pub expected_thought_norm: f64,
}

/// One round's composition: a prefix per agent (`[m, hidden_i]`, on the adapter's device) and
/// what went into it.
#[derive(Debug)]
pub struct ComposedThoughts {
    pub prefixes: Vec<Tensor>,
    pub agents: Vec<AgentThoughts>,
    /// Mean pairwise cosine of the agents' raw states (when their sizes agree): how separable
    /// the agents are (copies of one model with one prompt come out near 1).
    pub state_cosine: Option<f64>,
    pub encode_seconds: f64,
    pub route_seconds: f64,
    pub inject_seconds: f64,
}

pub struct ThoughtPipeline {
    pub dir: PathBuf,
    pub manifest: PipelineManifest,
    pub autoencoder: ThoughtAutoencoder,
    pub structure: ThoughtStructure,
    /// One adapter per model, and per agent the index of its model's adapter.
    adapters: Vec<PrefixAdapter>,
    agent_adapter: Vec<usize>,
}

impl std::fmt::Debug for ThoughtPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThoughtPipeline").field("dir", &self.dir).field("manifest", &self.manifest).finish()
    }
}

impl ThoughtPipeline {
    /// Loads and cross-checks every part (adapters onto `device`): a part trained for another
    /// model, hidden size or number of agents is refused here, before any generation.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let manifest = PipelineManifest::read(dir)?;
        if manifest.agents.is_empty() {
            return Err(ThoughtError::Config(format!("{}: the manifest lists no agents", dir.display())));
        }
        let blocks: Vec<i64> = manifest.agents.iter().map(|a| a.hidden_size).collect();
        let ae_path = dir.join(&manifest.autoencoder);
        let autoencoder = ThoughtAutoencoder::load(&ae_path)?;
        if autoencoder.config().block_sizes != blocks {
            return Err(ThoughtError::Checkpoint {
                path: ae_path,
                message: format!(
                    "the autoencoder was trained on agent states of sizes {:?}, but the manifest's agents have {blocks:?}",
                    autoencoder.config().block_sizes
                ),
            });
        }
        if autoencoder.normalization().is_none() {
            return Err(ThoughtError::Checkpoint { path: ae_path, message: "the autoencoder is untrained".into() });
        }
        let structure_path = dir.join(&manifest.structure);
        let structure: ThoughtStructure = read_json(&structure_path)?;
        let k = autoencoder.config().latent_dim as usize;
        if structure.num_agents() != blocks.len() || structure.num_latents() != k || structure.b.iter().any(|r| r.len() != k) {
            return Err(ThoughtError::Checkpoint {
                path: structure_path,
                message: format!("a structure over {} agents and {} latents does not fit {} agents and k = {k}", structure.num_agents(), structure.num_latents(), blocks.len()),
            });
        }
        let mut by_model: BTreeMap<&str, usize> = BTreeMap::new();
        let mut adapters = Vec::new();
        let mut agent_adapter = Vec::new();
        for (i, agent) in manifest.agents.iter().enumerate() {
            if !by_model.contains_key(agent.model.as_str()) {
                let file = manifest.adapters.get(&agent.model).ok_or_else(|| {
                    ThoughtError::Config(format!(
                        "{}: agent {i} runs on '{}' but the pipeline has no adapter for that model (it has: {})",
                        dir.display(),
                        agent.model,
                        manifest.adapters.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })?;
                let path = dir.join(file);
                let adapter = PrefixAdapter::load(&path, device)?;
                let c = adapter.config();
                let expected = [("hidden_size", agent.hidden_size), ("latent_dim", k as i64), ("num_agents", blocks.len() as i64)];
                let found = [c.hidden_size, c.latent_dim, c.num_agents as i64];
                if let Some(((field, want), got)) = expected.iter().zip(found).find(|((_, want), got)| want != got) {
                    return Err(ThoughtError::CheckpointMismatch {
                        path,
                        field: field.to_string(),
                        found: got.to_string(),
                        expected: want.to_string(),
                    });
                }
                by_model.insert(agent.model.as_str(), adapters.len());
                adapters.push(adapter);
            }
            agent_adapter.push(by_model[agent.model.as_str()]);
        }
        Ok(ThoughtPipeline { dir: dir.to_path_buf(), manifest, autoencoder, structure, adapters, agent_adapter })
    }

    pub fn num_agents(&self) -> usize {
        self.manifest.agents.len()
    }

    /// The adapter of agent `agent`'s model.
    pub fn adapter(&self, agent: usize) -> &PrefixAdapter {
        &self.adapters[self.agent_adapter[agent]]
    }

    pub fn prefix_len(&self) -> i64 {
        self.adapters.first().map_or(0, |a| a.config().prefix_len)
    }

    /// Turns one round's states (one `[hidden_i]` vector per agent, in order) into a prefix per agent.
    pub fn compose(&self, states: &[Tensor], options: &ComposeOptions) -> Result<ComposedThoughts> {
        let started = Instant::now();
        if states.len() != self.num_agents() {
            return Err(ThoughtError::DimensionMismatch {
                what: "the number of agent states of a round".into(),
                expected: self.num_agents() as i64,
                got: states.len() as i64,
            });
        }
        let rows: Vec<Tensor> = states.iter().map(|s| s.to_device(Device::Cpu).to_kind(Kind::Float).reshape([1, -1])).collect();
        let h = AgentStates::from_blocks(&rows)?;
        let z_hat = self.autoencoder.encode(&h)?.squeeze_dim(0);
        let state_cosine = mean_pairwise_cosine(&rows);
        let encoded = Instant::now();
        let plan = RoutingPlan::new(&self.structure, options.routing);
        let mut routed = Vec::with_capacity(states.len());
        tch::no_grad(|| -> Result<()> {
            for i in 0..self.num_agents() {
                let adapter = self.adapter(i);
                let z = adapter.standardize(&z_hat);
                let weights = adapter.agreement_weights(options.agreement);
                let expected = plan.route(&z.ones_like(), &weights)?.get(i as i64).norm().double_value(&[]);
                let mut thoughts = plan.route(&z, &weights)?.get(i as i64);
                if let Some(seed) = options.random_latents {
                    thoughts = matched_noise(&plan, &weights, &thoughts, i, seed)?;
                }
                routed.push((thoughts, weights, expected));
            }
            Ok(())
        })?;
        let route_done = Instant::now();
        let mut prefixes = Vec::with_capacity(states.len());
        let mut agents = Vec::with_capacity(states.len());
        tch::no_grad(|| -> Result<()> {
            for (i, (thoughts, weights, expected)) in routed.iter().enumerate() {
                let prefix = self.adapter(i).forward(thoughts);
                let norm = prefix.norm_scalaropt_dim(2, [1i64], false).mean(Kind::Float).double_value(&[]);
                agents.push(AgentThoughts {
                    shared: plan.shared_count(i),
                    private: plan.private_count(i),
                    weights: Vec::<f64>::try_from(weights.to_kind(Kind::Double).to_device(Device::Cpu))?,
                    prefix_norm: norm,
                    thought_norm: thoughts.norm().double_value(&[]),
                    expected_thought_norm: *expected,
                });
                prefixes.push(prefix);
            }
            Ok(())
        })?;
        let done = Instant::now();
        Ok(ComposedThoughts {
            prefixes,
            agents,
            state_cosine,
            encode_seconds: (encoded - started).as_secs_f64(),
            route_seconds: (route_done - encoded).as_secs_f64(),
            inject_seconds: (done - route_done).as_secs_f64(),
        })
    }
}

/// Mean cosine over agent pairs of equal state size; None when no pair qualifies.
fn mean_pairwise_cosine(rows: &[Tensor]) -> Option<f64> {
    let mut sum = 0.0;
    let mut pairs = 0;
    for i in 0..rows.len() {
        for j in i + 1..rows.len() {
            if rows[i].size() == rows[j].size() {
                sum += Tensor::cosine_similarity(&rows[i].flatten(0, -1), &rows[j].flatten(0, -1), 0, 1e-8).double_value(&[]);
                pairs += 1;
            }
        }
    }
    (pairs > 0).then(|| sum / pairs as f64)
}

/// The random-latents ablation's input for agent `agent`: routed seeded Gaussian noise scaled to
/// the norm of its routed `thoughts`. Matched after routing: the latents the agent does not get
/// (the unused ones above all) can hold most of z's norm, and matching z's norm would hand the
/// adapter a larger input than the real thoughts.
pub(crate) fn matched_noise(plan: &RoutingPlan, weights: &Tensor, thoughts: &Tensor, agent: usize, seed: u64) -> Result<Tensor> {
    let noise = seeded_normal(seed.wrapping_add(agent as u64), plan.num_latents() as i64).to_device(thoughts.device());
    let noise = plan.route(&noise, weights)?.get(agent as i64);
    Ok(&noise * (thoughts.norm().double_value(&[]) / noise.norm().double_value(&[]).max(1e-12)))
}

/// Standard normal noise from our own seeded generator (not libtorch's global one).
fn seeded_normal(seed: u64, n: i64) -> Tensor {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n).map(|_| crate::synthetic::normal(&mut rng) as f32).collect();
    Tensor::from_slice(&v)
}

//! Thought communication next to the weights: the loaded thought pipelines, the hidden states that
//! Generate keeps for them, ComposeThoughts, and the prefixes it keeps for the next round. Hidden
//! states and prefixes stay in this process; calls name them by id.
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use proto::v1 as pb;
use tch::Tensor;
use thoughtcomm::{Agreement, ComposeOptions, Routing, RoutingPlan, ThoughtPipeline};

use super::scheduler::ModelHost;
use super::status::ServeError;

/// How many kept states and prefixes (each) the server remembers; older ones are forgotten.
pub const KEEP_LIMIT: usize = 4096;

/// A loaded pipeline. The pipeline itself is behind a mutex: libtorch tensors may move between
/// threads but not be shared by them.
pub struct HostedPipeline {
    pub info: pb::ThoughtPipelineInfo,
    pipeline: Mutex<ThoughtPipeline>,
}

impl HostedPipeline {
    /// Loads the pipeline folder `path` (blocking) and checks it against the loaded models: each
    /// agent's model must be loaded, with the hidden size and depth the pipeline was trained for.
    pub fn load(name: &str, path: &Path, host: impl Fn(&str) -> Result<Arc<ModelHost>, ServeError>) -> Result<Self, ServeError> {
        let manifest = thoughtcomm::PipelineManifest::read(path)?;
        let mut device = None;
        for (i, agent) in manifest.agents.iter().enumerate() {
            let host = host(&agent.model)?;
            let spec = &host.spec;
            if spec.hidden_size != agent.hidden_size {
                return Err(ServeError::BadRequest(format!(
                    "thought pipeline {}: agent {i} was trained on '{}' with hidden size {}, but the loaded model has {}",
                    path.display(),
                    agent.model,
                    agent.hidden_size,
                    spec.hidden_size
                )));
            }
            if i64::from(manifest.layer) > spec.num_layers {
                return Err(ServeError::BadRequest(format!(
                    "thought pipeline {}: layer {} does not exist in '{}' (0..={})",
                    path.display(),
                    manifest.layer,
                    agent.model,
                    spec.num_layers
                )));
            }
            device.get_or_insert(host.device);
        }
        let pipeline = ThoughtPipeline::load(path, device.unwrap_or(tch::Device::Cpu))?;
        let plan = RoutingPlan::new(&pipeline.structure, Routing::Routed);
        let n = pipeline.num_agents();
        let info = pb::ThoughtPipelineInfo {
            name: name.to_string(),
            path: path.display().to_string(),
            agent_models: manifest.agents.iter().map(|a| a.model.clone()).collect(),
            layer: manifest.layer,
            latent_dim: pipeline.autoencoder.config().latent_dim as u32,
            prefix_len: pipeline.prefix_len() as u32,
            shared_thoughts: (0..n).map(|i| plan.shared_count(i) as u32).collect(),
            private_thoughts: (0..n).map(|i| plan.private_count(i) as u32).collect(),
        };
        tracing::info!(pipeline = name, path = %path.display(), agents = n, "thought pipeline loaded");
        Ok(HostedPipeline { info, pipeline: Mutex::new(pipeline) })
    }

    pub fn layer(&self) -> usize {
        self.info.layer as usize
    }

    /// Whether agents on `model` take part in this pipeline.
    pub fn serves_model(&self, model: &str) -> bool {
        self.info.agent_models.iter().any(|m| m == model)
    }
}

/// A bounded map from id number to value that forgets its oldest entries past `KEEP_LIMIT`.
struct Kept<T> {
    entries: HashMap<u64, T>,
    order: VecDeque<u64>,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept { entries: HashMap::new(), order: VecDeque::new() }
    }
}

impl<T> Kept<T> {
    fn insert(&mut self, id: u64, value: T) {
        self.entries.insert(id, value);
        self.order.push_back(id);
        while self.order.len() > KEEP_LIMIT {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }
}

/// A hidden state kept for a pipeline: `[hidden]` f32 on the CPU.
pub struct KeptState {
    pub pipeline: String,
    pub model: String,
    pub state: Tensor,
}

/// A composed prefix kept for the next round: `[m, hidden]` on the pipeline's device.
pub struct KeptPrefix {
    pub model: String,
    pub prefix: Tensor,
}

#[derive(Default)]
pub struct ThoughtStore {
    next: AtomicU64,
    states: Mutex<Kept<KeptState>>,
    prefixes: Mutex<Kept<KeptPrefix>>,
}

fn poisoned() -> ServeError {
    ServeError::Internal("a lock was poisoned by an earlier panic".into())
}

fn parse_id(id: &str, kind: &'static str) -> Result<u64, ServeError> {
    id.strip_prefix(kind)
        .and_then(|n| n.strip_prefix('-'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ServeError::UnknownThoughtId { what: kind, id: id.to_string() })
}

impl ThoughtStore {
    pub fn keep_state(&self, state: KeptState) -> Result<String, ServeError> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        self.states.lock().map_err(|_| poisoned())?.insert(n, state);
        Ok(format!("state-{n}"))
    }

    fn keep_prefix(&self, prefix: KeptPrefix) -> Result<String, ServeError> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        self.prefixes.lock().map_err(|_| poisoned())?.insert(n, prefix);
        Ok(format!("prefix-{n}"))
    }

    /// The pipeline, model and a copy of the state kept under `id`.
    fn state(&self, id: &str) -> Result<(String, String, Tensor), ServeError> {
        let n = parse_id(id, "state")?;
        let states = self.states.lock().map_err(|_| poisoned())?;
        let kept = states.entries.get(&n).ok_or_else(|| ServeError::UnknownThoughtId { what: "state", id: id.to_string() })?;
        Ok((kept.pipeline.clone(), kept.model.clone(), kept.state.copy()))
    }

    /// The model and a copy of the prefix kept under `id`.
    pub fn prefix(&self, id: &str) -> Result<(String, Tensor), ServeError> {
        let n = parse_id(id, "prefix")?;
        let prefixes = self.prefixes.lock().map_err(|_| poisoned())?;
        let kept = prefixes.entries.get(&n).ok_or_else(|| ServeError::UnknownThoughtId { what: "prefix", id: id.to_string() })?;
        Ok((kept.model.clone(), kept.prefix.copy()))
    }
}

fn options(req: &pb::ComposeThoughtsRequest) -> Result<ComposeOptions, ServeError> {
    let routing = match pb::ThoughtRouting::try_from(req.routing) {
        Ok(pb::ThoughtRouting::Unspecified | pb::ThoughtRouting::Routed) => Routing::Routed,
        Ok(pb::ThoughtRouting::All) => Routing::All,
        Err(_) => return Err(ServeError::BadRequest(format!("routing: {} is not a ThoughtRouting value", req.routing))),
    };
    let agreement = match pb::AgreementWeights::try_from(req.agreement) {
        Ok(pb::AgreementWeights::Unspecified) => None,
        Ok(pb::AgreementWeights::Fixed) => Some(Agreement::Fixed),
        Ok(pb::AgreementWeights::None) => Some(Agreement::None),
        Err(_) => return Err(ServeError::BadRequest(format!("agreement: {} is not an AgreementWeights value", req.agreement))),
    };
    Ok(ComposeOptions { routing, agreement, random_latents: req.random_latents.then_some(req.seed) })
}

/// ComposeThoughts: one round's kept states to one kept prefix per agent.
pub async fn compose(
    hosted: Arc<HostedPipeline>,
    store: Arc<ThoughtStore>,
    req: pb::ComposeThoughtsRequest,
) -> Result<pb::ComposeThoughtsResponse, ServeError> {
    let models = &hosted.info.agent_models;
    if req.state_ids.len() != models.len() {
        return Err(ServeError::BadRequest(format!(
            "state_ids: {} given, but pipeline '{}' has {} agents (one state per agent, in its order)",
            req.state_ids.len(),
            hosted.info.name,
            models.len()
        )));
    }
    let options = options(&req)?;
    let mut states = Vec::with_capacity(models.len());
    for (i, id) in req.state_ids.iter().enumerate() {
        let (pipeline, model, state) = store.state(id)?;
        if pipeline != hosted.info.name || model != models[i] {
            return Err(ServeError::BadRequest(format!(
                "state_ids[{i}] '{id}' was kept for pipeline '{pipeline}' on model '{model}', but agent {i} of '{}' runs on '{}'",
                hosted.info.name, models[i]
            )));
        }
        states.push(state);
    }
    let worker = Arc::clone(&hosted);
    let composed = tokio::task::spawn_blocking(move || {
        let pipeline = worker.pipeline.lock().map_err(|_| poisoned())?;
        Ok::<_, ServeError>(pipeline.compose(&states, &options)?)
    })
    .await
    .map_err(|e| ServeError::Internal(format!("compose task failed: {e}")))??;
    let mut agents = Vec::with_capacity(models.len());
    for ((prefix, thoughts), model) in composed.prefixes.into_iter().zip(composed.agents).zip(models) {
        let prefix_id = store.keep_prefix(KeptPrefix { model: model.clone(), prefix })?;
        agents.push(pb::AgentThoughts {
            prefix_id,
            shared_thoughts: thoughts.shared as u32,
            private_thoughts: thoughts.private as u32,
            agreement_weights: thoughts.weights,
            prefix_norm: thoughts.prefix_norm,
            thought_norm: thoughts.thought_norm,
            expected_thought_norm: thoughts.expected_thought_norm,
        });
    }
    Ok(pb::ComposeThoughtsResponse {
        agents,
        state_cosine: composed.state_cosine.unwrap_or(f64::NAN),
        encode_seconds: composed.encode_seconds,
        route_seconds: composed.route_seconds,
        inject_seconds: composed.inject_seconds,
    })
}

//! The tonic implementation of `thoughtcomm.runtime.v1.RuntimeService`: models, agents, and
//! generation handed to each model's engine thread (see `scheduler`).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use proto::v1 as pb;
use proto::v1::runtime_service_server::RuntimeService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::config::{ModelConfig, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_QUEUE};
use super::convert;
use super::generation::{self, Started};
use super::scheduler::ModelHost;
use super::status::ServeError;
use super::thoughts::{self, HostedPipeline, ThoughtStore};

/// An agent: a system prompt and default sampling on a model.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub model: String,
    pub system_prompt: String,
    pub defaults: pb::SamplingParams,
}

/// The models, the agents, and whether the server is draining; shared by every call.
#[derive(Default)]
pub struct RuntimeState {
    models: RwLock<BTreeMap<String, Arc<ModelHost>>>,
    /// By number, so that listing gives creation order.
    agents: RwLock<BTreeMap<u64, Arc<Agent>>>,
    next_agent: AtomicU64,
    draining: AtomicBool,
    /// One LoadModel or LoadThoughtPipeline at a time.
    loading: tokio::sync::Mutex<()>,
    pipelines: RwLock<BTreeMap<String, Arc<HostedPipeline>>>,
    thoughts: Arc<ThoughtStore>,
}

fn poisoned() -> ServeError {
    ServeError::Internal("a lock was poisoned by an earlier panic".into())
}

impl RuntimeState {
    pub fn new(hosts: Vec<ModelHost>) -> Self {
        let state = RuntimeState::default();
        if let Ok(mut models) = state.models.write() {
            for host in hosts {
                models.insert(host.name().to_string(), Arc::new(host));
            }
        }
        state
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn host(&self, name: &str) -> Result<Arc<ModelHost>, ServeError> {
        let models = self.models.read().map_err(|_| poisoned())?;
        models.get(name).cloned().ok_or_else(|| ServeError::UnknownModel {
            name: name.to_string(),
            loaded: models.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    pub fn pipeline(&self, name: &str) -> Result<Arc<HostedPipeline>, ServeError> {
        let pipelines = self.pipelines.read().map_err(|_| poisoned())?;
        pipelines.get(name).cloned().ok_or_else(|| ServeError::UnknownPipeline {
            name: name.to_string(),
            loaded: pipelines.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    pub fn thought_store(&self) -> Arc<ThoughtStore> {
        Arc::clone(&self.thoughts)
    }

    /// Loads a thought pipeline folder under `name` (blocking), checked against the loaded models.
    pub fn load_pipeline_blocking(&self, name: &str, path: &std::path::Path) -> Result<pb::ThoughtPipelineInfo, ServeError> {
        if self.pipelines.read().map_err(|_| poisoned())?.contains_key(name) {
            return Err(ServeError::PipelineExists(name.to_string()));
        }
        let hosted = HostedPipeline::load(name, path, |model| self.host(model))?;
        let info = hosted.info.clone();
        self.pipelines.write().map_err(|_| poisoned())?.insert(name.to_string(), Arc::new(hosted));
        Ok(info)
    }

    async fn load_pipeline(self: Arc<Self>, req: pb::LoadThoughtPipelineRequest) -> Result<pb::ThoughtPipelineInfo, ServeError> {
        let _one_at_a_time = self.loading.lock().await;
        if self.is_draining() {
            return Err(ServeError::ShuttingDown);
        }
        if req.path.trim().is_empty() {
            return Err(ServeError::BadRequest("path is empty: give the pipeline folder (with manifest.json)".into()));
        }
        let name = if req.name.is_empty() { req.path.clone() } else { req.name };
        let state = Arc::clone(&self);
        tokio::task::spawn_blocking(move || state.load_pipeline_blocking(&name, std::path::Path::new(&req.path)))
            .await
            .map_err(|e| ServeError::Internal(format!("pipeline loading task failed: {e}")))?
    }

    pub fn hosts(&self) -> Vec<Arc<ModelHost>> {
        self.models.read().map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    pub fn agent(&self, id: &str) -> Result<Arc<Agent>, ServeError> {
        let number = id.strip_prefix("agent-").and_then(|n| n.parse::<u64>().ok());
        let agents = self.agents.read().map_err(|_| poisoned())?;
        number.and_then(|n| agents.get(&n).cloned()).ok_or_else(|| ServeError::UnknownAgent(id.to_string()))
    }

    /// Stops every engine thread and waits for them (blocking).
    pub fn stop_engines(&self) {
        for host in self.hosts() {
            host.stop();
        }
    }

    fn model_info(host: &ModelHost) -> pb::ModelInfo {
        let spec = &host.spec;
        pb::ModelInfo {
            name: host.name().to_string(),
            source: host.source.display().to_string(),
            device: convert::device_name(host.device),
            dtype: convert::kind_name(host.kind),
            architecture: spec.architecture.clone(),
            context_length: spec.max_position_embeddings,
            hidden_size: spec.hidden_size,
            num_layers: spec.num_layers,
            vocab_size: spec.vocab_size,
            max_batch_size: host.config.max_batch_size as u32,
            max_batch_tokens: host.config.max_batch_tokens as u64,
            max_queue: host.config.max_queue as u32,
            queue_depth: host.queue_depth() as u32,
            active_sequences: host.active_sequences() as u32,
            eos_token_ids: host.eos_token_ids().to_vec(),
            weights: host.weight_format.name().to_string(),
        }
    }

    fn agent_info(agent: &Agent) -> pb::AgentInfo {
        pb::AgentInfo {
            id: agent.id.clone(),
            name: agent.name.clone(),
            model: agent.model.clone(),
            system_prompt: agent.system_prompt.clone(),
            default_sampling: Some(agent.defaults.clone()),
        }
    }

    fn create_agent(&self, req: pb::CreateAgentRequest) -> Result<pb::AgentInfo, ServeError> {
        let host = self.host(&req.model)?;
        let defaults = req.default_sampling.unwrap_or_default();
        convert::validate_sampling(&defaults, host.spec.max_position_embeddings, host.spec.vocab_size)?;
        let number = self.next_agent.fetch_add(1, Ordering::SeqCst) + 1;
        let agent = Agent { id: format!("agent-{number}"), name: req.name, model: req.model, system_prompt: req.system_prompt, defaults };
        let info = Self::agent_info(&agent);
        self.agents.write().map_err(|_| poisoned())?.insert(number, Arc::new(agent));
        tracing::info!(agent = %info.id, model = %info.model, "agent created");
        Ok(info)
    }

    async fn load_model(&self, req: pb::LoadModelRequest) -> Result<pb::ModelInfo, ServeError> {
        let _one_at_a_time = self.loading.lock().await;
        if self.is_draining() {
            return Err(ServeError::ShuttingDown);
        }
        if self.models.read().map_err(|_| poisoned())?.contains_key(&req.name) {
            return Err(ServeError::ModelExists(req.name));
        }
        let or = |s: String, default: &str| if s.trim().is_empty() { default.to_string() } else { s };
        let config = ModelConfig {
            name: req.name,
            device: or(req.device, "cpu"),
            dtype: or(req.dtype, "auto"),
            weights: or(req.weights, "dense"),
            max_batch_size: if req.max_batch_size == 0 { DEFAULT_MAX_BATCH_SIZE } else { req.max_batch_size as usize },
            max_batch_tokens: if req.max_batch_tokens == 0 { DEFAULT_MAX_BATCH_TOKENS } else { req.max_batch_tokens as usize },
            max_queue: if req.max_queue == 0 { DEFAULT_MAX_QUEUE } else { req.max_queue as usize },
        };
        config.validate().map_err(ServeError::BadRequest)?;
        let host = tokio::task::spawn_blocking(move || ModelHost::load(config))
            .await
            .map_err(|e| ServeError::Internal(format!("model loading task failed: {e}")))??;
        let info = Self::model_info(&host);
        self.models.write().map_err(|_| poisoned())?.insert(info.name.clone(), Arc::new(host));
        Ok(info)
    }
}

/// The RuntimeService handlers.
#[derive(Clone)]
pub struct RuntimeApi {
    state: Arc<RuntimeState>,
}

impl RuntimeApi {
    pub fn new(state: Arc<RuntimeState>) -> Self {
        RuntimeApi { state }
    }

    fn start(&self, request: Request<pb::GenerateRequest>) -> Result<Started, ServeError> {
        let received = Instant::now();
        if self.state.is_draining() {
            return Err(ServeError::ShuttingDown);
        }
        // Answer a little before tonic's own grpc-timeout timer would, so the caller gets
        // DEADLINE_EXCEEDED from us (tonic reports an expired timer as CANCELLED).
        let deadline = convert::grpc_timeout(request.metadata()).map(|t| received + t.saturating_sub(DEADLINE_MARGIN));
        let req = request.into_inner();
        let agent = self.state.agent(&req.agent_id)?;
        let host = self.state.host(&agent.model)?;
        let thoughts = generation::ThoughtIo::resolve(&self.state, &agent, &req)?;
        generation::start(host, agent, req, thoughts, received, deadline)
    }
}

/// How much earlier than the client's deadline a call gives up (see `RuntimeApi::start`).
const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    async fn list_models(&self, _: Request<pb::ListModelsRequest>) -> Result<Response<pb::ListModelsResponse>, Status> {
        let models = self.state.hosts().iter().map(|h| RuntimeState::model_info(h)).collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }

    async fn load_model(&self, request: Request<pb::LoadModelRequest>) -> Result<Response<pb::LoadModelResponse>, Status> {
        let model = self.state.load_model(request.into_inner()).await?;
        Ok(Response::new(pb::LoadModelResponse { model: Some(model) }))
    }

    async fn create_agent(&self, request: Request<pb::CreateAgentRequest>) -> Result<Response<pb::CreateAgentResponse>, Status> {
        if self.state.is_draining() {
            return Err(ServeError::ShuttingDown.into());
        }
        let agent = self.state.create_agent(request.into_inner())?;
        Ok(Response::new(pb::CreateAgentResponse { agent: Some(agent) }))
    }

    async fn list_agents(&self, request: Request<pb::ListAgentsRequest>) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let model = request.into_inner().model;
        if !model.is_empty() {
            self.state.host(&model)?;
        }
        let agents = self.state.agents.read().map_err(|_| poisoned())?;
        let agents = agents
            .values()
            .filter(|a| model.is_empty() || a.model == model)
            .map(|a| RuntimeState::agent_info(a))
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn delete_agent(&self, request: Request<pb::DeleteAgentRequest>) -> Result<Response<pb::DeleteAgentResponse>, Status> {
        let id = request.into_inner().agent_id;
        let number = id.strip_prefix("agent-").and_then(|n| n.parse::<u64>().ok());
        let removed = number.and_then(|n| self.state.agents.write().ok()?.remove(&n));
        match removed {
            Some(_) => Ok(Response::new(pb::DeleteAgentResponse {})),
            None => Err(ServeError::UnknownAgent(id).into()),
        }
    }

    async fn generate(&self, request: Request<pb::GenerateRequest>) -> Result<Response<pb::GenerateResponse>, Status> {
        let mut started = self.start(request)?;
        Ok(Response::new(started.finish().await?))
    }

    async fn load_thought_pipeline(
        &self,
        request: Request<pb::LoadThoughtPipelineRequest>,
    ) -> Result<Response<pb::LoadThoughtPipelineResponse>, Status> {
        let pipeline = Arc::clone(&self.state).load_pipeline(request.into_inner()).await?;
        Ok(Response::new(pb::LoadThoughtPipelineResponse { pipeline: Some(pipeline) }))
    }

    async fn list_thought_pipelines(
        &self,
        _: Request<pb::ListThoughtPipelinesRequest>,
    ) -> Result<Response<pb::ListThoughtPipelinesResponse>, Status> {
        let pipelines = self.state.pipelines.read().map_err(|_| poisoned())?.values().map(|p| p.info.clone()).collect();
        Ok(Response::new(pb::ListThoughtPipelinesResponse { pipelines }))
    }

    async fn compose_thoughts(&self, request: Request<pb::ComposeThoughtsRequest>) -> Result<Response<pb::ComposeThoughtsResponse>, Status> {
        if self.state.is_draining() {
            return Err(ServeError::ShuttingDown.into());
        }
        let req = request.into_inner();
        let hosted = self.state.pipeline(&req.pipeline)?;
        Ok(Response::new(thoughts::compose(hosted, self.state.thought_store(), req).await?))
    }

    type GenerateStreamStream = ReceiverStream<Result<pb::GenerateStreamResponse, Status>>;

    async fn generate_stream(&self, request: Request<pb::GenerateRequest>) -> Result<Response<Self::GenerateStreamStream>, Status> {
        let started = self.start(request)?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(started.stream_to(tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

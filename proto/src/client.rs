//! A typed client of the runtime: the tonic client with the bearer token attached to every call,
//! and convenience methods. It lives here, beside the generated code, so that the `agents` crate
//! (which knows no tensors) and the `runtime` crate's tests share one client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use proto::client::RuntimeClient;
//! let mut client = RuntimeClient::connect("127.0.0.1:50051", None).await?;
//! let agent = client.create_agent("smollm2-135m", "You are a careful mathematician.", None).await?;
//! let reply = client.generate_text(&agent.id, "What is 2 + 3?", None).await?;
//! println!("{}", reply.text);
//! # Ok(()) }
//! ```
use std::time::Duration;

use crate::v1 as pb;
use crate::v1::runtime_service_client::RuntimeServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status, Streaming};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::MAX_MESSAGE_BYTES;

/// Adds `authorization: Bearer <token>` to each call when a token is set.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The generated client with the token interceptor.
pub type InnerClient = RuntimeServiceClient<InterceptedService<Channel, BearerToken>>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad endpoint '{endpoint}': {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("cannot connect to {endpoint}: {source}")]
    Connect { endpoint: String, source: tonic::transport::Error },
    #[error("the bearer token is not valid header text")]
    Token,
}

/// A connection to the runtime. Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct RuntimeClient {
    inner: InnerClient,
    health: HealthClient<Channel>,
}

impl RuntimeClient {
    /// Connects to `endpoint` (`host:port`, or a `http://` URL); `token` is the server's
    /// `auth_token`, if it has one.
    pub async fn connect(endpoint: &str, token: Option<&str>) -> Result<Self, ClientError> {
        let url = if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") };
        let bad = |message: String| ClientError::Endpoint { endpoint: endpoint.to_string(), message };
        let channel = Endpoint::from_shared(url)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|source| ClientError::Connect { endpoint: endpoint.to_string(), source })?;
        Self::from_channel(channel, token)
    }

    /// Wraps an existing channel.
    pub fn from_channel(channel: Channel, token: Option<&str>) -> Result<Self, ClientError> {
        let value = token
            .map(|t| format!("Bearer {t}").parse::<MetadataValue<Ascii>>().map_err(|_| ClientError::Token))
            .transpose()?;
        let inner = RuntimeServiceClient::with_interceptor(channel.clone(), BearerToken(value))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(RuntimeClient { inner, health: HealthClient::new(channel) })
    }

    /// The generated client, for calls not wrapped here.
    pub fn inner(&mut self) -> &mut InnerClient {
        &mut self.inner
    }

    /// Whether the server reports SERVING for the whole server (health service name "").
    pub async fn is_serving(&mut self) -> Result<bool, Status> {
        let reply = self.health.check(HealthCheckRequest { service: String::new() }).await?.into_inner();
        Ok(reply.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
    }

    pub async fn list_models(&mut self) -> Result<Vec<pb::ModelInfo>, Status> {
        Ok(self.inner.list_models(pb::ListModelsRequest {}).await?.into_inner().models)
    }

    /// Loads a model at runtime (`device` "" = cpu, `dtype` "" = auto; limits at their defaults).
    pub async fn load_model(&mut self, name: &str, device: &str, dtype: &str) -> Result<pb::ModelInfo, Status> {
        let request = pb::LoadModelRequest { name: name.into(), device: device.into(), dtype: dtype.into(), ..Default::default() };
        let reply = self.inner.load_model(request).await?.into_inner();
        reply.model.ok_or_else(|| Status::internal("LoadModel returned no model"))
    }

    pub async fn create_agent(
        &mut self,
        model: &str,
        system_prompt: &str,
        default_sampling: Option<pb::SamplingParams>,
    ) -> Result<pb::AgentInfo, Status> {
        let request = pb::CreateAgentRequest {
            model: model.into(),
            system_prompt: system_prompt.into(),
            default_sampling,
            name: String::new(),
        };
        let reply = self.inner.create_agent(request).await?.into_inner();
        reply.agent.ok_or_else(|| Status::internal("CreateAgent returned no agent"))
    }

    /// All agents, or those of `model` when it is not empty.
    pub async fn list_agents(&mut self, model: &str) -> Result<Vec<pb::AgentInfo>, Status> {
        Ok(self.inner.list_agents(pb::ListAgentsRequest { model: model.into() }).await?.into_inner().agents)
    }

    pub async fn delete_agent(&mut self, agent_id: &str) -> Result<(), Status> {
        self.inner.delete_agent(pb::DeleteAgentRequest { agent_id: agent_id.into() }).await?;
        Ok(())
    }

    pub async fn generate(&mut self, request: pb::GenerateRequest) -> Result<pb::GenerateResponse, Status> {
        Ok(self.inner.generate(request).await?.into_inner())
    }

    /// Generate with a deadline: DEADLINE_EXCEEDED when it passes (the server frees the sequence).
    pub async fn generate_with_timeout(&mut self, request: pb::GenerateRequest, timeout: Duration) -> Result<pb::GenerateResponse, Status> {
        let mut request = Request::new(request);
        request.set_timeout(timeout);
        Ok(self.inner.generate(request).await?.into_inner())
    }

    /// A user message to `agent_id`, with the chat template and the agent's system prompt.
    pub async fn generate_text(
        &mut self,
        agent_id: &str,
        prompt: &str,
        sampling: Option<pb::SamplingParams>,
    ) -> Result<pb::GenerateResponse, Status> {
        self.generate(prompt_request(agent_id, prompt, sampling)).await
    }

    /// Tokens as they are generated, then the whole result; dropping the stream cancels the call.
    pub async fn generate_stream(&mut self, request: pb::GenerateRequest) -> Result<Streaming<pb::GenerateStreamResponse>, Status> {
        Ok(self.inner.generate_stream(request).await?.into_inner())
    }
}

/// A GenerateRequest with a user message.
pub fn prompt_request(agent_id: &str, prompt: &str, sampling: Option<pb::SamplingParams>) -> pb::GenerateRequest {
    pb::GenerateRequest {
        agent_id: agent_id.into(),
        input: Some(pb::generate_request::Input::Prompt(prompt.into())),
        sampling,
        ..Default::default()
    }
}

impl RuntimeClient {
    /// Loads a thought pipeline folder (on the server's file system) under `name` ("" = the path).
    pub async fn load_thought_pipeline(&mut self, name: &str, path: &str) -> Result<pb::ThoughtPipelineInfo, Status> {
        let request = pb::LoadThoughtPipelineRequest { name: name.into(), path: path.into() };
        let reply = self.inner.load_thought_pipeline(request).await?.into_inner();
        reply.pipeline.ok_or_else(|| Status::internal("LoadThoughtPipeline returned no pipeline"))
    }

    /// The loaded thought pipeline called `name`, if any.
    pub async fn thought_pipeline(&mut self, name: &str) -> Result<Option<pb::ThoughtPipelineInfo>, Status> {
        let reply = self.inner.list_thought_pipelines(pb::ListThoughtPipelinesRequest {}).await?.into_inner();
        Ok(reply.pipelines.into_iter().find(|p| p.name == name))
    }

    pub async fn compose_thoughts(&mut self, request: pb::ComposeThoughtsRequest) -> Result<pb::ComposeThoughtsResponse, Status> {
        Ok(self.inner.compose_thoughts(request).await?.into_inner())
    }

    /// The loaded model called `name`, if the runtime serves it.
    pub async fn model_info(&mut self, name: &str) -> Result<Option<pb::ModelInfo>, Status> {
        Ok(self.list_models().await?.into_iter().find(|m| m.name == name))
    }
}

//! The gRPC runtime that hosts agents (`tcomm serve`): models loaded once, each with one engine
//! thread doing continuous batching for all the agents on it; the `thoughtcomm.runtime.v1`
//! RuntimeService, the standard `grpc.health.v1` health service and server reflection.
//!
//! - `config`: runtime.toml.
//! - `scheduler`: the engine thread of a model and its fair (round-robin across agents) queue.
//! - `service` / `generation`: the tonic handlers.
//! - `convert`: wire types <-> engine types (tensors, sampling, capture).
//! - `status`: every error and its one mapping to a gRPC status.
//! - `thoughts`: thought pipelines next to the weights, with the states and prefixes they keep.
//! - `auth`: the bearer-token interceptor.
//! - `client`: a typed client for the agents.
//!
//! Shutdown (SIGINT/SIGTERM, or the future given to [`Runtime::serve`]): health turns NOT_SERVING,
//! new calls get UNAVAILABLE, in-flight calls finish (up to `shutdown_timeout_s`), then the
//! engine threads stop and `serve` returns.
pub mod auth;
pub use proto::client;
pub mod config;
pub mod convert;
mod fair;
mod generation;
pub mod scheduler;
pub mod service;
pub mod status;
pub mod thoughts;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use proto::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;

pub use config::{ConfigError, ModelConfig, PipelineConfig, ServerConfig};
pub use proto::v1 as pb;
pub use status::ServeError;

use auth::BearerAuth;
use scheduler::ModelHost;
use service::{RuntimeApi, RuntimeState};

pub use proto::MAX_MESSAGE_BYTES;

/// The loaded models and agents, ready to serve.
pub struct Runtime {
    config: ServerConfig,
    state: Arc<RuntimeState>,
}

impl Runtime {
    /// Loads every model of `config` and starts its engine thread (blocking: seconds per model).
    pub fn load(config: ServerConfig) -> Result<Self, ServeError> {
        config.validate().map_err(ServeError::BadRequest)?;
        let mut hosts = Vec::new();
        for model in &config.models {
            tracing::info!(model = %model.name, device = %model.device, "loading");
            hosts.push(ModelHost::load(model.clone())?);
        }
        Self::with_hosts(config, hosts)
    }

    fn with_hosts(config: ServerConfig, hosts: Vec<ModelHost>) -> Result<Self, ServeError> {
        let state = RuntimeState::new(hosts);
        for p in &config.thought_pipelines {
            state.load_pipeline_blocking(&p.name(), &p.path)?;
        }
        Ok(Runtime { state: Arc::new(state), config })
    }

    /// Serves models that are already loaded, each with the limits of its `ModelConfig` (the
    /// `models` list of `config` is not used). For tests and programs that embed the runtime.
    pub fn with_models(config: ServerConfig, models: Vec<(ModelConfig, crate::loader::Model)>) -> Result<Self, ServeError> {
        let mut hosts = Vec::new();
        for (model_config, model) in models {
            hosts.push(ModelHost::start(model_config, model)?);
        }
        Self::with_hosts(config, hosts)
    }

    /// Serves on `listener` until `shutdown` completes, then drains (see the module docs).
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let Runtime { config, state } = self;
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_serving::<RuntimeServiceServer<RuntimeApi>>().await;
        reporter.set_service_status("", ServingStatus::Serving).await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServeError::Internal(format!("reflection service: {e}")))?;
        let api = RuntimeServiceServer::new(RuntimeApi::new(Arc::clone(&state)))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let api = InterceptedService::new(api, BearerAuth::new(config.auth_token.as_deref()));

        let draining = Arc::new(tokio::sync::Notify::new());
        let signal = {
            let (state, draining) = (Arc::clone(&state), Arc::clone(&draining));
            async move {
                shutdown.await;
                tracing::info!("shutting down: finishing in-flight calls");
                state.set_draining();
                reporter.set_not_serving::<RuntimeServiceServer<RuntimeApi>>().await;
                reporter.set_service_status("", ServingStatus::NotServing).await;
                draining.notify_one();
            }
        };
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = Server::builder()
            .add_service(health)
            .add_service(reflection)
            .add_service(api)
            .serve_with_incoming_shutdown(incoming, signal);
        let timeout = config.shutdown_timeout();
        let result = tokio::select! {
            result = server => result.map_err(|e| ServeError::Internal(format!("server: {e}"))),
            _ = async { draining.notified().await; tokio::time::sleep(timeout).await } => {
                tracing::warn!(seconds = timeout.as_secs_f64(), "shutdown timeout: calls still in flight are abandoned");
                Ok(())
            }
        };
        let stopping = Arc::clone(&state);
        let _ = tokio::task::spawn_blocking(move || stopping.stop_engines()).await;
        tracing::info!("server stopped");
        result
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `tcomm serve`: loads the models, binds `config.bind`, serves until SIGINT/SIGTERM. `on_ready`
/// is called with the bound address once the server accepts calls.
pub async fn run(config: ServerConfig, on_ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    let addr = config.bind_addr().map_err(ServeError::BadRequest)?;
    let listener = TcpListener::bind(addr).await.map_err(|e| ServeError::Internal(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().unwrap_or(addr);
    let runtime = tokio::task::spawn_blocking(move || Runtime::load(config))
        .await
        .map_err(|e| ServeError::Internal(format!("loading task failed: {e}")))??;
    on_ready(local);
    runtime.serve(listener, shutdown_signal()).await
}

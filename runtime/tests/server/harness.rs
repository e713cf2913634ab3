//! An in-process server on an ephemeral loopback port, and helpers shared by the server tests.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use runtime::server::client::RuntimeClient;
use runtime::server::{pb, ModelConfig, Runtime, ServeError, ServerConfig};
use tch::{Device, Kind};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const MODEL: &str = "smollm2-135m";

pub fn load_model() -> runtime::loader::Model {
    runtime::loader::load(MODEL, Device::Cpu, Kind::Float).expect("smollm2-135m (run scripts/setup)")
}

/// A running server; dropping it without `shutdown` aborts it.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
}

/// The model's limits for a test.
pub fn model_config(max_batch_size: usize, max_queue: usize) -> ModelConfig {
    ModelConfig { max_batch_size, max_queue, ..ModelConfig::new(MODEL) }
}

impl TestServer {
    /// Loads smollm2-135m and serves it with `model` limits on 127.0.0.1:0.
    pub async fn start(model: ModelConfig, auth_token: Option<&str>) -> TestServer {
        let mut config = ServerConfig::new(vec![model.clone()]);
        config.auth_token = auth_token.map(str::to_string);
        config.shutdown_timeout_s = 60.0;
        let loaded = tokio::task::spawn_blocking(load_model).await.expect("load task");
        let runtime = Runtime::with_models(config, vec![(model, loaded)]).expect("runtime");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(runtime.serve(listener, async move {
            let _ = rx.await;
        }));
        TestServer { addr, shutdown: Some(tx), handle: Some(handle) }
    }

    pub async fn client(&self, token: Option<&str>) -> RuntimeClient {
        RuntimeClient::connect(&self.addr.to_string(), token).await.expect("connect")
    }

    /// Triggers the graceful shutdown (as SIGTERM would) without waiting for it.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Triggers the shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.trigger_shutdown();
        let handle = self.handle.take().expect("server task");
        tokio::time::timeout(Duration::from_secs(60), handle).await.expect("server stops in time").expect("server task")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

pub fn sampling(max_new_tokens: u32) -> pb::SamplingParams {
    pb::SamplingParams { max_new_tokens: Some(max_new_tokens), ..Default::default() }
}

/// Sampling that never stops early (no stop tokens), for long generations.
pub fn endless(max_new_tokens: u32) -> pb::SamplingParams {
    pb::SamplingParams { stop_token_ids: Some(pb::TokenIds { ids: vec![] }), ..sampling(max_new_tokens) }
}

pub fn prompt(agent_id: &str, text: &str, sampling: pb::SamplingParams) -> pb::GenerateRequest {
    runtime::server::client::prompt_request(agent_id, text, Some(sampling))
}

/// The model's load as ListModels reports it: (queue depth, active sequences).
pub async fn load_of(client: &mut RuntimeClient) -> (u32, u32) {
    let models = client.list_models().await.expect("ListModels");
    let m = models.iter().find(|m| m.name == MODEL).expect("model listed");
    (m.queue_depth, m.active_sequences)
}

/// Polls until `check` holds on the model's (queue depth, active sequences), or panics.
pub async fn wait_for_load(client: &mut RuntimeClient, what: &str, check: impl Fn(u32, u32) -> bool) {
    let start = Instant::now();
    loop {
        let (queued, active) = load_of(client).await;
        if check(queued, active) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{what}: still queued {queued}, active {active} after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

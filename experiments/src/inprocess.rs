//! A gRPC runtime started inside the `tcomm` process on a free loopback port, so that a debate
//! needs no separately started server yet still goes through the same wire protocol.
use anyhow::Context;
use runtime::loader::Model;
use runtime::server::{ModelConfig, Runtime, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct InProcessServer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), runtime::server::ServeError>>,
}

impl InProcessServer {
    /// Drains in-flight calls and stops the engines.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Err(e)) => tracing::warn!("in-process runtime: {e}"),
            Err(e) => tracing::warn!("in-process runtime task: {e}"),
            Ok(Ok(())) => {}
        }
    }
}

/// Loads `models` on `device` in `dtype` with `weights` and serves them on 127.0.0.1 (an ephemeral
/// port); returns its URL.
pub async fn start(models: &[String], device: &str, dtype: &str, weights: &str) -> anyhow::Result<(String, InProcessServer)> {
    let config = loopback_config(
        models
            .iter()
            .map(|name| ModelConfig { device: device.to_string(), dtype: dtype.to_string(), weights: weights.to_string(), ..ModelConfig::new(name.clone()) })
            .collect(),
    );
    let listener = bind_loopback().await?;
    let runtime = tokio::task::spawn_blocking(move || Runtime::load(config)).await.context("loading task")??;
    serve(listener, runtime).await
}

/// Serves models that are already loaded, each with the limits of its `ModelConfig`, the same way
/// (so that a caller can use a model before handing it to the runtime, without loading it twice).
pub async fn start_loaded(models: Vec<(ModelConfig, Model)>) -> anyhow::Result<(String, InProcessServer)> {
    let config = loopback_config(models.iter().map(|(config, _)| config.clone()).collect());
    let listener = bind_loopback().await?;
    let runtime = Runtime::with_models(config, models)?;
    serve(listener, runtime).await
}

fn loopback_config(models: Vec<ModelConfig>) -> ServerConfig {
    let mut config = ServerConfig::new(models);
    config.bind = "127.0.0.1:0".into();
    config
}

async fn bind_loopback() -> anyhow::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port")
}

async fn serve(listener: TcpListener, runtime: Runtime) -> anyhow::Result<(String, InProcessServer)> {
    let addr = listener.local_addr().context("reading the bound address")?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(runtime.serve(listener, async {
        let _ = stopped.await;
    }));
    Ok((format!("http://{addr}"), InProcessServer { stop, task }))
}

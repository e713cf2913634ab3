//! A gRPC runtime started inside the `tcomm` process on a free loopback port, so that a debate
//! needs no separately started server yet still goes through the same wire protocol.
use anyhow::Context;
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

/// Loads `models` on `device` and serves them on 127.0.0.1 (an ephemeral port); returns its URL.
pub async fn start(models: &[String], device: &str) -> anyhow::Result<(String, InProcessServer)> {
    let mut config = ServerConfig::new(
        models
            .iter()
            .map(|name| ModelConfig { device: device.to_string(), ..ModelConfig::new(name.clone()) })
            .collect(),
    );
    config.bind = "127.0.0.1:0".into();
    let listener = TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port")?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let runtime = tokio::task::spawn_blocking(move || Runtime::load(config)).await.context("loading task")??;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(runtime.serve(listener, async {
        let _ = stopped.await;
    }));
    Ok((format!("http://{addr}"), InProcessServer { stop, task }))
}

//! `scripts/grpc_client_check.py` (stubs generated from the .proto alone by grpc_tools.protoc)
//! passes against the in-process server.
use std::path::PathBuf;
use std::process::Command;

use super::harness::{model_config, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_from_the_proto_alone() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup (it installs grpcio and grpcio-tools)", python.display());
    let server = TestServer::start(model_config(4, 16), None).await;
    let address = server.addr.to_string();
    let script = root.join("scripts/grpc_client_check.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).args(["--address", &address, "--timeout", "120"]).output()
    })
    .await
    .expect("task")
    .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "grpc_client_check.py failed ({}):\n{stdout}\n{stderr}", output.status);
    assert_eq!(stdout.lines().last(), Some("OK"), "{stdout}\n{stderr}");
    server.shutdown().await.expect("clean shutdown");
}

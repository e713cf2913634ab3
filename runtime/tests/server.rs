//! gRPC runtime tests: an in-process server (`runtime::server::Runtime`) with the real
//! smollm2-135m on an ephemeral loopback port, driven by the typed Rust client and by a Python
//! client generated from the .proto.
//!
//! - `batching`: 32 concurrent calls from 4 agents equal direct engine runs (greedy and seeded).
//! - `validation`: malformed requests get INVALID_ARGUMENT / NOT_FOUND; bearer-token auth.
//! - `lifecycle`: cancelled streams and deadlines free slots, a full queue answers
//!   RESOURCE_EXHAUSTED, one agent flooding the queue does not starve another, shutdown drains
//!   in-flight calls.
//! - `models`: LoadModel while serving; stop strings.
//! - `python`: scripts/grpc_client_check.py.
//! - `thoughts`: thought pipelines: kept states, ComposeThoughts, prefix ids, their errors.
#[path = "server/batching.rs"]
mod batching;
#[path = "server/harness.rs"]
mod harness;
#[path = "server/lifecycle.rs"]
mod lifecycle;
#[path = "server/models.rs"]
mod models;
#[path = "server/python.rs"]
mod python;
#[path = "server/thoughts.rs"]
mod thoughts;
#[path = "server/validation.rs"]
mod validation;

#[test]
fn configs_parse_with_defaults_and_refuse_unknown_keys() {
    use runtime::server::{ModelConfig, ServerConfig};
    let config = ServerConfig::from_toml_str("bind = \"127.0.0.1:50051\"\n[[models]]\nname = \"smollm2-135m\"\n").expect("smallest config");
    assert_eq!(config, ServerConfig::new(vec![ModelConfig::new("smollm2-135m")]));
    config.validate().expect("valid (the model is downloaded)");
    assert_eq!(config.models[0].max_queue, runtime::server::config::DEFAULT_MAX_QUEUE);

    let err = ServerConfig::from_toml_str("bind = \"127.0.0.1:1\"\nqueue = 3\n[[models]]\nname = \"smollm2-135m\"\n").unwrap_err();
    assert!(err.contains("queue"), "{err}");
    let err = ServerConfig::from_toml_str("[[models]]\nname = \"smollm2-135m\"\nmax_batch = 3\n").unwrap_err();
    assert!(err.contains("max_batch"), "{err}");
    let err = ServerConfig::from_toml_str("bind = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(err.contains("models"), "{err}");

    let check = |text: &str| ServerConfig::from_toml_str(text).expect("parses").validate().unwrap_err();
    assert!(check("[[models]]\nname = \"smollm2-135m\"\ndevice = \"tpu\"\n").contains("tpu"));
    assert!(check("[[models]]\nname = \"smollm2-135m\"\nmax_queue = 0\n").contains("max_queue"));
    assert!(check("[[models]]\nname = \"smollm2-135m\"\nweights = \"int4\"\n").contains("int4"));
    assert_eq!(config.models[0].weights, "dense");
    assert!(check("[[models]]\nname = \"no-such-model\"\n").contains("no-such-model"));
    assert!(check("bind = \"nonsense\"\n[[models]]\nname = \"smollm2-135m\"\n").contains("nonsense"));
    assert!(check("[[models]]\nname = \"smollm2-135m\"\n[[models]]\nname = \"smollm2-135m\"\n").contains("twice"));
    assert!(check("models = []\n").contains("[[models]]"));
}

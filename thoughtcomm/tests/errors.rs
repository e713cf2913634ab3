//! Bad input gives a `ThoughtError` that names the problem, never a panic.
use std::path::Path;

use tch::{Kind, Tensor};
use thoughtcomm::{AgentStates, AutoencoderConfig, Estimator, ThoughtAutoencoder, ThoughtError, TrainConfig};

fn block(rows: i64, cols: i64) -> Tensor {
    Tensor::randn([rows, cols], (Kind::Float, tch::Device::Cpu))
}

fn config() -> AutoencoderConfig {
    AutoencoderConfig {
        block_sizes: vec![3, 4],
        latent_dim: 2,
        hidden: vec![8],
        lambda: 1e-3,
        estimator: Estimator::ColumnNorm,
    }
}

fn message<T: std::fmt::Debug>(r: Result<T, ThoughtError>) -> (ThoughtError, String) {
    let e = r.expect_err("expected an error");
    let m = e.to_string();
    (e, m)
}

#[test]
fn mismatched_sample_counts() {
    let (e, m) = message(AgentStates::from_blocks(&[block(10, 3), block(9, 4)]));
    assert!(matches!(e, ThoughtError::SampleCountMismatch { agent: 1, expected: 10, got: 9 }), "{m}");
    assert!(m.contains("agent 1 has 9 samples"), "{m}");
}

#[test]
fn mismatched_dimensions() {
    let (_, m) = message(AgentStates::from_concat(block(5, 6), vec![3, 4]));
    assert!(m.contains("width of the concatenated states is 6, expected 7"), "{m}");
    let (_, m) =
        message(AgentStates::from_blocks(&[block(5, 3), Tensor::zeros([5, 2, 2], (Kind::Float, tch::Device::Cpu))]));
    assert!(m.contains("agent 1"), "{m}");
    // States whose agent blocks differ from the autoencoder's.
    let mut ae = ThoughtAutoencoder::new(config(), TrainConfig::default()).expect("new");
    let wrong = AgentStates::from_blocks(&[block(20, 3), block(20, 5)]).expect("valid on their own");
    let (e, m) = message(ae.fit(&wrong, 1));
    assert!(matches!(e, ThoughtError::DimensionMismatch { expected: 4, got: 5, .. }), "{m}");
    assert!(m.contains("agent 1's state dimension is 5, expected 4"), "{m}");
    let three = AgentStates::from_blocks(&[block(20, 3), block(20, 4), block(20, 1)]).expect("valid");
    let (_, m) = message(ae.fit(&three, 1));
    assert!(m.contains("number of agents is 3, expected 2"), "{m}");
    let (_, m) = message(ae.decode(&block(4, 3)));
    assert!(m.contains("untrained"), "{m}");
    ae.fit(&AgentStates::from_blocks(&[block(20, 3), block(20, 4)]).expect("valid"), 1).expect("fit");
    let (_, m) = message(ae.decode(&block(4, 3)));
    assert!(m.contains("latent width") && m.contains("expected 2"), "{m}");
}

#[test]
fn non_finite_states_name_agent_sample_and_dimension() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let b = block(6, 4);
        let _ = b.get(2).get(3).fill_(bad);
        let (e, m) = message(AgentStates::from_blocks(&[block(6, 3), b]));
        assert!(matches!(e, ThoughtError::NonFinite { agent: 1, sample: 2, dim: 3 }), "{m}");
        assert!(m.contains("NaN or Inf"), "{m}");
    }
}

#[test]
fn empty_input() {
    let (e, _) = message(AgentStates::from_blocks(&[]));
    assert!(matches!(e, ThoughtError::Empty(_)));
    let (e, m) = message(AgentStates::from_blocks(&[block(0, 3), block(0, 4)]));
    assert!(matches!(e, ThoughtError::Empty(_)) && m.contains("0 samples"), "{m}");
    let (_, m) = message(AgentStates::from_concat(block(5, 3), vec![3, 0]));
    assert!(m.contains("agent 1 has state dimension 0"), "{m}");
    let (e, m) =
        message(ThoughtAutoencoder::new(AutoencoderConfig { block_sizes: vec![], ..config() }, TrainConfig::default()));
    assert!(matches!(e, ThoughtError::Config(_)) && m.contains("block_sizes is empty"), "{m}");
}

#[test]
fn invalid_settings() {
    let bad = |c: AutoencoderConfig| message(ThoughtAutoencoder::new(c, TrainConfig::default())).1;
    assert!(bad(AutoencoderConfig { latent_dim: 0, ..config() }).contains("latent_dim 0"));
    assert!(bad(AutoencoderConfig { lambda: f64::NAN, ..config() }).contains("lambda NaN"));
    assert!(bad(AutoencoderConfig { hidden: vec![0], ..config() }).contains("hidden width 0"));
    let m = message(ThoughtAutoencoder::new(config(), TrainConfig { batch_size: 0, ..TrainConfig::default() })).1;
    assert!(m.contains("batch size 0"), "{m}");
    let m = message("sparse".parse::<Estimator>()).1;
    assert!(m.contains("unknown estimator 'sparse'") && m.contains("column-norm"), "{m}");
}

fn trained(path: &Path, cfg: AutoencoderConfig) {
    let mut ae = ThoughtAutoencoder::new(cfg, TrainConfig::default()).expect("new");
    ae.fit(&AgentStates::from_blocks(&[block(20, 3), block(20, 4)]).expect("valid"), 2).expect("fit");
    ae.save(path).expect("save");
}

#[test]
fn checkpoint_of_another_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ae.safetensors");
    trained(&path, config());
    let (e, m) = message(ThoughtAutoencoder::load_expecting(&path, &AutoencoderConfig { latent_dim: 3, ..config() }));
    assert!(matches!(e, ThoughtError::CheckpointMismatch { .. }), "{m}");
    assert!(m.contains("latent_dim is 2 in the checkpoint but 3 was asked for"), "{m}");
    let (_, m) =
        message(ThoughtAutoencoder::load_expecting(&path, &AutoencoderConfig { block_sizes: vec![3, 5], ..config() }));
    assert!(m.contains("block_sizes is [3, 4] in the checkpoint but [3, 5]"), "{m}");
    let (_, m) = message(ThoughtAutoencoder::load_expecting(&path, &AutoencoderConfig { hidden: vec![9], ..config() }));
    assert!(m.contains("hidden is [8]"), "{m}");

    // Weights of another shape beside this config: refused before libtorch could broadcast them.
    let other = dir.path().join("other.safetensors");
    trained(&other, AutoencoderConfig { hidden: vec![5], ..config() });
    std::fs::copy(&other, &path).expect("copy");
    let (e, m) = message(ThoughtAutoencoder::load(&path));
    assert!(matches!(e, ThoughtError::Checkpoint { .. }), "{m}");
    assert!(m.contains("has shape [5] but the config implies [8]"), "{m}");
}

#[test]
fn broken_checkpoint_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ae.safetensors");
    let (e, m) = message(ThoughtAutoencoder::load(&path));
    assert!(matches!(e, ThoughtError::Io { .. }) && m.contains("ae.json"), "{m}");
    trained(&path, config());
    std::fs::write(&path, b"not safetensors").expect("write");
    let (e, m) = message(ThoughtAutoencoder::load(&path));
    assert!(matches!(e, ThoughtError::Checkpoint { .. }) && m.contains("ae.safetensors"), "{m}");
    std::fs::write(thoughtcomm::config_path(&path), b"{\"format_version\": 1}").expect("write");
    let (_, m) = message(ThoughtAutoencoder::load(&path));
    assert!(m.contains("bad config JSON"), "{m}");
}

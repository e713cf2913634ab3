//! The autoencoder's exact Jacobian, determinism, and checkpoint round trips / resumption.
use tch::{Kind, Tensor};
use thoughtcomm::synthetic::{generate, SyntheticConfig};
use thoughtcomm::{AgentStates, AutoencoderConfig, Estimator, ThoughtAutoencoder, TrainConfig};

/// These networks are tiny: more than one libtorch thread only adds synchronization (and
/// busy-waiting when other processes hold the cores).
fn one_thread() {
    tch::set_num_threads(1);
}

/// Synthetic states of 3 agents; their block sizes depend on the latent grouping only.
fn states(seed: u64) -> AgentStates {
    let data = generate(&SyntheticConfig { agents: 3, latent_dim: 7, samples: 300, seed }).expect("synthetic data");
    data.states
}

fn config(estimator: Estimator) -> AutoencoderConfig {
    let block_sizes = states(0).block_sizes().to_vec();
    AutoencoderConfig { block_sizes, latent_dim: 7, hidden: vec![16, 12], lambda: 1e-2, estimator }
}

fn train() -> TrainConfig {
    TrainConfig { batch_size: 32, learning_rate: 1e-3, seed: 5 }
}

/// The closed-form J equals autograd's, row by row (samples are independent, so the gradient of
/// the batch sum of output r with respect to Z is row r of every sample's Jacobian).
#[test]
fn closed_form_jacobian_matches_autograd() {
    one_thread();
    let cfg =
        AutoencoderConfig { block_sizes: vec![3, 5], latent_dim: 4, hidden: vec![9, 7, 6], ..config(Estimator::Paper) };
    let ae = ThoughtAutoencoder::new(cfg, train()).expect("autoencoder");
    let z = Tensor::randn([10, 4], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let (x, jac) = ae.network().decoder.forward_with_jacobian(&z);
    assert_eq!(jac.size(), vec![10, 8, 4]);
    assert!(x.allclose(&ae.network().decoder.forward(&z), 1e-6, 1e-6, false));
    for r in 0..8 {
        let grad = Tensor::run_backward(&[x.select(1, r).sum(Kind::Float)], &[&z], true, false);
        let diff = (&grad[0] - jac.select(1, r)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "row {r}: closed form differs from autograd by {diff}");
    }
}

/// Encoder output and decoder output on `probe`: equal for two autoencoders only if both
/// networks' weights are (for all practical purposes) equal.
fn weights(ae: &ThoughtAutoencoder, probe: &AgentStates) -> Tensor {
    let z = ae.encode(probe).expect("encode");
    let h = ae.decode(&z).expect("decode");
    Tensor::cat(&[z, h], 1)
}

#[test]
fn training_is_deterministic_and_reduces_the_loss() {
    one_thread();
    let s = states(1);
    let mut a = ThoughtAutoencoder::new(config(Estimator::ColumnNorm), train()).expect("a");
    let mut b = ThoughtAutoencoder::new(config(Estimator::ColumnNorm), train()).expect("b");
    let first = a.fit(&s, 10).expect("fit");
    b.fit(&s, 10).expect("fit");
    assert!(weights(&a, &s).equal(&weights(&b, &s)), "same seed, different result");
    let later = a.fit(&s, 300).expect("fit");
    assert!(later.reconstruction < first.reconstruction, "{} !< {}", later.reconstruction, first.reconstruction);
    assert_eq!(a.step(), 310);
}

/// 2N steps in one go equal N steps, save, load, N more: weights, Adam moments, step counter and
/// normalization all come back, and mini-batch n depends only on (seed, n).
#[test]
fn resumed_training_equals_uninterrupted_training() {
    one_thread();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ae.safetensors");
    let s = states(2);
    for estimator in Estimator::ALL {
        let mut straight = ThoughtAutoencoder::new(config(estimator), train()).expect("new");
        straight.fit(&s, 40).expect("fit");
        let mut first = ThoughtAutoencoder::new(config(estimator), train()).expect("new");
        first.fit(&s, 20).expect("fit");
        first.save(&path).expect("save");
        assert!(thoughtcomm::config_path(&path).exists());
        let mut resumed = ThoughtAutoencoder::load_expecting(&path, &config(estimator)).expect("load");
        assert_eq!(resumed.step(), 20);
        assert_eq!(resumed.normalization(), first.normalization());
        assert!(weights(&resumed, &s).equal(&weights(&first, &s)));
        resumed.fit(&s, 20).expect("fit");
        assert!(weights(&resumed, &s).equal(&weights(&straight, &s)), "{estimator}: resumed run diverged");
    }
}

#[test]
fn decode_inverts_normalization_and_reconstructs() {
    one_thread();
    let s = states(3);
    let mut ae =
        ThoughtAutoencoder::new(AutoencoderConfig { lambda: 0.0, ..config(Estimator::Paper) }, train()).expect("new");
    ae.fit(&s, 1500).expect("fit");
    let h_hat = ae.decode(&ae.encode(&s).expect("encode")).expect("decode");
    let rel = (&h_hat - s.h()).square().mean(Kind::Float) / s.h().var(true);
    assert!(rel.double_value(&[]) < 0.1, "relative reconstruction error {}", rel.double_value(&[]));
    let explained = ae.explained_variance(&s).expect("explained variance");
    assert!(explained > 0.9, "explained variance {explained}");
}

/// A penalty far too strong for the states' size switches the decoder off (it outputs the mean):
/// the explained variance, which `tcomm train` checks, shows it.
#[test]
fn a_collapsed_autoencoder_explains_no_variance() {
    one_thread();
    let s = states(3);
    let mut ae = ThoughtAutoencoder::new(AutoencoderConfig { lambda: 10.0, ..config(Estimator::Log) }, train()).expect("new");
    ae.fit(&s, 1500).expect("fit");
    let explained = ae.explained_variance(&s).expect("explained variance");
    assert!(explained < 0.05, "explained variance {explained}");
}

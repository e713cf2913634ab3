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
    TrainConfig { batch_size: 32, learning_rate: 1e-3, seed: 5, jacobian_columns: None }
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
    let (x, jac) = ae.network().decoder.forward_with_jacobian(&z, None);
    assert_eq!(jac.size(), vec![10, 8, 4]);
    assert!(x.allclose(&ae.network().decoder.forward(&z), 1e-6, 1e-6, false));
    for r in 0..8 {
        let grad = Tensor::run_backward(&[x.select(1, r).sum(Kind::Float)], &[&z], true, false);
        let diff = (&grad[0] - jac.select(1, r)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "row {r}: closed form differs from autograd by {diff}");
    }
}

/// Estimating the penalty on a subset of the Jacobian's latent columns: the subset's columns are
/// those of the full Jacobian, and the estimates on the two halves of a partition of the columns
/// average to the full penalty for every estimator (each sums over columns), so random subsets of
/// one size give an unbiased estimate. A training on a subset is seeded like any other.
#[test]
fn penalty_on_column_subsets_is_unbiased() {
    one_thread();
    let s = states(2);
    for estimator in Estimator::ALL {
        let cfg = AutoencoderConfig { latent_dim: 6, ..config(estimator) };
        let mut ae = ThoughtAutoencoder::new(cfg.clone(), train()).expect("autoencoder");
        ae.fit(&s, 5).expect("fit");
        let x = ae.normalize(&s).expect("normalize").narrow(0, 0, 64);
        let net = ae.network();
        let (even, odd) = (Tensor::from_slice(&[4i64, 0, 2]), Tensor::from_slice(&[1i64, 5, 3]));
        let z = net.encoder.forward(&x);
        let (_, full_jac) = net.decoder.forward_with_jacobian(&z, None);
        let (_, part_jac) = net.decoder.forward_with_jacobian(&z, Some(&even));
        assert!(part_jac.allclose(&full_jac.index_select(2, &even), 1e-6, 1e-6, false), "{estimator}: columns differ");
        let full = net.loss(&x, None);
        let (a, b) = (net.loss(&x, Some(&even)), net.loss(&x, Some(&odd)));
        let mean = (a.penalty.double_value(&[]) + b.penalty.double_value(&[])) / 2.0;
        let want = full.penalty.double_value(&[]);
        assert!((mean - want).abs() <= 1e-5 * want.abs().max(1.0), "{estimator}: halves average {mean}, full {want}");
        assert!(a.reconstruction.equal(&full.reconstruction), "{estimator}: the subset changed the reconstruction");

        let subset = TrainConfig { jacobian_columns: Some(2), ..train() };
        let mut p = ThoughtAutoencoder::new(cfg.clone(), subset.clone()).expect("p");
        let mut q = ThoughtAutoencoder::new(cfg, subset).expect("q");
        p.fit(&s, 20).expect("fit");
        q.fit(&s, 20).expect("fit");
        assert!(weights(&p, &s).equal(&weights(&q, &s)), "{estimator}: same seed, different result");
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

/// Training on CUDA starts from the CPU's initial weights, draws the same mini-batches and ends
/// close to the CPU's run (not bit-for-bit: other kernels); a CUDA checkpoint loads on the CPU.
#[test]
#[ignore = "needs a CUDA GPU (scripts/gpu_identifiability.sh runs it on the device machine)"]
fn cuda_training_follows_the_cpu() {
    one_thread();
    let cuda = tch::Device::Cuda(0);
    assert!(tch::Cuda::is_available(), "no CUDA device");
    let s = states(2);
    let subset = TrainConfig { jacobian_columns: Some(3), ..train() };
    let mut cpu = ThoughtAutoencoder::new(config(Estimator::Log), subset.clone()).expect("cpu");
    let mut gpu = ThoughtAutoencoder::new(config(Estimator::Log), subset).expect("gpu").to_device(cuda);
    assert_eq!(gpu.device(), cuda);
    let (a, b) = (cpu.fit(&s, 200).expect("fit cpu"), gpu.fit(&s, 200).expect("fit cuda"));
    assert!((a.reconstruction - b.reconstruction).abs() < 1e-3 * a.reconstruction.max(1e-3), "{a:?} vs {b:?}");
    let (za, zb) = (cpu.encode(&s).expect("encode"), gpu.encode(&s).expect("encode"));
    assert_eq!(zb.device(), tch::Device::Cpu);
    let diff = (&za - &zb).abs().max().double_value(&[]);
    assert!(diff < 1e-3, "latents differ by {diff}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ae.safetensors");
    gpu.save(&path).expect("save");
    let back = ThoughtAutoencoder::load_expecting(&path, &config(Estimator::Log)).expect("load");
    let diff = (back.encode(&s).expect("encode") - &zb).abs().max().double_value(&[]);
    assert!(back.step() == 200 && diff < 1e-4, "the CUDA checkpoint read on the CPU differs by {diff}");
}

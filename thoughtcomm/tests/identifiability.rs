//! A small, fast run of the synthetic identifiability benchmark (the full one is
//! `tcomm identifiability`): the default estimator must recover the latents well and the
//! agent-by-latent structure better than the same autoencoder without the sparsity penalty.
use thoughtcomm::benchmark::{self, BenchConfig};
use thoughtcomm::synthetic::SyntheticConfig;
use thoughtcomm::{Estimator, StructureConfig, TrainConfig};

#[test]
fn default_estimator_beats_the_ablation_on_a_small_problem() {
    tch::set_num_threads(1);
    let start = std::time::Instant::now();
    let config = BenchConfig {
        data: SyntheticConfig { agents: 3, latent_dim: 7, samples: 2000, seed: 0 },
        estimator: Estimator::default(),
        // The penalty sums |J| over n_h x k = 12 x 7 entries here against 43 x 24 at the default
        // size, so lambda is scaled up to keep a similar weight against the reconstruction.
        lambda: 1e-2,
        hidden: vec![32, 32],
        steps: 2000,
        train: TrainConfig { batch_size: 128, learning_rate: 1e-3, seed: 0, jacobian_columns: None },
        structure: StructureConfig::default(),
        ablation: true,
        device: tch::Device::Cpu,
    };
    let r = benchmark::run(&config).expect("benchmark");
    let (s, a) = (&r.sparse, r.no_sparsity.as_ref().expect("the ablation was asked for"));
    eprintln!(
        "sparse: MCC shared {:.3} private {:.3} F1 {:.3}; lambda = 0: {:.3} {:.3} {:.3}; {:.1} s",
        s.mcc_shared,
        s.mcc_private,
        s.structure_f1,
        a.mcc_shared,
        a.mcc_private,
        a.structure_f1,
        start.elapsed().as_secs_f64()
    );
    assert!(s.mcc_shared >= 0.7 && s.mcc_private >= 0.7, "MCC too low: {s:?}");
    assert!(s.structure_f1 > a.structure_f1, "F1 {} not above the ablation's {}", s.structure_f1, a.structure_f1);
}

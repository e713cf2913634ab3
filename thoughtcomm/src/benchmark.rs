//! The synthetic identifiability benchmark: generate states with a known structure, train the
//! autoencoder with the Jacobian penalty and without it (lambda = 0, the ablation), and score how
//! well each recovers the true latents (MCC) and the agent-by-latent structure (F1).
//! At the paper's sizes a training takes hours on a CPU, so a [`TrainingObserver`] sees every
//! chunk of steps (progress, checkpoints) and may hand back a saved autoencoder to resume.
use serde::{Deserialize, Serialize};

use crate::autoencoder::{AutoencoderConfig, Estimator};
use crate::error::Result;
use crate::metrics::{match_latents, structure_f1};
use crate::structure::{StructureConfig, ThoughtStructure};
use crate::synthetic::{generate, SyntheticConfig, SyntheticData};
use crate::train::{ThoughtAutoencoder, TrainConfig, TrainReport};

/// Steps between two calls of [`TrainingObserver::after_chunk`].
pub const CHUNK_STEPS: u64 = 200;

/// The two trainings of a run, as named to the observer (and in checkpoint file names).
pub const SPARSE: &str = "sparse";
pub const NO_SPARSITY: &str = "no-sparsity";

/// One benchmark run: the data, and the autoencoder trained on it twice.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub data: SyntheticConfig,
    pub estimator: Estimator,
    pub lambda: f64,
    pub hidden: Vec<i64>,
    pub steps: u64,
    pub train: TrainConfig,
    pub structure: StructureConfig,
    /// Also train with lambda = 0 (the ablation). Off only to save time while tuning.
    pub ablation: bool,
    /// Where the autoencoders train (data, scores and checkpoints stay on the CPU).
    pub device: tch::Device,
}

/// Hooks into a run's trainings. Both methods default to doing nothing.
pub trait TrainingObserver {
    /// A saved autoencoder to continue for training `name` ([`SPARSE`] or [`NO_SPARSITY`]), or
    /// None to start from scratch. Called once before each training.
    fn resume(&mut self, _name: &str, _config: &AutoencoderConfig) -> Result<Option<ThoughtAutoencoder>> {
        Ok(None)
    }
    /// Called after every [`CHUNK_STEPS`] steps (and after the last, shorter chunk).
    fn after_chunk(&mut self, _name: &str, _ae: &ThoughtAutoencoder, _report: &TrainReport) -> Result<()> {
        Ok(())
    }
}

/// Trains from scratch and reports nothing.
pub struct Silent;

impl TrainingObserver for Silent {}

/// Scores of one trained autoencoder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecoveryScores {
    /// Mean matched |correlation| over true latents shared by >= 2 agents.
    pub mcc_shared: f64,
    /// The same over private true latents.
    pub mcc_private: f64,
    pub mcc_all: f64,
    /// F1 of the recovered agent-by-latent B against the truth, after the MCC matching.
    pub structure_f1: f64,
    /// Training reconstruction MSE (normalized units) at the end.
    pub reconstruction: f64,
    /// Training time of this invocation (a resumed training counts only the steps it ran).
    pub train_seconds: f64,
    pub samples_per_second: f64,
    /// Per true latent: its matched |correlation|.
    pub correlations: Vec<f64>,
    /// Per true latent: how many agents the recovered structure says its match affects.
    pub recovered_alpha: Vec<usize>,
    /// Per true latent: the recovered latent it was matched to.
    pub matched: Vec<usize>,
    /// The recovered structure, in the recovered latents' order.
    pub structure: ThoughtStructure,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub sparse: RecoveryScores,
    /// None when the ablation was not asked for.
    pub no_sparsity: Option<RecoveryScores>,
    /// Per true latent: how many agents it affects.
    pub true_alpha: Vec<usize>,
}

/// Generates the data once and scores the estimator with `config.lambda` and with lambda = 0.
pub fn run(config: &BenchConfig) -> Result<BenchReport> {
    run_observed(config, &mut Silent)
}

/// [`run`], with `observer` told of every chunk of training and asked for checkpoints to resume.
pub fn run_observed(config: &BenchConfig, observer: &mut dyn TrainingObserver) -> Result<BenchReport> {
    let data = generate(&config.data)?;
    let ae_config = |lambda: f64| AutoencoderConfig {
        block_sizes: data.states.block_sizes().to_vec(),
        latent_dim: config.data.latent_dim as i64,
        hidden: config.hidden.clone(),
        lambda,
        estimator: config.estimator,
    };
    let sparse = evaluate(&data, SPARSE, ae_config(config.lambda), config, observer)?;
    let no_sparsity =
        if config.ablation { Some(evaluate(&data, NO_SPARSITY, ae_config(0.0), config, observer)?) } else { None };
    let true_alpha = (0..config.data.latent_dim).map(|j| data.alpha(j)).collect();
    Ok(BenchReport { sparse, no_sparsity, true_alpha })
}

/// Trains (or resumes) one autoencoder on `data` up to `config.steps` and scores it.
fn evaluate(
    data: &SyntheticData,
    name: &str,
    ae_config: AutoencoderConfig,
    config: &BenchConfig,
    observer: &mut dyn TrainingObserver,
) -> Result<RecoveryScores> {
    let ae = match observer.resume(name, &ae_config)? {
        Some(ae) => ae,
        None => ThoughtAutoencoder::new(ae_config, config.train.clone())?,
    };
    let mut ae = ae.to_device(config.device);
    let report = ae.fit_until(&data.states, config.steps, CHUNK_STEPS, |ae, report| observer.after_chunk(name, ae, report))?;
    // The mean over the last training steps when this call trained, else (a resumed training
    // that had already finished) the reconstruction over all samples.
    let reconstruction = match &report {
        Some(report) => report.reconstruction,
        None => ae.reconstruction_mse(&data.states)?,
    };
    let z_hat = ae.encode(&data.states)?;
    let matching = match_latents(&z_hat, &data.latents)?;
    let structure = ThoughtStructure::recover(&ae, &data.states, &config.structure)?;
    let k = config.data.latent_dim;
    Ok(RecoveryScores {
        mcc_shared: matching.mcc(|j| data.alpha(j) >= 2),
        mcc_private: matching.mcc(|j| data.alpha(j) == 1),
        mcc_all: matching.mcc(|_| true),
        structure_f1: structure_f1(&data.true_b, &structure.b, &matching),
        reconstruction,
        train_seconds: report.as_ref().map_or(0.0, |r| r.seconds),
        samples_per_second: report.as_ref().map_or(0.0, |r| r.samples_per_second),
        recovered_alpha: (0..k).map(|j| structure.alpha[matching.estimated[j]]).collect(),
        correlations: matching.correlations,
        matched: matching.estimated,
        structure,
    })
}

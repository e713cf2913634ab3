//! The synthetic identifiability benchmark: generate states with a known structure, train the
//! autoencoder with the Jacobian penalty and without it (lambda = 0, the ablation), and score how
//! well each recovers the true latents (MCC) and the agent-by-latent structure (F1).
use serde::{Deserialize, Serialize};

use crate::autoencoder::{AutoencoderConfig, Estimator};
use crate::error::Result;
use crate::metrics::{match_latents, structure_f1};
use crate::structure::{StructureConfig, ThoughtStructure};
use crate::synthetic::{generate, SyntheticConfig, SyntheticData};
use crate::train::{ThoughtAutoencoder, TrainConfig};

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
}

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
    pub no_sparsity: RecoveryScores,
    /// Per true latent: how many agents it affects.
    pub true_alpha: Vec<usize>,
}

/// Generates the data once and scores the estimator with `config.lambda` and with lambda = 0.
pub fn run(config: &BenchConfig) -> Result<BenchReport> {
    let data = generate(&config.data)?;
    let ae_config = |lambda: f64| AutoencoderConfig {
        block_sizes: data.states.block_sizes().to_vec(),
        latent_dim: config.data.latent_dim as i64,
        hidden: config.hidden.clone(),
        lambda,
        estimator: config.estimator,
    };
    let sparse = evaluate(&data, ae_config(config.lambda), config)?;
    let no_sparsity = evaluate(&data, ae_config(0.0), config)?;
    let true_alpha = (0..config.data.latent_dim).map(|j| data.alpha(j)).collect();
    Ok(BenchReport { sparse, no_sparsity, true_alpha })
}

/// Trains one autoencoder on `data` and scores it.
pub fn evaluate(data: &SyntheticData, ae_config: AutoencoderConfig, config: &BenchConfig) -> Result<RecoveryScores> {
    let mut ae = ThoughtAutoencoder::new(ae_config, config.train.clone())?;
    let report = ae.fit(&data.states, config.steps)?;
    let z_hat = ae.encode(&data.states)?;
    let matching = match_latents(&z_hat, &data.latents)?;
    let structure = ThoughtStructure::recover(&ae, &data.states, &config.structure)?;
    let k = config.data.latent_dim;
    Ok(RecoveryScores {
        mcc_shared: matching.mcc(|j| data.alpha(j) >= 2),
        mcc_private: matching.mcc(|j| data.alpha(j) == 1),
        mcc_all: matching.mcc(|_| true),
        structure_f1: structure_f1(&data.true_b, &structure.b, &matching),
        reconstruction: report.reconstruction,
        train_seconds: report.seconds,
        samples_per_second: report.samples_per_second,
        recovered_alpha: (0..k).map(|j| structure.alpha[matching.estimated[j]]).collect(),
        correlations: matching.correlations,
        matched: matching.estimated,
        structure,
    })
}

//! Checkpoints: `NAME.safetensors` (network weights and Adam moments) and `NAME.json` beside it
//! (shapes, objective, optimizer settings, normalization statistics, step), so training resumes
//! exactly and a checkpoint of another shape is refused with the field that differs.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::autoencoder::{AutoencoderConfig, ThoughtNetwork};
use crate::error::{Result, ThoughtError};
use crate::states::Normalization;
use crate::optim::{load_trainable, save_trainable};
use crate::train::{ThoughtAutoencoder, TrainConfig};

/// Bumped when the layout of either file changes.
const FORMAT_VERSION: u32 = 1;

/// The JSON half of a checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointMeta {
    format_version: u32,
    config: AutoencoderConfig,
    train: TrainConfig,
    normalization: Option<Normalization>,
    step: u64,
}

/// The JSON file that goes with a checkpoint's safetensors file.
pub fn config_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

impl ThoughtAutoencoder {
    /// Writes `weights` (should end in `.safetensors`) and its JSON config beside it.
    pub fn save(&self, weights: &Path) -> Result<()> {
        save_trainable(&self.net.vs, &self.adam, weights)?;
        let meta = CheckpointMeta {
            format_version: FORMAT_VERSION,
            config: self.config().clone(),
            train: self.train.clone(),
            normalization: self.normalization.clone(),
            step: self.step,
        };
        write_json(&config_path(weights), &meta)
    }

    /// Loads a checkpoint written by [`ThoughtAutoencoder::save`].
    pub fn load(weights: &Path) -> Result<Self> {
        let path = config_path(weights);
        let meta: CheckpointMeta = read_json(&path)?;
        if meta.format_version != FORMAT_VERSION {
            return Err(ThoughtError::checkpoint_mismatch(&path, "format_version", meta.format_version, FORMAT_VERSION));
        }
        meta.config.validate().map_err(|e| ThoughtError::Checkpoint { path: path.clone(), message: e.to_string() })?;
        if let Some(norm) = &meta.normalization {
            let n_h = meta.config.state_dim() as usize;
            if norm.mean.len() != n_h || norm.std.len() != n_h {
                return Err(ThoughtError::Checkpoint {
                    path,
                    message: format!(
                        "normalization has {} means and {} stds for {n_h} state dimensions",
                        norm.mean.len(),
                        norm.std.len()
                    ),
                });
            }
        }
        let net = ThoughtNetwork::new(&meta.config, meta.train.seed)?;
        let adam = load_trainable(&net.vs, weights)?;
        Ok(Self { net, train: meta.train, normalization: meta.normalization, step: meta.step, adam })
    }

    /// Loads a checkpoint and checks that it has the shape and objective of `expected`, naming the
    /// first field that differs (the usual mistake: resuming with other block sizes or k).
    pub fn load_expecting(weights: &Path, expected: &AutoencoderConfig) -> Result<Self> {
        let ae = Self::load(weights)?;
        let found = ae.config();
        let path = config_path(weights);
        let fields: [(&str, String, String); 5] = [
            ("block_sizes", format!("{:?}", found.block_sizes), format!("{:?}", expected.block_sizes)),
            ("latent_dim", found.latent_dim.to_string(), expected.latent_dim.to_string()),
            ("hidden", format!("{:?}", found.hidden), format!("{:?}", expected.hidden)),
            ("estimator", found.estimator.to_string(), expected.estimator.to_string()),
            ("lambda", found.lambda.to_string(), expected.lambda.to_string()),
        ];
        match fields.into_iter().find(|(_, f, e)| f != e) {
            Some((field, f, e)) => Err(ThoughtError::checkpoint_mismatch(&path, field, f, e)),
            None => Ok(ae),
        }
    }
}

/// Writes `value` as pretty JSON to `path`.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value)
        .map_err(|e| ThoughtError::Checkpoint { path: path.to_path_buf(), message: e.to_string() })?;
    std::fs::write(path, json).map_err(|source| ThoughtError::Io { path: path.to_path_buf(), source })
}

/// Reads a JSON file written by [`write_json`], naming the file in every error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| ThoughtError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text)
        .map_err(|e| ThoughtError::Checkpoint { path: path.to_path_buf(), message: format!("bad config JSON: {e}") })
}

//! Latent thought communication (Zheng et al., NeurIPS 2025): extraction of shared and private
//! thoughts with a sparsity-regularized autoencoder, routing with agreement weights, and
//! injection through a prefix adapter.
//!
//! This crate depends on no model code: it states what it needs from a language model in a small
//! trait ([`LanguageModel`]) that the `runtime` crate implements. Issue #7 brings the autoencoder
//! ([`ThoughtAutoencoder`]), the structure read-out ([`ThoughtStructure`]) and the synthetic
//! identifiability benchmark ([`benchmark`]); routing and injection arrive with issue #8.
pub mod autoencoder;
pub mod benchmark;
mod checkpoint;
pub mod error;
pub mod metrics;
pub mod model;
pub mod states;
pub mod structure;
pub mod synthetic;
mod train;

pub use autoencoder::{AutoencoderConfig, Estimator, LossParts, ThoughtDecoder, ThoughtEncoder, ThoughtNetwork};
pub use checkpoint::config_path;
pub use error::{Result, ThoughtError};
pub use model::LanguageModel;
pub use states::{AgentStates, Normalization};
pub use structure::{Aggregate, StructureConfig, ThoughtStructure};
pub use train::{ThoughtAutoencoder, TrainConfig, TrainReport};

//! Latent thought communication (Zheng et al., NeurIPS 2025): extraction of shared and private
//! thoughts with a sparsity-regularized autoencoder, routing with agreement weights, and
//! injection through a prefix adapter.
//!
//! This crate depends on no model code: it states what it needs from a language model in a small
//! trait ([`LanguageModel`]) that the `runtime` crate implements. The parts, in the order a round
//! uses them: the autoencoder ([`ThoughtAutoencoder`]) and its structure read-out
//! ([`ThoughtStructure`]), routing with agreement ([`RoutingPlan`]), the prefix adapter
//! ([`PrefixAdapter`], trained by [`train_adapter`]), and the [`ThoughtPipeline`] that holds them
//! for the runtime. [`benchmark`] is the synthetic identifiability benchmark.
pub mod adapter;
mod adapter_eval;
mod adapter_train;
pub mod autoencoder;
pub mod benchmark;
mod checkpoint;
pub mod error;
pub mod metrics;
pub mod model;
mod optim;
pub mod pipeline;
pub mod routing;
pub mod states;
pub mod structure;
pub mod synthetic;
mod train;

pub use adapter::{AdapterConfig, PrefixAdapter};
pub use adapter_eval::{evaluate_adapter, HeldOutLoss, PrefixInput};
pub use adapter_train::{
    adapter_loss, sample_references, train_adapter, AdapterExample, AdapterLoss, AdapterObjective, AdapterReport, AdapterTrainConfig,
};
pub use autoencoder::{AutoencoderConfig, Estimator, LossParts, ThoughtDecoder, ThoughtEncoder, ThoughtNetwork};
pub use checkpoint::config_path;
pub use error::{Result, ThoughtError};
pub use model::{ContinuationSampling, LanguageModel};
pub use states::{AgentStates, Normalization};
pub use structure::{Aggregate, StructureConfig, ThoughtStructure};
pub use train::{ThoughtAutoencoder, TrainConfig, TrainReport};
pub use pipeline::{AgentThoughts, ComposeOptions, ComposedThoughts, PipelineAgent, PipelineManifest, ThoughtPipeline};
pub use routing::{Agreement, Routing, RoutingPlan};

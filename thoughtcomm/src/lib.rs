//! Latent thought communication (Zheng et al., NeurIPS 2025): extraction of shared and private
//! thoughts with a sparsity-regularized autoencoder, routing with agreement weights, and
//! injection through a prefix adapter.
//!
//! This crate depends on no model code: it states what it needs from a language model in a small
//! trait that the `runtime` crate implements. The autoencoder and routing arrive with issues #7
//! and #8.

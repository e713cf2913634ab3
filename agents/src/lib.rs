//! Debate agents, datasets and answer checking.
//!
//! This crate knows no tensors: it reaches the runtime only through the runtime's gRPC client.
//! The debate modes arrive with the debate issue (#6).

pub mod answer;
pub mod dataset;
pub mod metrics;

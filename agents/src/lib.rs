//! Debate agents, datasets and answer checking.
//!
//! This crate knows no tensors: it reaches the runtime only through the runtime's gRPC client.
//! Data flows one way: dataset → debate (prompts to the runtime) → answers → results → report.

pub mod answer;
pub mod dataset;
pub mod debate;
pub mod metrics;
pub mod prompts;
pub mod results;
pub mod states;
pub mod thoughts;

//! The inference engine of ThoughtComm-RS: model files (GGUF, Hugging Face safetensors
//! checkpoints), tokenizers and chat templates, the transformer architectures on libtorch, and
//! generation, the gRPC runtime that hosts agents on top of this engine (`server`), and the
//! frozen-model view that prefix adapters train through (`thought_model`).
pub mod device;
pub mod engine;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod loader;
pub mod models;
pub mod registry;
pub mod server;
pub mod thought_model;
pub mod tokenizer;
pub mod weights;

pub use error::LoadError;

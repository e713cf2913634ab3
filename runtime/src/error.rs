//! Errors raised while turning files on disk into a runnable model.
use std::path::PathBuf;

use crate::gguf::GgufError;
use crate::tokenizer::TokenizerError;

/// Everything that can go wrong between a model argument and a loaded model. Messages are one
/// line and name the file and the problem, because users see them as the whole CLI output.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: unsupported architecture '{arch}' (supported: {supported})")]
    UnsupportedArchitecture { path: PathBuf, arch: String, supported: String },
    #[error("{path}: missing tensor '{name}'")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor '{name}' has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch { path: PathBuf, name: String, actual: Vec<i64>, expected: Vec<i64> },
    #[error("{path}: bad config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("unknown model '{name}': not a known name ({known}), a .gguf file or a checkpoint folder")]
    UnknownModel { name: String, known: String },
    #[error("device: {0}")]
    Device(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

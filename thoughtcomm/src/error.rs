//! The one error type of the crate. Messages are a single line that names the offending input and
//! the value or limit involved, because callers print them as the whole diagnostic.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ThoughtError {
    #[error("no agent states: {0}")]
    Empty(String),
    #[error("agent {agent} has {got} samples but agent 0 has {expected}: every agent needs one state per sample")]
    SampleCountMismatch { agent: usize, expected: i64, got: i64 },
    #[error("state dimension mismatch: {what} is {got}, expected {expected}")]
    DimensionMismatch { what: String, expected: i64, got: i64 },
    #[error("agent {agent} states contain a non-finite value (NaN or Inf) at sample {sample}, dimension {dim}")]
    NonFinite { agent: usize, sample: i64, dim: i64 },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("checkpoint {path}: {field} is {found} in the checkpoint but {expected} was asked for")]
    CheckpointMismatch { path: PathBuf, field: String, found: String, expected: String },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("language model: {0}")]
    Model(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T> = std::result::Result<T, ThoughtError>;

impl ThoughtError {
    /// A checkpoint at `path` whose `field` is `found` where `expected` was asked for.
    pub fn checkpoint_mismatch(path: &std::path::Path, field: &str, found: impl ToString, expected: impl ToString) -> Self {
        ThoughtError::CheckpointMismatch {
            path: path.to_path_buf(),
            field: field.into(),
            found: found.to_string(),
            expected: expected.to_string(),
        }
    }
}

/// The variant of `all` called `s`, or an error that lists the known names (the `FromStr` of the
/// crate's option enums, which command lines parse).
pub(crate) fn by_name<T: Copy>(what: &str, s: &str, all: &[T], name: fn(T) -> &'static str) -> Result<T> {
    all.iter().copied().find(|&v| name(v) == s).ok_or_else(|| {
        let known: Vec<_> = all.iter().map(|&v| name(v)).collect();
        ThoughtError::Config(format!("unknown {what} '{s}' (known: {})", known.join(", ")))
    })
}

//! Everything a call can fail with, and the one mapping from it to a gRPC status.
//!
//! | error | code |
//! | --- | --- |
//! | malformed request (`Invalid`, `BadRequest`, `UnknownModel`, `Tokenizer`) | INVALID_ARGUMENT |
//! | unknown agent id, thought pipeline, state id or prefix id | NOT_FOUND |
//! | model or thought pipeline name already loaded | ALREADY_EXISTS |
//! | thought pipeline that does not fit (checkpoints, models, hidden sizes) | INVALID_ARGUMENT |
//! | queue full | RESOURCE_EXHAUSTED |
//! | deadline passed | DEADLINE_EXCEEDED |
//! | shutting down | UNAVAILABLE |
//! | missing or wrong bearer token | UNAUTHENTICATED |
//! | model failed to load | per cause (see `load_code`) |
//! | engine failure | INTERNAL |
//!
//! Unknown agents are NOT_FOUND rather than INVALID_ARGUMENT: the request is well-formed but names
//! an agent that does not exist (never created, deleted, or the server restarted), which a client
//! can repair by creating the agent again.
use tonic::{Code, Status};

use crate::error::LoadError;
use crate::generate::GenerateError;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The engine's own validation (empty prompt, context overflow, bad sampling, prefix, capture).
    #[error(transparent)]
    Invalid(#[from] GenerateError),
    /// Any other malformed field; the message names the field, the value and the limit.
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown agent '{0}' (create it with CreateAgent; ListAgents shows the existing ones)")]
    UnknownAgent(String),
    #[error("unknown model '{name}' (loaded: {loaded})")]
    UnknownModel { name: String, loaded: String },
    #[error("model '{0}' is already loaded")]
    ModelExists(String),
    #[error("model '{model}': the queue is full ({limit} requests waiting, max_queue = {limit}); retry later")]
    QueueFull { model: String, limit: usize },
    #[error("deadline exceeded after {seconds:.3} s; the sequence was freed")]
    DeadlineExceeded { seconds: f64 },
    #[error("the server is shutting down and takes no new work")]
    ShuttingDown,
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("loading the model failed: {0}")]
    Load(#[from] LoadError),
    /// The tokenizer or chat template rejected the request's text or messages.
    #[error("{0}")]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("unknown thought pipeline '{name}' (loaded: {loaded}); load it with LoadThoughtPipeline")]
    UnknownPipeline { name: String, loaded: String },
    #[error("thought pipeline '{0}' is already loaded")]
    PipelineExists(String),
    #[error("unknown {what} '{id}' (ids come from Generate with thought_pipeline, or ComposeThoughts; the server keeps the latest 4096)")]
    UnknownThoughtId { what: &'static str, id: String },
    /// A pipeline that cannot be loaded or applied: the message names the file or the value.
    #[error("thought pipeline: {0}")]
    Thought(#[from] thoughtcomm::ThoughtError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServeError {
    pub fn code(&self) -> Code {
        match self {
            ServeError::Invalid(_) | ServeError::BadRequest(_) | ServeError::UnknownModel { .. } | ServeError::Tokenizer(_) => {
                Code::InvalidArgument
            }
            ServeError::UnknownAgent(_) | ServeError::UnknownPipeline { .. } | ServeError::UnknownThoughtId { .. } => Code::NotFound,
            ServeError::ModelExists(_) | ServeError::PipelineExists(_) => Code::AlreadyExists,
            ServeError::Thought(_) => Code::InvalidArgument,
            ServeError::QueueFull { .. } => Code::ResourceExhausted,
            ServeError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            ServeError::ShuttingDown => Code::Unavailable,
            ServeError::Unauthenticated(_) => Code::Unauthenticated,
            ServeError::Load(e) => load_code(e),
            ServeError::Internal(_) => Code::Internal,
        }
    }
}

/// A model argument that names nothing, or a device/dtype that does not parse or exist, is the
/// caller's mistake; a file that is missing is a precondition; anything else is internal.
fn load_code(e: &LoadError) -> Code {
    match e {
        LoadError::UnknownModel { .. } | LoadError::Device(_) => Code::InvalidArgument,
        LoadError::File { .. } => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

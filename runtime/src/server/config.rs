//! `runtime.toml`: what `tcomm serve` hosts and how. The smallest valid file is
//!
//! ```toml
//! bind = "127.0.0.1:50051"
//! [[models]]
//! name = "smollm2-135m"
//! ```
//!
//! Every other key has a default; an unknown key is an error that names it. `validate` checks
//! everything that can be checked without loading a model (`tcomm serve --check`).
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::engine::EngineConfig;
use crate::error::LoadError;

pub const DEFAULT_BIND: &str = "127.0.0.1:50051";
pub const DEFAULT_MAX_BATCH_SIZE: usize = 32;
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 65_536;
pub const DEFAULT_MAX_QUEUE: usize = 256;
pub const DEFAULT_SHUTDOWN_TIMEOUT_S: f64 = 30.0;

/// The whole server: where it listens, the models it loads at start, its bearer token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port` to listen on (default 127.0.0.1:50051).
    #[serde(default = "default_bind")]
    pub bind: String,
    /// The models loaded at start; more can be loaded later with the LoadModel call.
    pub models: Vec<ModelConfig>,
    /// When set, every RuntimeService call needs the metadata `authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// On SIGINT/SIGTERM, how long in-flight calls may take to finish before the server exits anyway.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_s: f64,
    /// Thought pipelines (folders written by `tcomm train`) loaded after the models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thought_pipelines: Vec<PipelineConfig>,
}

/// A thought pipeline to load at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The name calls use (default: the path as written).
    #[serde(default)]
    pub name: Option<String>,
    /// The folder with manifest.json.
    pub path: PathBuf,
}

impl PipelineConfig {
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.path.display().to_string())
    }
}

/// One model and the limits of its engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A known model name (`tcomm models`), a .gguf path or a checkpoint folder; agents refer to the
    /// model by this string.
    pub name: String,
    /// cpu (default), cuda, cuda:N or auto.
    #[serde(default = "default_device")]
    pub device: String,
    /// auto (default: f32 on the CPU, bf16 on CUDA), f32, bf16 or f16.
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// dense (default) or int8: how the projections' weights are stored (see `WeightFormat`).
    #[serde(default = "default_weights")]
    pub weights: String,
    /// Most sequences decoded together in one step.
    #[serde(default = "default_max_batch_size")]
    pub max_batch_size: usize,
    /// Most positions (prefix + prompt + max_new_tokens) summed over the running sequences.
    #[serde(default = "default_max_batch_tokens")]
    pub max_batch_tokens: usize,
    /// Most requests waiting for a batch slot; past it calls get RESOURCE_EXHAUSTED at once.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
}

fn default_bind() -> String {
    DEFAULT_BIND.to_string()
}
fn default_shutdown_timeout() -> f64 {
    DEFAULT_SHUTDOWN_TIMEOUT_S
}
fn default_device() -> String {
    "cpu".to_string()
}
fn default_dtype() -> String {
    "auto".to_string()
}
fn default_weights() -> String {
    crate::device::WeightFormat::Dense.name().to_string()
}
fn default_max_batch_size() -> usize {
    DEFAULT_MAX_BATCH_SIZE
}
fn default_max_batch_tokens() -> usize {
    DEFAULT_MAX_BATCH_TOKENS
}
fn default_max_queue() -> usize {
    DEFAULT_MAX_QUEUE
}

/// A config that cannot be read or is not valid. One line, naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl ModelConfig {
    /// A model with every limit at its default.
    pub fn new(name: impl Into<String>) -> Self {
        ModelConfig {
            name: name.into(),
            device: default_device(),
            dtype: default_dtype(),
            weights: default_weights(),
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            max_queue: DEFAULT_MAX_QUEUE,
        }
    }

    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig { max_batch_size: self.max_batch_size, max_batch_tokens: self.max_batch_tokens }
    }

    /// The device and compute dtype (this asks libtorch whether CUDA devices exist).
    pub fn device_and_kind(&self) -> Result<(Device, Kind), LoadError> {
        let device = crate::device::parse_device(&self.device)?;
        Ok((device, crate::device::parse_kind(&self.dtype, device)?))
    }

    /// Loads the model (blocking) on its device, in its dtype, with its weight format.
    pub fn load_model(&self) -> Result<crate::loader::Model, LoadError> {
        let (device, kind) = self.device_and_kind()?;
        let format = crate::device::parse_weights(&self.weights)?;
        let mut model = crate::loader::load(&self.name, device, kind)?;
        model.network.store_weights(format)?;
        Ok(model)
    }

    /// Checks what can be checked without loading: limits, device and dtype syntax, and that the
    /// model argument points at something (a known, downloaded model, a file or a folder).
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.trim().is_empty() {
            return Err("models: `name` must not be empty".into());
        }
        check_device_syntax(&self.device).map_err(|m| format!("model '{name}': {m}"))?;
        crate::device::parse_kind(&self.dtype, Device::Cpu).map_err(|e| format!("model '{name}': {e}"))?;
        crate::device::parse_weights(&self.weights).map_err(|e| format!("model '{name}': {e}"))?;
        for (key, value) in [
            ("max_batch_size", self.max_batch_size),
            ("max_batch_tokens", self.max_batch_tokens),
            ("max_queue", self.max_queue),
        ] {
            if value == 0 {
                return Err(format!("model '{name}': `{key}` must be at least 1, got 0"));
            }
        }
        crate::loader::resolve(name).map_err(|e| format!("model '{name}': {e}"))?;
        Ok(())
    }
}

/// `cpu`, `auto`, `cuda`, `gpu` or `cuda:N`, without asking libtorch what exists.
fn check_device_syntax(spec: &str) -> Result<(), String> {
    let spec = spec.trim().to_ascii_lowercase();
    let ok = matches!(spec.as_str(), "cpu" | "auto" | "cuda" | "gpu")
        || spec.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!("bad device '{spec}': expected cpu, cuda, cuda:N or auto"))
    }
}

impl ServerConfig {
    /// A config for `models` with every other key at its default.
    pub fn new(models: Vec<ModelConfig>) -> Self {
        ServerConfig {
            bind: default_bind(),
            models,
            auth_token: None,
            shutdown_timeout_s: DEFAULT_SHUTDOWN_TIMEOUT_S,
            thought_pipelines: Vec::new(),
        }
    }

    /// Reads and parses a file (unknown keys are errors); does not `validate`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_toml_str(&text).map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })
    }

    /// Parses TOML text; the error names the bad or unknown key and where it is.
    pub fn from_toml_str(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e: toml::de::Error| match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: {}", e.message().trim())
            }
            None => e.message().trim().to_string(),
        })
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::from_file(path)?;
        config.validate().map_err(|message| ConfigError::Invalid { path: path.to_path_buf(), message })?;
        Ok(config)
    }

    /// Everything short of loading the models.
    pub fn validate(&self) -> Result<(), String> {
        self.bind_addr()?;
        if self.models.is_empty() {
            return Err("at least one [[models]] entry is needed".into());
        }
        for (i, model) in self.models.iter().enumerate() {
            model.validate()?;
            if self.models[..i].iter().any(|m| m.name == model.name) {
                return Err(format!("model '{}' is listed twice", model.name));
            }
        }
        for (i, p) in self.thought_pipelines.iter().enumerate() {
            if !p.path.join(thoughtcomm::pipeline::MANIFEST_FILE).is_file() {
                return Err(format!("thought pipeline '{}': {} has no {}", p.name(), p.path.display(), thoughtcomm::pipeline::MANIFEST_FILE));
            }
            if self.thought_pipelines[..i].iter().any(|q| q.name() == p.name()) {
                return Err(format!("thought pipeline '{}' is listed twice", p.name()));
            }
        }
        if self.auth_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err("`auth_token` must not be empty (leave the key out to disable authentication)".into());
        }
        if !(self.shutdown_timeout_s.is_finite() && self.shutdown_timeout_s >= 0.0) {
            return Err(format!("`shutdown_timeout_s` must be a number >= 0, got {}", self.shutdown_timeout_s));
        }
        Ok(())
    }

    /// The address `bind` names (a host name is resolved).
    pub fn bind_addr(&self) -> Result<SocketAddr, String> {
        self.bind
            .to_socket_addrs()
            .map_err(|e| format!("`bind` = '{}': {e} (expected host:port)", self.bind))?
            .next()
            .ok_or_else(|| format!("`bind` = '{}' resolves to no address", self.bind))
    }

    pub fn shutdown_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.shutdown_timeout_s.clamp(0.0, 1e9))
    }
}

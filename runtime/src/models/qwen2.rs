//! Qwen2 / Qwen2.5. Matches transformers' `models/qwen2/modeling_qwen2.py`: llama with biases
//! on the q, k and v projections (always present) and no q/k permutation in GGUF files.
use serde::Deserialize;

use super::config::CommonConfig;
use super::spec::ModelSpec;
use crate::gguf::{GgufError, GgufFile};

#[derive(Debug, Clone, Deserialize)]
pub struct Qwen2Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    #[serde(default)]
    pub use_sliding_window: bool,
}

impl Qwen2Config {
    pub fn from_gguf(g: &GgufFile) -> Result<Self, GgufError> {
        Ok(Qwen2Config { common: CommonConfig::from_gguf(g, "qwen2")?, use_sliding_window: false })
    }

    pub fn into_spec(self) -> Result<ModelSpec, String> {
        if self.use_sliding_window {
            return Err("use_sliding_window = true is not supported for qwen2".into());
        }
        let mut spec = super::base_spec("qwen2", &self.common, 10_000.0, None)?;
        spec.qkv_bias = true;
        Ok(spec)
    }
}

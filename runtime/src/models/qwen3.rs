//! Qwen3 (dense). Matches transformers' `models/qwen3/modeling_qwen3.py`: llama plus an RMSNorm
//! over each head of q and k before rope (QK-norm), head_dim independent of hidden/heads.
use serde::Deserialize;

use super::config::CommonConfig;
use super::spec::ModelSpec;
use crate::gguf::{GgufError, GgufFile};

#[derive(Debug, Clone, Deserialize)]
pub struct Qwen3Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    #[serde(default)]
    pub use_sliding_window: bool,
}

impl Qwen3Config {
    pub fn from_gguf(g: &GgufFile) -> Result<Self, GgufError> {
        let mut common = CommonConfig::from_gguf(g, "qwen3")?;
        common.head_dim = g.get("qwen3.attention.key_length").and_then(|v| v.as_u64()).map(|v| v as i64);
        Ok(Qwen3Config { common, use_sliding_window: false })
    }

    pub fn into_spec(mut self) -> Result<ModelSpec, String> {
        if self.use_sliding_window {
            return Err("use_sliding_window = true is not supported for qwen3".into());
        }
        // Qwen3Config's default head_dim is 128, not hidden / heads.
        self.common.head_dim = self.common.head_dim.or(Some(128));
        let mut spec = super::base_spec("qwen3", &self.common, 10_000.0, None)?;
        spec.qkv_bias = self.common.attention_bias.unwrap_or(false);
        spec.qk_norm = true;
        Ok(spec)
    }
}

//! Llama (SmolLM2, Llama 3 with its rope scaling). Matches transformers'
//! `models/llama/modeling_llama.py`: pre-norm decoder, SiLU-gated MLP, rotate-half rope.
//! GGUF files of this architecture carry q/k rows permuted for llama.cpp; the loader undoes it.
use serde::Deserialize;

use super::config::CommonConfig;
use super::spec::ModelSpec;
use crate::gguf::{GgufError, GgufFile};

#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    #[serde(flatten)]
    pub common: CommonConfig,
}

impl LlamaConfig {
    pub fn from_gguf(g: &GgufFile) -> Result<Self, GgufError> {
        let mut common = CommonConfig::from_gguf(g, "llama")?;
        // transformers maps llama's rope.dimension_count to head_dim.
        common.head_dim = g.get("llama.rope.dimension_count").and_then(|v| v.as_u64()).map(|v| v as i64);
        Ok(LlamaConfig { common })
    }

    pub fn into_spec(self) -> Result<ModelSpec, String> {
        let mut spec = super::base_spec("llama", &self.common, 10_000.0, None)?;
        spec.qkv_bias = self.common.attention_bias.unwrap_or(false);
        spec.gguf_permuted_qk = true;
        Ok(spec)
    }
}

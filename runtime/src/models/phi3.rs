//! Phi-3 / Phi-4-mini. Matches transformers' `models/phi3/modeling_phi3.py`: llama with fused
//! `qkv_proj` and `gate_up_proj`, partial rotary embeddings and "longrope" scaling. Loaded from
//! Hugging Face checkpoints (no GGUF path: llama.cpp stores longrope factors as tensors).
use serde::Deserialize;

use super::config::CommonConfig;
use super::spec::ModelSpec;

#[derive(Debug, Clone, Deserialize)]
pub struct Phi3Config {
    #[serde(flatten)]
    pub common: CommonConfig,
}

impl Phi3Config {
    pub fn into_spec(self) -> Result<ModelSpec, String> {
        let mut spec = super::base_spec("phi3", &self.common, 10_000.0, None)?;
        spec.fused_projections = true;
        spec.qkv_bias = self.common.attention_bias.unwrap_or(false);
        Ok(spec)
    }
}

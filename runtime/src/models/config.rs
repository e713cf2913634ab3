//! Fields every supported `config.json` shares, and the rotary-embedding settings, which
//! checkpoints spell three ways: `rope_theta` + `rope_scaling` (transformers 4.x),
//! `rope_parameters` (transformers 5), or nested `rope_parameters` per layer type (gemma3).
use serde::Deserialize;
use serde_json::Value;

use super::spec::{RopeScaling, RopeSpec};
use crate::gguf::GgufFile;

#[derive(Debug, Clone, Deserialize)]
pub struct CommonConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: Option<i64>,
    pub head_dim: Option<i64>,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: i64,
    pub original_max_position_embeddings: Option<i64>,
    pub tie_word_embeddings: Option<bool>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<Value>,
    pub rope_parameters: Option<Value>,
    pub partial_rotary_factor: Option<f64>,
    pub hidden_act: Option<String>,
    pub hidden_activation: Option<String>,
    pub attention_bias: Option<bool>,
}

fn default_rms_eps() -> f64 {
    1e-6
}

fn default_max_positions() -> i64 {
    2048
}

impl CommonConfig {
    pub fn num_kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> i64 {
        self.head_dim.unwrap_or(if self.num_attention_heads > 0 { self.hidden_size / self.num_attention_heads } else { 0 })
    }

    /// Rope settings of the layers of `layer_type` (None: the single global rope).
    pub fn rope(&self, layer_type: Option<&str>, default_theta: f64) -> Result<RopeSpec, String> {
        let params = match (&self.rope_parameters, layer_type) {
            (Some(Value::Object(map)), Some(kind)) if map.get(kind).is_some_and(Value::is_object) => map.get(kind),
            (Some(p @ Value::Object(_)), _) => Some(p),
            _ => self.rope_scaling.as_ref().filter(|v| v.is_object()),
        };
        let get = |key: &str| params.and_then(|p| p.get(key));
        let get_f64 = |key: &str| get(key).and_then(Value::as_f64);
        let theta = get_f64("rope_theta").or(self.rope_theta).unwrap_or(default_theta);
        let partial = get_f64("partial_rotary_factor").or(self.partial_rotary_factor).unwrap_or(1.0);
        let rotary_dim = (self.head_dim() as f64 * partial) as i64;
        let rope_type = get("rope_type").or_else(|| get("type")).and_then(Value::as_str).unwrap_or("default");
        let need = |key: &str| get_f64(key).ok_or_else(|| format!("rope type '{rope_type}' needs '{key}'"));
        let original = get("original_max_position_embeddings")
            .and_then(Value::as_i64)
            .or(self.original_max_position_embeddings)
            .unwrap_or(self.max_position_embeddings);
        let scaling = match rope_type {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: need("factor")? },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position_embeddings: original as f64,
            },
            "longrope" | "su" => {
                let list = |key: &str| -> Result<Vec<f64>, String> {
                    get(key)
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_f64).collect())
                        .ok_or_else(|| format!("rope type 'longrope' needs the list '{key}'"))
                };
                // The original context (the phi3 exception of transformers: the top-level field wins).
                let original = self.original_max_position_embeddings.unwrap_or(original);
                let factor = get_f64("factor").unwrap_or(self.max_position_embeddings as f64 / original as f64);
                let attention_factor = match get_f64("attention_factor") {
                    Some(a) => a,
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
                };
                RopeScaling::LongRope {
                    short_factor: list("short_factor")?,
                    long_factor: list("long_factor")?,
                    original_max_position_embeddings: original,
                    attention_factor,
                }
            }
            other => return Err(format!("unsupported rope type '{other}' (supported: default, linear, llama3, longrope)")),
        };
        Ok(RopeSpec { theta, rotary_dim, scaling })
    }

    /// The llama.cpp metadata keys that transformers maps into a config (`GGUF_CONFIG_MAPPING`).
    pub fn from_gguf(g: &GgufFile, arch: &str) -> Result<Self, crate::gguf::GgufError> {
        let key = |k: &str| format!("{arch}.{k}");
        let opt_u = |k: &str| g.get(&key(k)).and_then(|v| v.as_u64()).map(|v| v as i64);
        let vocab_size = match g.get(&key("vocab_size")).and_then(|v| v.as_u64()) {
            Some(v) => v as i64,
            None => g.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map_or(0, |a| a.len() as i64),
        };
        Ok(CommonConfig {
            vocab_size,
            hidden_size: g.get_u64(&key("embedding_length"))? as i64,
            intermediate_size: g.get_u64(&key("feed_forward_length"))? as i64,
            num_hidden_layers: g.get_u64(&key("block_count"))? as i64,
            num_attention_heads: g.get_u64(&key("attention.head_count"))? as i64,
            num_key_value_heads: opt_u("attention.head_count_kv"),
            head_dim: None,
            rms_norm_eps: g.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
            max_position_embeddings: opt_u("context_length").unwrap_or(default_max_positions()),
            original_max_position_embeddings: None,
            tie_word_embeddings: Some(g.tensor_info("output.weight").is_none()),
            rope_theta: g.get(&key("rope.freq_base")).and_then(|v| v.as_f64()),
            rope_scaling: None,
            rope_parameters: None,
            partial_rotary_factor: None,
            hidden_act: None,
            hidden_activation: None,
            attention_bias: None,
        })
    }
}

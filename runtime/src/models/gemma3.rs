//! Gemma 3 (text). Matches transformers' `models/gemma3/modeling_gemma3.py`: embeddings scaled
//! by sqrt(hidden); RMSNorm as `(1 + w) * x_hat` in f32; sandwich norms around attention and MLP;
//! QK-norm; GELU(tanh) MLP; attention scaled by `query_pre_attn_scalar^-0.5`; five sliding-window
//! layers (local rope base) to one global layer (global rope base, optional scaling).
use serde::Deserialize;

use super::config::CommonConfig;
use super::spec::{Activation, ModelSpec, NormPlacement, NormStyle};
use crate::gguf::{GgufError, GgufFile};

#[derive(Debug, Clone, Deserialize)]
pub struct Gemma3Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    #[serde(default = "default_query_pre_attn_scalar")]
    pub query_pre_attn_scalar: f64,
    #[serde(default = "default_sliding_window")]
    pub sliding_window: Option<i64>,
    pub layer_types: Option<Vec<String>>,
    pub sliding_window_pattern: Option<i64>,
    pub rope_local_base_freq: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    pub attn_logit_softcapping: Option<f64>,
}

fn default_query_pre_attn_scalar() -> f64 {
    256.0
}

fn default_sliding_window() -> Option<i64> {
    Some(4096)
}

impl Gemma3Config {
    pub fn from_gguf(g: &GgufFile) -> Result<Self, GgufError> {
        let mut common = CommonConfig::from_gguf(g, "gemma3")?;
        common.head_dim = g.get("gemma3.attention.key_length").and_then(|v| v.as_u64()).map(|v| v as i64);
        // Gemma3TextConfig's defaults where the GGUF metadata is silent.
        common.head_dim = common.head_dim.or(Some(256));
        Ok(Gemma3Config {
            common,
            query_pre_attn_scalar: default_query_pre_attn_scalar(),
            sliding_window: g.get("gemma3.attention.sliding_window").and_then(|v| v.as_u64()).map(|v| v as i64).or(Some(4096)),
            layer_types: None,
            sliding_window_pattern: None,
            rope_local_base_freq: None,
            final_logit_softcapping: None,
            attn_logit_softcapping: None,
        })
    }

    pub fn into_spec(mut self) -> Result<ModelSpec, String> {
        if self.attn_logit_softcapping.is_some() {
            return Err("attn_logit_softcapping is not supported for gemma3".into());
        }
        self.common.head_dim = self.common.head_dim.or(Some(256));
        self.common.tie_word_embeddings = self.common.tie_word_embeddings.or(Some(true));
        let n = self.common.num_hidden_layers;
        let pattern = self.sliding_window_pattern.unwrap_or(6).max(1);
        let layer_types = self.layer_types.clone().unwrap_or_else(|| {
            (0..n)
                .map(|i| if (i + 1) % pattern != 0 { "sliding_attention" } else { "full_attention" }.to_string())
                .collect()
        });
        let mut spec = super::base_spec("gemma3_text", &self.common, 1_000_000.0, Some("full_attention"))?;
        spec.sliding_windows = layer_types
            .iter()
            .map(|t| match t.as_str() {
                "sliding_attention" => Ok(self.sliding_window),
                "full_attention" => Ok(None),
                other => Err(format!("unknown layer type '{other}'")),
            })
            .collect::<Result<_, _>>()?;
        let mut local = self.common.rope(Some("sliding_attention"), self.rope_local_base_freq.unwrap_or(10_000.0))?;
        if self.common.rope_parameters.is_none() {
            // Old-style configs: the local layers use rope_local_base_freq and no scaling.
            local.theta = self.rope_local_base_freq.unwrap_or(10_000.0);
            local.scaling = super::spec::RopeScaling::None;
        }
        spec.local_rope = Some(local);
        spec.attn_scale = self.query_pre_attn_scalar.powf(-0.5);
        spec.qk_norm = true;
        spec.norm_style = NormStyle::GemmaOffset;
        spec.norm_placement = NormPlacement::Sandwich;
        spec.activation = Activation::GeluTanh;
        spec.embed_scale = Some((self.common.hidden_size as f64).sqrt());
        spec.final_logit_softcap = self.final_logit_softcapping;
        spec.qkv_bias = self.common.attention_bias.unwrap_or(false);
        Ok(spec)
    }
}

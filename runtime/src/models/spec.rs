//! The validated, architecture-independent description of a decoder-only transformer. Each
//! architecture file turns its own config (config.json or GGUF metadata) into a `ModelSpec`;
//! `transformer.rs` builds and runs the network from it.

/// How a RMSNorm applies its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormStyle {
    /// `w * x_hat` (llama, qwen, phi3).
    Plain,
    /// `(1 + w) * x_hat`, computed in f32 (gemma). GGUF files store `1 + w`.
    GemmaOffset,
}

/// Where the norms sit in a decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPlacement {
    /// `h = x + attn(n1(x)); y = h + mlp(n2(h))`.
    Pre,
    /// Gemma's sandwich: `h = x + n_post(attn(n_in(x))); y = h + n_post_ffw(mlp(n_pre_ffw(h)))`.
    Sandwich,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    GeluTanh,
}

/// Rotary embedding frequencies, as transformers' `ROPE_INIT_FUNCTIONS` compute them.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    Linear { factor: f64 },
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
    /// Phi-3/Phi-4 "longrope": per-frequency factors, the long ones once a sequence passes the
    /// original context, and a constant attention scaling of cos/sin.
    LongRope { short_factor: Vec<f64>, long_factor: Vec<f64>, original_max_position_embeddings: i64, attention_factor: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    pub theta: f64,
    /// Number of leading head dimensions that are rotated (phi3's partial rotary).
    pub rotary_dim: i64,
    pub scaling: RopeScaling,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// transformers' `model_type` (llama, qwen2, qwen3, gemma3_text, phi3).
    pub architecture: String,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    pub num_kv_heads: i64,
    pub head_dim: i64,
    pub rms_eps: f64,
    pub max_position_embeddings: i64,
    /// Softmax scale of attention scores.
    pub attn_scale: f64,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    /// q, k and v in one `qkv_proj` matrix; gate and up in one `gate_up_proj` (phi3).
    pub fused_projections: bool,
    pub norm_style: NormStyle,
    pub norm_placement: NormPlacement,
    pub activation: Activation,
    /// Input embeddings are multiplied by this (gemma: sqrt(hidden)).
    pub embed_scale: Option<f64>,
    pub tie_embeddings: bool,
    pub final_logit_softcap: Option<f64>,
    /// Rope of the full-attention layers.
    pub rope: RopeSpec,
    /// Rope of the sliding-window layers when it differs (gemma3's local base frequency).
    pub local_rope: Option<RopeSpec>,
    /// Per layer: `Some(w)` for sliding-window attention over the last `w` positions.
    pub sliding_windows: Vec<Option<i64>>,
    /// GGUF files of the llama architecture store q/k rows permuted for llama.cpp's rope; the
    /// loader undoes it exactly as transformers does.
    pub gguf_permuted_qk: bool,
}

impl ModelSpec {
    /// Checks the relations the network relies on, so that loading fails with a message rather
    /// than a libtorch shape error mid-forward.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, value) in positive {
            if value <= 0 {
                return Err(format!("{name} must be positive, got {value}"));
            }
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.sliding_windows.len() != self.num_layers as usize {
            return Err(format!("{} layer types given for {} layers", self.sliding_windows.len(), self.num_layers));
        }
        for rope in std::iter::once(&self.rope).chain(self.local_rope.as_ref()) {
            if rope.rotary_dim <= 0 || rope.rotary_dim > self.head_dim || rope.rotary_dim % 2 != 0 {
                return Err(format!("rotary dimension {} does not fit head_dim {}", rope.rotary_dim, self.head_dim));
            }
            if let RopeScaling::LongRope { short_factor, long_factor, .. } = &rope.scaling {
                let half = (rope.rotary_dim / 2) as usize;
                if short_factor.len() != half || long_factor.len() != half {
                    return Err(format!(
                        "longrope factors have lengths {} and {}, expected {half}",
                        short_factor.len(),
                        long_factor.len()
                    ));
                }
            }
        }
        Ok(())
    }
}

//! Supported architectures, one file each, and the dispatch from a checkpoint's config (or a
//! GGUF file's metadata) to a `ModelSpec`.
pub mod config;
pub mod gemma3;
pub mod kv_cache;
pub mod layers;
pub mod llama;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod row_split;
pub mod spec;
pub mod transformer;

use std::path::Path;

pub use spec::ModelSpec;
pub use kv_cache::KvCache;
pub use transformer::Transformer;

use crate::error::LoadError;
use crate::gguf::GgufFile;
use config::CommonConfig;
use spec::{Activation, NormPlacement, NormStyle};

/// `model_type` values of config.json that we run.
pub const CONFIG_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "gemma3_text", "phi3"];
/// `general.architecture` values of GGUF files that we run.
pub const GGUF_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "gemma3"];

/// The llama-shaped defaults that every architecture starts from.
fn base_spec(architecture: &str, c: &CommonConfig, default_theta: f64, rope_layer: Option<&str>) -> Result<ModelSpec, String> {
    let activation = c.hidden_activation.as_deref().or(c.hidden_act.as_deref()).unwrap_or("silu");
    let activation = match activation {
        "silu" | "swish" => Activation::Silu,
        "gelu_pytorch_tanh" | "gelu_tanh" => Activation::GeluTanh,
        other => return Err(format!("unsupported activation '{other}'")),
    };
    let head_dim = c.head_dim();
    Ok(ModelSpec {
        architecture: architecture.to_string(),
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        num_layers: c.num_hidden_layers,
        num_heads: c.num_attention_heads,
        num_kv_heads: c.num_kv_heads(),
        head_dim,
        rms_eps: c.rms_norm_eps,
        max_position_embeddings: c.max_position_embeddings,
        attn_scale: if head_dim > 0 { (head_dim as f64).powf(-0.5) } else { 1.0 },
        qkv_bias: false,
        qk_norm: false,
        fused_projections: false,
        norm_style: NormStyle::Plain,
        norm_placement: NormPlacement::Pre,
        activation,
        embed_scale: None,
        tie_embeddings: c.tie_word_embeddings.unwrap_or(false),
        final_logit_softcap: None,
        rope: c.rope(rope_layer, default_theta)?,
        local_rope: None,
        sliding_windows: vec![None; c.num_hidden_layers.max(0) as usize],
        gguf_permuted_qk: false,
    })
}

/// Reads `config.json` of a Hugging Face checkpoint folder.
pub fn spec_from_config_dir(dir: &Path) -> Result<ModelSpec, LoadError> {
    let path = dir.join("config.json");
    let text = crate::weights::read_to_string(&path)?;
    let bad = |message: String| LoadError::Config { path: path.clone(), message };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let model_type = value.get("model_type").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let parse = |e: serde_json::Error| bad(e.to_string());
    let spec = match model_type.as_str() {
        "llama" => serde_json::from_value::<llama::LlamaConfig>(value).map_err(parse)?.into_spec(),
        "qwen2" => serde_json::from_value::<qwen2::Qwen2Config>(value).map_err(parse)?.into_spec(),
        "qwen3" => serde_json::from_value::<qwen3::Qwen3Config>(value).map_err(parse)?.into_spec(),
        "gemma3_text" => serde_json::from_value::<gemma3::Gemma3Config>(value).map_err(parse)?.into_spec(),
        "phi3" => serde_json::from_value::<phi3::Phi3Config>(value).map_err(parse)?.into_spec(),
        other => {
            return Err(LoadError::UnsupportedArchitecture {
                path,
                arch: other.to_string(),
                supported: CONFIG_ARCHITECTURES.join(", "),
            })
        }
    };
    spec.map_err(bad)
}

/// Reads the architecture hyper-parameters from a GGUF file's metadata.
pub fn spec_from_gguf(g: &GgufFile) -> Result<ModelSpec, LoadError> {
    let arch = g.architecture()?.to_string();
    let spec = match arch.as_str() {
        "llama" => llama::LlamaConfig::from_gguf(g)?.into_spec(),
        "qwen2" => qwen2::Qwen2Config::from_gguf(g)?.into_spec(),
        "qwen3" => qwen3::Qwen3Config::from_gguf(g)?.into_spec(),
        "gemma3" => gemma3::Gemma3Config::from_gguf(g)?.into_spec(),
        other => {
            return Err(LoadError::UnsupportedArchitecture {
                path: g.path().to_path_buf(),
                arch: other.to_string(),
                supported: GGUF_ARCHITECTURES.join(", "),
            })
        }
    };
    spec.map_err(|message| LoadError::Config { path: g.path().to_path_buf(), message })
}

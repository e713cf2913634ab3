//! What a caller asks of the engine for one sequence, and what it gets back.
use tch::Tensor;

use crate::generate::{FinishReason, GenerateError, SamplingParams};
use crate::models::Transformer;

/// Learned context placed before a sequence's prompt.
pub enum Prefix {
    /// `m` vectors `[m, hidden]` in input-embedding space, at positions `0..m`; the prompt
    /// follows at positions `m..`. Gradients flow into this tensor when it requires them.
    Embeddings(Tensor),
    /// Prefix-tuning style: per layer, keys and values `[kv_heads, m, head_dim]` that every
    /// prompt token attends to (stored as given, without rope); the prompt starts at position m.
    KeyValues(Vec<(Tensor, Tensor)>),
}

impl Prefix {
    pub fn len(&self) -> i64 {
        // `get`, not indexing: `Engine::validate` calls this before `validate` has checked the
        // shapes, and a 0-d embedding tensor or a 1-d key tensor must be refused, not panic.
        match self {
            Prefix::Embeddings(e) => e.size().first().copied().unwrap_or(0),
            Prefix::KeyValues(kv) => kv.first().and_then(|(k, _)| k.size().get(1).copied()).unwrap_or(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks shape, dtype and values against the network before anything runs.
    pub fn validate(&self, net: &Transformer) -> Result<(), GenerateError> {
        let spec = net.spec();
        let bad = |m: String| Err(GenerateError::BadPrefix(m));
        let check_values = |t: &Tensor, what: &str| -> Result<(), GenerateError> {
            if !t.is_floating_point() {
                return Err(GenerateError::BadPrefix(format!("{what} must be floating point, got {:?}", t.kind())));
            }
            let finite = t.isfinite().all().int64_value(&[]) != 0;
            if finite {
                Ok(())
            } else {
                Err(GenerateError::BadPrefix(format!("{what} contains NaN or Inf")))
            }
        };
        match self {
            Prefix::Embeddings(e) => {
                let size = e.size();
                if size.len() != 2 || size[1] != spec.hidden_size || size[0] < 1 {
                    return bad(format!("prefix embeddings must have shape [m >= 1, {}], got {size:?}", spec.hidden_size));
                }
                check_values(e, "prefix embeddings")
            }
            Prefix::KeyValues(kv) => {
                if kv.len() as i64 != spec.num_layers {
                    return bad(format!("key/value prefix has {} layers, the model has {}", kv.len(), spec.num_layers));
                }
                let m = self.len();
                let want = [spec.num_kv_heads, m, spec.head_dim];
                for (l, (k, v)) in kv.iter().enumerate() {
                    if m < 1 || k.size() != want || v.size() != want {
                        return bad(format!("layer {l}: key/value prefix shapes {:?}/{:?}, expected {want:?}", k.size(), v.size()));
                    }
                    check_values(k, "prefix keys")?;
                    check_values(v, "prefix values")?;
                }
                Ok(())
            }
        }
    }
}

/// Where along a sequence hidden states are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapturePoint {
    /// The state at the last prompt token (what produced the first generated token).
    LastPromptToken,
    /// The state at the last generated token (one extra forward step feeds it).
    LastGeneratedToken,
    /// The mean of the states at every generated token.
    MeanGenerated,
}

/// Which hidden states to return. Layers use transformers' `output_hidden_states` numbering:
/// 0 = embeddings, l = output of layer l, L = final-normed output (the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSpec {
    pub layers: Vec<usize>,
    pub points: Vec<CapturePoint>,
}

pub struct SequenceRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub prefix: Option<Prefix>,
    pub capture: Option<CaptureSpec>,
}

impl SequenceRequest {
    pub fn new(prompt: Vec<u32>, params: SamplingParams) -> Self {
        SequenceRequest { prompt, params, prefix: None, capture: None }
    }

    /// Total positions this sequence may occupy (prefix + prompt + new tokens).
    pub fn reserved_positions(&self) -> usize {
        self.prefix.as_ref().map_or(0, |p| p.len() as usize) + self.prompt.len() + self.params.max_new_tokens
    }
}

/// Captured hidden states: for each requested point, a `[layers, hidden]` f32 tensor on the
/// CPU, rows in the order of `CaptureSpec::layers`.
pub type CapturedStates = Vec<(CapturePoint, Tensor)>;

pub struct SequenceOutput {
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    pub hidden_states: CapturedStates,
    pub time_to_first_token: std::time::Duration,
    pub total_time: std::time::Duration,
}

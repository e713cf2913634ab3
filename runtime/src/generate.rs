//! Token generation for one sequence: greedy or sampled (temperature, top-k, top-p, seed),
//! stopping on end-of-sequence tokens or a token budget. Batched generation across agents
//! builds on this in the engine issue (#4).
use rand::Rng;
use tch::{Kind, Tensor};

use crate::engine::{Engine, EngineConfig, SequenceRequest};
use crate::models::Transformer;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 selects greedy decoding (the argmax, as transformers' `do_sample=False`).
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = all).
    pub top_p: f64,
    pub seed: u64,
    pub max_new_tokens: usize,
    /// Generation ends after emitting one of these (the token is kept in the output).
    pub stop_token_ids: Vec<u32>,
    /// Generation ends once the decoded text contains one of these (the tokens that complete
    /// it are kept; callers cut the text). Needs an engine with a tokenizer.
    pub stop_strings: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            max_new_tokens: 256,
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GenerateError {
    #[error("empty prompt: at least one token is needed")]
    EmptyPrompt,
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfVocab { id: u32, vocab: i64 },
    #[error("prompt of {prompt} tokens plus max_new_tokens {max_new} exceeds the context of {context} positions")]
    ContextOverflow { prompt: usize, max_new: usize, context: i64 },
    #[error("invalid sampling parameter: {0}")]
    BadParameter(String),
    #[error("invalid prefix: {0}")]
    BadPrefix(String),
    #[error("invalid capture request: {0}")]
    BadCapture(String),
    #[error("request needs {needed} batch positions but the engine allows {limit} (max_batch_tokens)")]
    OverBatchBudget { needed: usize, limit: usize },
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), GenerateError> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(GenerateError::BadParameter(format!("temperature must be >= 0, got {}", self.temperature)));
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return Err(GenerateError::BadParameter("stop strings must not be empty".into()));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(GenerateError::BadParameter(format!("top_p must be in (0, 1], got {}", self.top_p)));
        }
        Ok(())
    }
}

/// Checks a prompt against the model before any compute.
pub fn validate_prompt(net: &Transformer, prompt: &[u32], max_new_tokens: usize) -> Result<(), GenerateError> {
    let spec = net.spec();
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    if let Some(&id) = prompt.iter().find(|&&id| i64::from(id) >= spec.vocab_size) {
        return Err(GenerateError::TokenOutOfVocab { id, vocab: spec.vocab_size });
    }
    if (prompt.len() + max_new_tokens) as i64 > spec.max_position_embeddings {
        return Err(GenerateError::ContextOverflow {
            prompt: prompt.len(),
            max_new: max_new_tokens,
            context: spec.max_position_embeddings,
        });
    }
    Ok(())
}

/// Logits of the last position after running `ids` (a whole prompt, no cache reuse).
pub fn last_logits(net: &Transformer, ids: &[u32]) -> Result<Tensor, GenerateError> {
    validate_prompt(net, ids, 0)?;
    let _guard = tch::no_grad_guard();
    let input = ids_tensor(net, ids);
    let positions = Tensor::arange(ids.len() as i64, (Kind::Int64, net.device())).unsqueeze(0);
    let mut cache = net.new_cache();
    let (hidden, _) = net.forward_embeds(&net.embed(&input), &positions, &mut cache, &[]);
    Ok(net.logits(&hidden.select(1, -1).squeeze_dim(0)))
}

/// Generates up to `params.max_new_tokens` tokens after `prompt` (the engine with one sequence).
pub fn generate(net: &Transformer, prompt: &[u32], params: &SamplingParams) -> Result<Generation, GenerateError> {
    generate_request(net, SequenceRequest::new(prompt.to_vec(), params.clone()))
}

/// Runs one request (prefix, capture and all) alone through the engine.
pub fn generate_request(net: &Transformer, request: SequenceRequest) -> Result<Generation, GenerateError> {
    let mut engine = Engine::new(net, EngineConfig { max_batch_size: 1, max_batch_tokens: usize::MAX });
    engine.add(request)?;
    let (_, out) = engine.run_to_completion().pop().ok_or(GenerateError::EmptyPrompt)?;
    Ok(Generation { tokens: out.tokens, finish: out.finish })
}

fn ids_tensor(net: &Transformer, ids: &[u32]) -> Tensor {
    let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    Tensor::from_slice(&ids).to_device(net.device()).unsqueeze(0)
}

/// Chooses the next token from f32 logits `[vocab]`.
pub fn pick_token(logits: &Tensor, params: &SamplingParams, rng: &mut impl Rng) -> u32 {
    if params.temperature == 0.0 {
        return logits.argmax(-1, false).int64_value(&[]) as u32;
    }
    let scaled = logits / params.temperature;
    let vocab = scaled.size()[0];
    let k = if params.top_k == 0 { vocab } else { (params.top_k as i64).min(vocab) };
    // Sorted descending; keep the top k, then the smallest prefix with mass >= top_p.
    let (values, indices) = scaled.topk(k, -1, true, true);
    let probs = values.softmax(-1, Kind::Float);
    let probs: Vec<f32> = Vec::<f32>::try_from(&probs.to_device(tch::Device::Cpu)).unwrap_or_default();
    let indices: Vec<i64> = Vec::<i64>::try_from(&indices.to_device(tch::Device::Cpu)).unwrap_or_default();
    let mut keep = probs.len();
    if params.top_p < 1.0 {
        let mut mass = 0.0f64;
        for (i, p) in probs.iter().enumerate() {
            mass += f64::from(*p);
            if mass >= params.top_p {
                keep = i + 1;
                break;
            }
        }
    }
    let total: f64 = probs[..keep].iter().map(|&p| f64::from(p)).sum();
    let mut target = rng.random::<f64>() * total;
    for i in 0..keep {
        target -= f64::from(probs[i]);
        if target <= 0.0 {
            return indices[i] as u32;
        }
    }
    indices.get(keep.saturating_sub(1)).copied().unwrap_or(0) as u32
}

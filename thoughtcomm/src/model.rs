//! What the method needs from a language model. The `runtime` crate implements this trait; this
//! crate depends on no model code, so the autoencoder, routing and adapter can be tested alone.
use tch::{Device, Tensor};

use crate::error::Result;

/// How [`LanguageModel::sample_continuation`] draws tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ContinuationSampling {
    /// Tokens at most (generation also ends at the model's end-of-sequence tokens).
    pub max_new_tokens: usize,
    /// 0 is greedy.
    pub temperature: f64,
    /// Same seed, same tokens.
    pub seed: u64,
}

/// A frozen causal language model seen through the operations the prefix adapter's training
/// uses: its sizes, its input-embedding table, and a forward pass with a prefix of continuous
/// vectors before the token embeddings (the injection of Section 4 of the design note), and
/// sampling a continuation (reading (b) of the adapter's objective).
pub trait LanguageModel {
    /// Width of the residual stream: the size of one hidden state and of one prefix vector.
    fn hidden_size(&self) -> i64;

    /// Number of transformer layers; hidden states are taken at a layer in `0..=num_layers()`.
    fn num_layers(&self) -> i64;

    /// Where the model computes; prefixes must be built there.
    fn device(&self) -> Device;

    /// The vectors token ids are embedded to, `[vocab, hidden_size]` (scaled as the model scales
    /// its input embeddings, so a prefix vector lives in the same space). Used for the
    /// mean-embedding cosine term of the adapter's objective.
    fn input_embeddings(&self) -> Tensor;

    /// Next-token logits (f32) at the last `last` positions of the sequence `prefix`
    /// (`[m, hidden_size]` continuous vectors) followed by the embedded `ids`: row `t` scores the
    /// token after `ids[ids.len() - last + t]`. The result must stay differentiable with respect
    /// to `prefix`, so the prefix adapter trains with the backbone frozen.
    fn forward_with_prefix(&self, prefix: &Tensor, ids: &[u32], last: usize) -> Tensor;

    /// Tokens generated after the optional `prefix` (`[m, hidden_size]`) and `ids`, without
    /// gradients: at least one, at most `sampling.max_new_tokens`, the end-of-sequence token
    /// kept when it ends the continuation.
    fn sample_continuation(&self, prefix: Option<&Tensor>, ids: &[u32], sampling: &ContinuationSampling) -> Result<Vec<u32>>;
}

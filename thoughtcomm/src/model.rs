//! What the method needs from a language model. The `runtime` crate implements this trait; this
//! crate depends on no model code, so the autoencoder, routing and adapter can be tested alone.
use tch::Tensor;

/// A frozen causal language model seen through the three operations ThoughtComm uses: reading its
/// sizes (to pick the state layer and shape the prefix), embedding tokens, and running a forward
/// pass with a prefix of continuous vectors before the token embeddings (the injection of
/// Section 4 of the design note).
pub trait LanguageModel {
    /// Width of the residual stream: the size of one hidden state and of one prefix vector.
    fn hidden_size(&self) -> i64;

    /// Number of transformer layers; hidden states are taken at a layer in `0..=num_layers()`.
    fn num_layers(&self) -> i64;

    /// Input embeddings of `ids`, shape `[ids.len(), hidden_size]`, on the model's device. Used for
    /// the mean-embedding cosine term of the adapter's objective.
    fn embed_tokens(&self, ids: &[u32]) -> Tensor;

    /// Next-token logits `[ids.len(), vocab]` at the token positions of the sequence `prefix`
    /// (`[m, hidden_size]` continuous vectors) followed by the embedded `ids`: row `t` scores the
    /// token after `ids[t]`. The prefix positions' own logits are not returned. The result must stay
    /// differentiable with respect to `prefix` so the prefix adapter trains with the backbone frozen.
    fn forward_with_prefix(&self, prefix: &Tensor, ids: &[u32]) -> Tensor;
}

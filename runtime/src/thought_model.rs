//! The engine's network seen as the frozen `thoughtcomm::LanguageModel` that prefix adapters
//! train through: a fresh KV cache per call, so gradients reach the prefix and nothing else;
//! continuations are sampled by the engine.
use tch::{Device, Kind, Tensor};
use thoughtcomm::{ContinuationSampling, LanguageModel, ThoughtError};

use crate::engine::{Prefix, SequenceRequest};
use crate::generate::{generate_request, SamplingParams};
use crate::models::Transformer;

pub struct FrozenModel<'a> {
    net: &'a Transformer,
    /// Every token's input embedding (scaled as `Transformer::embed` scales it), built once.
    embeddings: Tensor,
    /// Where sampled continuations end (the tokenizer's end-of-sequence tokens).
    stop_token_ids: Vec<u32>,
}

impl<'a> FrozenModel<'a> {
    pub fn new(net: &'a Transformer, stop_token_ids: Vec<u32>) -> Self {
        let ids = Tensor::arange(net.spec().vocab_size, (Kind::Int64, net.device()));
        let embeddings = tch::no_grad(|| net.embed(&ids));
        FrozenModel { net, embeddings, stop_token_ids }
    }
}

impl LanguageModel for FrozenModel<'_> {
    fn hidden_size(&self) -> i64 {
        self.net.spec().hidden_size
    }

    fn num_layers(&self) -> i64 {
        self.net.spec().num_layers
    }

    fn device(&self) -> Device {
        self.net.device()
    }

    fn input_embeddings(&self) -> Tensor {
        self.embeddings.shallow_clone()
    }

    fn forward_with_prefix(&self, prefix: &Tensor, ids: &[u32], last: usize) -> Tensor {
        let net = self.net;
        let device = net.device();
        let ids: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
        let tokens = net.embed(&Tensor::from_slice(&ids).to_device(device).unsqueeze(0));
        let embeds = Tensor::cat(&[prefix.to_device(device).to_kind(net.kind()).unsqueeze(0), tokens], 1);
        let len = embeds.size()[1];
        let positions = Tensor::arange(len, (Kind::Int64, device)).unsqueeze(0);
        let (hidden, _) = net.forward_embeds(&embeds, &positions, &mut net.new_cache(), &[]);
        let last = (last as i64).min(len);
        net.logits(&hidden.squeeze_dim(0).narrow(0, len - last, last))
    }

    fn sample_continuation(&self, prefix: Option<&Tensor>, ids: &[u32], sampling: &ContinuationSampling) -> thoughtcomm::Result<Vec<u32>> {
        let params = SamplingParams {
            temperature: sampling.temperature,
            seed: sampling.seed,
            max_new_tokens: sampling.max_new_tokens,
            stop_token_ids: self.stop_token_ids.clone(),
            ..SamplingParams::default()
        };
        let mut request = SequenceRequest::new(ids.to_vec(), params);
        request.prefix = prefix.map(|p| Prefix::Embeddings(p.detach().to_device(self.net.device()).to_kind(self.net.kind())));
        Ok(generate_request(self.net, request).map_err(|e| ThoughtError::Model(e.to_string()))?.tokens)
    }
}

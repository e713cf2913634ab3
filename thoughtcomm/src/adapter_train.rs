//! Training of the prefix adapter with the backbone frozen, on recorded debate trajectories
//! (reading (a) of the paper's Eq. 12 in the design note): for an agent's turn in round t >= 2,
//! the prefix comes from the thoughts of round t - 1, and the loss is the teacher-forced
//! cross-entropy of the agent's recorded response given prefix + prompt, plus
//! `1 - cos(mean soft output embedding, mean embedding of the response)`. No correctness labels.
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::adapter::PrefixAdapter;
use crate::error::{Result, ThoughtError};
use crate::model::LanguageModel;
use crate::optim::{clip_grad_norm, zero_grads};
use crate::routing::RoutingPlan;
use crate::train::batch_indices;

/// One training example: agent `agent`'s turn, the latents of the round before it, the prompt
/// the agent saw and the response it gave.
#[derive(Debug)]
pub struct AdapterExample {
    pub agent: usize,
    /// `Z_hat` (`[k]`) of the previous round's states, as the autoencoder encodes them.
    pub latents: Tensor,
    /// The prompt's token ids (chat template applied).
    pub context: Vec<u32>,
    /// The recorded response's token ids (at least one).
    pub reference: Vec<u32>,
}

/// Optimization settings of the adapter.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdapterTrainConfig {
    pub steps: u64,
    /// Examples per optimizer step (gradients are accumulated over them).
    pub batch_size: i64,
    pub learning_rate: f64,
    /// Global gradient-norm clip (1.0, as a reproduction advises).
    pub clip: f64,
    /// Weight of the cosine term.
    pub cosine_weight: f64,
    /// Positions (prefix + prompt + response) per example at most; longer prompts lose their
    /// beginning, which keeps memory bounded on long debate histories.
    pub max_positions: usize,
}

impl Default for AdapterTrainConfig {
    fn default() -> Self {
        Self { steps: 200, batch_size: 4, learning_rate: 1e-4, clip: 1.0, cosine_weight: 1.0, max_positions: 1024 }
    }
}

/// The objective on one example (values, for reporting).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct AdapterLoss {
    pub total: f64,
    pub cross_entropy: f64,
    pub cosine: f64,
}

/// What a `train_adapter` call did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdapterReport {
    pub step: u64,
    /// Mean loss of the first and of the last step of the call.
    pub first: AdapterLoss,
    pub last: AdapterLoss,
    pub seconds: f64,
}

/// The loss of one example as a differentiable scalar, with its parts.
pub fn adapter_loss(
    lm: &dyn LanguageModel,
    adapter: &PrefixAdapter,
    plan: &RoutingPlan,
    example: &AdapterExample,
    config: &AdapterTrainConfig,
    embeddings: &Tensor,
) -> Result<(Tensor, AdapterLoss)> {
    if example.reference.is_empty() {
        return Err(ThoughtError::Empty("an adapter example has an empty reference response".into()));
    }
    if lm.hidden_size() != adapter.config().hidden_size {
        return Err(ThoughtError::DimensionMismatch {
            what: "the model's hidden size for this adapter".into(),
            expected: adapter.config().hidden_size,
            got: lm.hidden_size(),
        });
    }
    let z = adapter.standardize(&example.latents);
    let prefix = adapter.prefix_for(plan, &z, example.agent, None)?;
    let m = adapter.config().prefix_len as usize;
    let reference = &example.reference;
    let room = config.max_positions.saturating_sub(m + reference.len());
    let context = &example.context[example.context.len().saturating_sub(room.max(1))..];
    let ids: Vec<u32> = context.iter().chain(&reference[..reference.len() - 1]).copied().collect();
    let logits = lm.forward_with_prefix(&prefix, &ids, reference.len());
    let device = logits.device();
    let targets = Tensor::from_slice(&reference.iter().map(|&t| i64::from(t)).collect::<Vec<_>>()).to_device(device);
    let ce = logits.log_softmax(-1, Kind::Float).nll_loss(&targets);
    let soft = logits.softmax(-1, Kind::Float).matmul(&embeddings.to_kind(Kind::Float)).mean_dim(0, false, Kind::Float);
    let wanted = embeddings.index_select(0, &targets).to_kind(Kind::Float).mean_dim(0, false, Kind::Float);
    let cos = Tensor::cosine_similarity(&soft, &wanted, 0, 1e-8);
    let total: Tensor = &ce + (cos.neg() + 1.0) * config.cosine_weight;
    let parts = AdapterLoss { total: total.double_value(&[]), cross_entropy: ce.double_value(&[]), cosine: cos.double_value(&[]) };
    Ok((total, parts))
}

/// `config.steps` more Adam steps on `examples` (each step draws `batch_size` examples from the
/// adapter's seed and step number, so a resumed run sees what it would have seen). `on_step`
/// gets the step number and its mean loss.
pub fn train_adapter(
    lm: &dyn LanguageModel,
    adapter: &mut PrefixAdapter,
    plan: &RoutingPlan,
    examples: &[AdapterExample],
    config: &AdapterTrainConfig,
    mut on_step: impl FnMut(u64, &AdapterLoss),
) -> Result<AdapterReport> {
    if examples.is_empty() {
        return Err(ThoughtError::Empty("no adapter training examples (a debate needs at least 2 rounds)".into()));
    }
    if !(config.learning_rate.is_finite() && config.learning_rate > 0.0) || config.batch_size < 1 {
        return Err(ThoughtError::Config(format!(
            "adapter learning rate {} and batch size {} (need > 0 and >= 1)",
            config.learning_rate, config.batch_size
        )));
    }
    let embeddings = lm.input_embeddings();
    let start = Instant::now();
    let (mut first, mut last) = (None, AdapterLoss::default());
    for _ in 0..config.steps {
        let step = adapter.step + 1;
        zero_grads(&adapter.vs);
        let picks = batch_indices(adapter.seed(), step, config.batch_size, examples.len() as i64);
        let mut mean = AdapterLoss::default();
        let scale = 1.0 / config.batch_size as f64;
        for i in Vec::<i64>::try_from(&picks)? {
            let (loss, parts) = adapter_loss(lm, adapter, plan, &examples[i as usize], config, &embeddings)?;
            (loss * scale).backward();
            mean.total += parts.total * scale;
            mean.cross_entropy += parts.cross_entropy * scale;
            mean.cosine += parts.cosine * scale;
        }
        if !mean.total.is_finite() {
            return Err(ThoughtError::Config(format!("the adapter loss became {} at step {step}; lower the learning rate", mean.total)));
        }
        clip_grad_norm(&adapter.vs, config.clip);
        adapter.adam.step(&adapter.vs, config.learning_rate, step)?;
        adapter.step = step;
        first.get_or_insert(mean);
        last = mean;
        on_step(step, &mean);
    }
    Ok(AdapterReport { step: adapter.step, first: first.unwrap_or_default(), last, seconds: start.elapsed().as_secs_f64() })
}

//! Training of the prefix adapter with the backbone frozen, on recorded debate trajectories, with
//! the paper's Eq. 12: `(1 - cos(mean_emb(y_gen), mean_emb(y_ref))) - log p(y_gen | context, P)`.
//! For an agent's turn in round t >= 2 the prefix P comes from the thoughts of round t - 1. The
//! paper does not say what y_ref and y_gen are; the design note's two readings are both here
//! ([`AdapterObjective`]): (a) both are the agent's recorded response, teacher-forced, and the
//! cosine is taken with the model's soft output embedding; (b) y_ref is a continuation sampled
//! without the prefix and y_gen one sampled with it. No correctness labels in either.
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::adapter::PrefixAdapter;
use crate::error::{Result, ThoughtError};
use crate::model::{ContinuationSampling, LanguageModel};
use crate::optim::{clip_grad_norm, zero_grads};
use crate::routing::RoutingPlan;
use crate::train::batch_indices;

/// One training example: agent `agent`'s turn, the latents of the round before it, the prompt
/// the agent saw and y_ref: the response it gave (reading (a)), or for reading (b) a continuation
/// sampled without prefix ([`sample_references`] puts it there).
#[derive(Debug)]
pub struct AdapterExample {
    pub agent: usize,
    /// `Z_hat` (`[k]`) of the previous round's states, as the autoencoder encodes them.
    pub latents: Tensor,
    /// The prompt's token ids (chat template applied).
    pub context: Vec<u32>,
    /// y_ref's token ids (at least one).
    pub reference: Vec<u32>,
}

/// Which reading of Eq. 12 the adapter trains with.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "reading")]
pub enum AdapterObjective {
    /// (a): y_gen = y_ref = the recorded response; cross-entropy teacher-forced on it, cosine
    /// between the mean soft output embedding and its mean embedding. Stable and cheap.
    #[default]
    Recorded,
    /// (b): y_ref sampled once per example without the prefix ([`sample_references`]), y_gen
    /// sampled with the current prefix at every step (`tokens` at most each, at `temperature`);
    /// the cross-entropy of y_gen, the cosine between its soft output embedding and y_ref's.
    Sampled { tokens: usize, temperature: f64 },
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
    #[serde(default)]
    pub objective: AdapterObjective,
}

impl Default for AdapterTrainConfig {
    fn default() -> Self {
        Self {
            steps: 200,
            batch_size: 4,
            learning_rate: 1e-4,
            clip: 1.0,
            cosine_weight: 1.0,
            max_positions: 1024,
            objective: AdapterObjective::Recorded,
        }
    }
}

impl AdapterTrainConfig {
    fn validate(&self) -> Result<()> {
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) || self.batch_size < 1 {
            return Err(ThoughtError::Config(format!(
                "adapter learning rate {} and batch size {} (need > 0 and >= 1)",
                self.learning_rate, self.batch_size
            )));
        }
        match self.objective {
            AdapterObjective::Sampled { tokens, temperature } if tokens == 0 || !(temperature.is_finite() && temperature >= 0.0) => {
                Err(ThoughtError::Config(format!("sampled objective: {tokens} tokens at temperature {temperature} (need >= 1 and >= 0)")))
            }
            _ => Ok(()),
        }
    }
}

/// Reading (b)'s y_ref: replaces every example's reference by a continuation of its (truncated)
/// context (cut as `adapter_loss` cuts it) sampled without prefix, `tokens` at most, seeded by the
/// adapter's seed and the example's index, so a resumed training run samples the same ones.
/// `on_example` gets the count done.
pub fn sample_references(
    lm: &dyn LanguageModel,
    adapter: &PrefixAdapter,
    examples: &mut [AdapterExample],
    config: &AdapterTrainConfig,
    mut on_example: impl FnMut(usize),
) -> Result<()> {
    config.validate()?;
    check_objective(adapter, config)?;
    let AdapterObjective::Sampled { tokens, temperature } = config.objective else {
        return Err(ThoughtError::Config("sampled references are for the sampled objective (reading (b))".into()));
    };
    for (i, example) in examples.iter_mut().enumerate() {
        let context = truncated(&example.context, config.max_positions, adapter.config().prefix_len as usize + tokens);
        let sampling = ContinuationSampling { max_new_tokens: tokens, temperature, seed: draw_seed(adapter.seed(), 0, i as u64) };
        example.reference = lm.sample_continuation(None, context, &sampling)?;
        on_example(i + 1);
    }
    Ok(())
}

/// The end of `context` that leaves room for `tail` more positions within `max_positions`.
fn truncated(context: &[u32], max_positions: usize, tail: usize) -> &[u32] {
    let room = max_positions.saturating_sub(tail).max(1);
    &context[context.len().saturating_sub(room)..]
}

/// A sampling seed for (step, example) of a run seeded `seed` (step 0: the references).
fn draw_seed(seed: u64, step: u64, example: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ example.wrapping_mul(0x94D0_49BB_1331_11EB)
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

/// The loss of one example as a differentiable scalar, with its parts. `draw` seeds reading (b)'s
/// y_gen (`train_adapter` derives it from the adapter's seed, the step and the example).
pub fn adapter_loss(
    lm: &dyn LanguageModel,
    adapter: &PrefixAdapter,
    plan: &RoutingPlan,
    example: &AdapterExample,
    config: &AdapterTrainConfig,
    embeddings: &Tensor,
    draw: u64,
) -> Result<(Tensor, AdapterLoss)> {
    check_example(lm, adapter, example)?;
    let z = adapter.standardize(&example.latents);
    let prefix = adapter.prefix_for(plan, &z, example.agent, None)?;
    loss_with_prefix(lm, &prefix, example, config, embeddings, draw)
}

/// Refuses an example without reference, or a model of another width than the adapter's.
pub(crate) fn check_example(lm: &dyn LanguageModel, adapter: &PrefixAdapter, example: &AdapterExample) -> Result<()> {
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
    Ok(())
}

/// The objective of one example for a given prefix (`[m, hidden]`, m may be 0).
pub(crate) fn loss_with_prefix(
    lm: &dyn LanguageModel,
    prefix: &Tensor,
    example: &AdapterExample,
    config: &AdapterTrainConfig,
    embeddings: &Tensor,
    draw: u64,
) -> Result<(Tensor, AdapterLoss)> {
    let m = prefix.size()[0] as usize;
    let (context, generated) = match config.objective {
        AdapterObjective::Recorded => (truncated(&example.context, config.max_positions, m + example.reference.len()), None),
        AdapterObjective::Sampled { tokens, temperature } => {
            let context = truncated(&example.context, config.max_positions, m + tokens);
            let sampling = ContinuationSampling { max_new_tokens: tokens, temperature, seed: draw };
            (context, Some(lm.sample_continuation((m > 0).then(|| prefix.detach()).as_ref(), context, &sampling)?))
        }
    };
    let y_gen = generated.as_deref().unwrap_or(&example.reference);
    if y_gen.is_empty() {
        return Err(ThoughtError::Model("the sampled continuation is empty".into()));
    }
    let ids: Vec<u32> = context.iter().chain(&y_gen[..y_gen.len() - 1]).copied().collect();
    let logits = lm.forward_with_prefix(prefix, &ids, y_gen.len());
    let device = logits.device();
    let as_tensor = |t: &[u32]| Tensor::from_slice(&t.iter().map(|&t| i64::from(t)).collect::<Vec<_>>()).to_device(device);
    let ce = logits.log_softmax(-1, Kind::Float).nll_loss(&as_tensor(y_gen));
    let soft = logits.softmax(-1, Kind::Float).matmul(&embeddings.to_kind(Kind::Float)).mean_dim(0, false, Kind::Float);
    let wanted = embeddings.index_select(0, &as_tensor(&example.reference)).to_kind(Kind::Float).mean_dim(0, false, Kind::Float);
    let cos = Tensor::cosine_similarity(&soft, &wanted, 0, 1e-8);
    let total: Tensor = &ce + (cos.neg() + 1.0) * config.cosine_weight;
    let parts = AdapterLoss { total: total.double_value(&[]), cross_entropy: ce.double_value(&[]), cosine: cos.double_value(&[]) };
    Ok((total, parts))
}

/// Refuses to resume an adapter with another objective than the one its steps so far used.
pub fn check_objective(adapter: &PrefixAdapter, config: &AdapterTrainConfig) -> Result<()> {
    match adapter.objective {
        Some(trained) if trained != config.objective => Err(ThoughtError::Config(format!(
            "the adapter's {} steps so far trained with objective {trained:?}; resuming with {:?} would mix the two (use the same objective, or start a new adapter)",
            adapter.step, config.objective
        ))),
        _ => Ok(()),
    }
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
    config.validate()?;
    if config.steps > 0 {
        check_objective(adapter, config)?;
        adapter.objective = Some(config.objective);
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
            let draw = draw_seed(adapter.seed(), step, i as u64);
            let (loss, parts) = adapter_loss(lm, adapter, plan, &examples[i as usize], config, &embeddings, draw)?;
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

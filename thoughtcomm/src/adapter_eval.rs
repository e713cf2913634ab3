//! Held-out evaluation of a trained prefix adapter: does it reproduce the agents' next-round
//! responses better from the real thoughts than from routed noise of the same norm, or than with
//! no prefix at all? A forward pass per example and input (no generation), so it answers in
//! minutes what a debate ablation answers in hours, and it measures the adapter's objective
//! itself rather than accuracy, which a small prefix moves by a problem or two.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::adapter::PrefixAdapter;
use crate::adapter_train::{check_example, loss_with_prefix, AdapterExample, AdapterLoss, AdapterObjective, AdapterTrainConfig};
use crate::error::{Result, ThoughtError};
use crate::model::LanguageModel;
use crate::pipeline::matched_noise;
use crate::routing::RoutingPlan;

/// What the adapter reads for an evaluated prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefixInput {
    /// The routed thoughts of the round before, as in a debate.
    Thoughts,
    /// Routed seeded Gaussian noise of the routed thoughts' norm (the random-latents ablation).
    RandomLatents,
    /// No prefix at all: the frozen model alone on the same prompt.
    NoPrefix,
}

impl PrefixInput {
    pub const ALL: [PrefixInput; 3] = [PrefixInput::Thoughts, PrefixInput::RandomLatents, PrefixInput::NoPrefix];
}

/// Mean objective (teacher-forced on the recorded responses) over the examples for one input,
/// and how it compares with the real thoughts example by example.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeldOutLoss {
    pub input: PrefixInput,
    pub examples: usize,
    pub mean: AdapterLoss,
    /// Mean over examples of (this input's cross-entropy - the thoughts' cross-entropy), and its
    /// standard error: > 0 means the thoughts reproduce the responses better.
    pub cross_entropy_gap: f64,
    pub gap_standard_error: f64,
    /// Examples where the thoughts' cross-entropy is strictly lower than this input's.
    pub thoughts_better: usize,
}

/// The adapter's objective, reading (a) (cross-entropy of the recorded response given prefix and
/// prompt, plus the cosine term), on every example for each [`PrefixInput`], without gradients.
/// `noise_seed` seeds the random latents (per example, as a debate seeds them per round);
/// `on_example` gets the count of examples done.
pub fn evaluate_adapter(
    lm: &dyn LanguageModel,
    adapter: &PrefixAdapter,
    plan: &RoutingPlan,
    examples: &[AdapterExample],
    config: &AdapterTrainConfig,
    noise_seed: u64,
    mut on_example: impl FnMut(usize),
) -> Result<Vec<HeldOutLoss>> {
    if examples.is_empty() {
        return Err(ThoughtError::Empty("no examples to evaluate the adapter on".into()));
    }
    let config = AdapterTrainConfig { objective: AdapterObjective::Recorded, ..config.clone() };
    let embeddings = lm.input_embeddings();
    let weights = adapter.agreement_weights(None);
    let empty = Tensor::zeros([0, adapter.config().hidden_size], (Kind::Float, lm.device()));
    // losses[input][example]
    let mut losses: Vec<Vec<AdapterLoss>> = vec![Vec::with_capacity(examples.len()); PrefixInput::ALL.len()];
    tch::no_grad(|| -> Result<()> {
        for (e, example) in examples.iter().enumerate() {
            check_example(lm, adapter, example)?;
            let z = adapter.standardize(&example.latents);
            let thoughts = plan.route(&z, &weights)?.get(example.agent as i64);
            for (input, out) in PrefixInput::ALL.iter().zip(losses.iter_mut()) {
                let prefix = match input {
                    PrefixInput::Thoughts => adapter.forward(&thoughts),
                    PrefixInput::RandomLatents => adapter.forward(&matched_noise(plan, &weights, &thoughts, example.agent, noise_seed.wrapping_add(e as u64 * 0x1_0000))?),
                    PrefixInput::NoPrefix => empty.shallow_clone(),
                };
                out.push(loss_with_prefix(lm, &prefix, example, &config, &embeddings, 0)?.1);
            }
            on_example(e + 1);
        }
        Ok(())
    })?;
    let reference: Vec<f64> = losses[0].iter().map(|l| l.cross_entropy).collect();
    Ok(PrefixInput::ALL.iter().zip(&losses).map(|(&input, values)| summarize(input, values, &reference)).collect())
}

fn summarize(input: PrefixInput, values: &[AdapterLoss], thoughts: &[f64]) -> HeldOutLoss {
    let n = values.len() as f64;
    let mean = AdapterLoss {
        total: values.iter().map(|l| l.total).sum::<f64>() / n,
        cross_entropy: values.iter().map(|l| l.cross_entropy).sum::<f64>() / n,
        cosine: values.iter().map(|l| l.cosine).sum::<f64>() / n,
    };
    let gaps: Vec<f64> = values.iter().zip(thoughts).map(|(l, t)| l.cross_entropy - t).collect();
    let gap = gaps.iter().sum::<f64>() / n;
    let variance = if values.len() > 1 { gaps.iter().map(|g| (g - gap).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    HeldOutLoss {
        input,
        examples: values.len(),
        mean,
        cross_entropy_gap: gap,
        gap_standard_error: (variance / n).sqrt(),
        thoughts_better: gaps.iter().filter(|&&g| g > 0.0).count(),
    }
}

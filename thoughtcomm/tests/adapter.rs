//! The prefix adapter on a toy language model: its objective trains (the loss falls and the
//! prefix comes to carry the latent's information), checkpoints round-trip and resume exactly,
//! and a pipeline folder is cross-checked on load.
use std::path::Path;

use tch::{Device, Kind, Tensor};
use thoughtcomm::{
    adapter_loss, evaluate_adapter, sample_references, train_adapter, AdapterConfig, AdapterObjective, AdapterExample, AdapterTrainConfig, Agreement, AgentStates, Aggregate,
    AutoencoderConfig, ComposeOptions, ContinuationSampling, Estimator, LanguageModel, PipelineAgent, PipelineManifest, PrefixAdapter, PrefixInput, Routing,
    RoutingPlan, StructureConfig, ThoughtAutoencoder, ThoughtPipeline, ThoughtStructure, TrainConfig,
};

const VOCAB: i64 = 12;
const D: i64 = 8;

/// A frozen causal bag-of-words model: the state at position t is the running mean of the
/// (prefix and token) embeddings up to t, and the logits are `state Wᵀ`.
struct ToyLm {
    emb: Tensor,
    head: Tensor,
}

impl ToyLm {
    fn new() -> Self {
        let grid = |seed: f64| (Tensor::arange(VOCAB * D, (Kind::Float, Device::Cpu)) * seed).sin().view([VOCAB, D]);
        ToyLm { emb: grid(0.7), head: grid(1.3) * 3.0 }
    }
}

impl LanguageModel for ToyLm {
    fn hidden_size(&self) -> i64 {
        D
    }
    fn num_layers(&self) -> i64 {
        1
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn input_embeddings(&self) -> Tensor {
        self.emb.shallow_clone()
    }
    fn forward_with_prefix(&self, prefix: &Tensor, ids: &[u32], last: usize) -> Tensor {
        let ids = Tensor::from_slice(&ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>());
        let x = Tensor::cat(&[prefix.shallow_clone(), self.emb.index_select(0, &ids)], 0);
        let t = x.size()[0];
        let mean = x.cumsum(0, Kind::Float) / Tensor::arange_start(1, t + 1, (Kind::Float, Device::Cpu)).unsqueeze(1);
        mean.matmul(&self.head.tr()).narrow(0, t - last as i64, last as i64)
    }
    /// Gumbel-max sampling with noise hashed from (seed, position, token); argmax at temperature 0.
    fn sample_continuation(&self, prefix: Option<&Tensor>, ids: &[u32], s: &ContinuationSampling) -> thoughtcomm::Result<Vec<u32>> {
        let prefix = prefix.map_or_else(|| Tensor::zeros([0, D], (Kind::Float, Device::Cpu)), |p| p.detach());
        let mut seq = ids.to_vec();
        for t in 0..s.max_new_tokens as u64 {
            let logits = Vec::<f32>::try_from(self.forward_with_prefix(&prefix, &seq, 1).squeeze_dim(0)).unwrap();
            let score = |v: usize| {
                let mut h = s.seed ^ (t << 20) ^ v as u64;
                h = (h ^ (h >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                f64::from(logits[v]) - s.temperature * (-u.ln()).ln()
            };
            seq.push((0..VOCAB as usize).max_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap() as u32);
        }
        Ok(seq[ids.len()..].to_vec())
    }
}

fn plan(agents: usize, k: usize) -> RoutingPlan {
    let scores = vec![vec![1.0; k]; agents];
    RoutingPlan::new(&ThoughtStructure::from_scores(scores, &StructureConfig::default()), Routing::Routed)
}

fn adapter_config(agents: usize, k: i64) -> AdapterConfig {
    AdapterConfig { num_agents: agents, latent_dim: k, hidden_size: D, prefix_len: 2, width: 16, agreement: Agreement::Learned, init_scale: 0.05 }
}

/// Two situations that differ only in the latent: each wants another reply to the same prompt.
fn examples() -> Vec<AdapterExample> {
    let context = vec![1, 2, 3];
    [(1.0f32, vec![4u32, 4, 4]), (-1.0, vec![7, 7, 7])]
        .into_iter()
        .flat_map(|(sign, reference)| {
            (0..2).map(move |agent| AdapterExample {
                agent,
                latents: Tensor::from_slice(&[sign, -sign, 0.5 * sign]),
                context: vec![1, 2, 3],
                reference: reference.clone(),
            })
        })
        .inspect(|e| assert_eq!(e.context, context))
        .collect()
}

fn latents(examples: &[AdapterExample]) -> Tensor {
    Tensor::stack(&examples.iter().map(|e| e.latents.shallow_clone()).collect::<Vec<_>>(), 0)
}

fn mean_loss(lm: &ToyLm, adapter: &PrefixAdapter, plan: &RoutingPlan, ex: &[AdapterExample], config: &AdapterTrainConfig) -> f64 {
    let emb = lm.input_embeddings();
    ex.iter().map(|e| adapter_loss(lm, adapter, plan, e, config, &emb, 0).unwrap().1.cross_entropy).sum::<f64>() / ex.len() as f64
}

#[test]
fn the_adapter_learns_to_carry_the_latent_into_the_prefix() {
    let (lm, ex, plan) = (ToyLm::new(), examples(), plan(2, 3));
    let mut adapter = PrefixAdapter::new(adapter_config(2, 3), &latents(&ex), 3, Device::Cpu).unwrap();
    let config = AdapterTrainConfig { steps: 300, batch_size: 4, learning_rate: 1e-2, max_positions: 64, ..Default::default() };
    let before = mean_loss(&lm, &adapter, &plan, &ex, &config);
    let mut seen = 0;
    let report = train_adapter(&lm, &mut adapter, &plan, &ex, &config, |_, _| seen += 1).unwrap();
    let after = mean_loss(&lm, &adapter, &plan, &ex, &config);
    eprintln!("cross-entropy {before:.4} -> {after:.4}; report {report:?}");
    assert_eq!((seen, report.step, adapter.step()), (300, 300, 300));
    assert!(after < 0.5 * before, "cross-entropy {before} -> {after}");
    // A prompt alone cannot tell the two replies apart: the best latent-blind prefix leaves the
    // two situations' losses equal, so a clear gap between them shows the prefix reads the latent.
    let emb = lm.input_embeddings();
    let swapped = AdapterExample { latents: ex[2].latents.shallow_clone(), ..clone_example(&ex[0]) };
    let right = adapter_loss(&lm, &adapter, &plan, &ex[0], &config, &emb, 0).unwrap().1.cross_entropy;
    let wrong = adapter_loss(&lm, &adapter, &plan, &swapped, &config, &emb, 0).unwrap().1.cross_entropy;
    eprintln!("own latent {right:.4}, the other situation's latent {wrong:.4}");
    assert!(wrong > right + 1.0, "the other situation's latent gives {wrong}, its own {right}");
    // Held-out evaluation sees the same: the thoughts beat no prefix on every example, and
    // routed noise of their norm (averaged over seeds, since a draw can point the right way).
    let eval = |seed| evaluate_adapter(&lm, &adapter, &plan, &ex, &config, seed, |_| ()).unwrap();
    let first = eval(0);
    assert_eq!(first.iter().map(|l| l.input).collect::<Vec<_>>(), PrefixInput::ALL);
    let (thoughts, none) = (&first[0], &first[2]);
    assert!((thoughts.mean.cross_entropy - after).abs() < 1e-5, "{} vs {after}", thoughts.mean.cross_entropy);
    assert_eq!((none.examples, none.thoughts_better), (4, 4), "{none:?}");
    assert!((none.cross_entropy_gap - (none.mean.cross_entropy - thoughts.mean.cross_entropy)).abs() < 1e-9);
    let noise_gap = (0..8).map(|seed| eval(seed)[1].cross_entropy_gap).sum::<f64>() / 8.0;
    assert!(noise_gap > 0.5, "random latents only {noise_gap} nats worse than the thoughts");
    // The learned agreement weights moved from the fixed rule.
    let w = Vec::<f32>::try_from(adapter.agreement_weights(None)).unwrap();
    assert_eq!(w.len(), 3);
    assert!((w[2] - 1.0).abs() > 1e-4, "{w:?}");
}

fn clone_example(e: &AdapterExample) -> AdapterExample {
    AdapterExample { agent: e.agent, latents: e.latents.copy(), context: e.context.clone(), reference: e.reference.clone() }
}

#[test]
fn checkpoints_round_trip_and_resume_exactly() {
    let (lm, ex, plan) = (ToyLm::new(), examples(), plan(2, 3));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter.safetensors");
    let config = AdapterTrainConfig { steps: 6, batch_size: 2, learning_rate: 1e-2, max_positions: 64, ..Default::default() };
    let new = || PrefixAdapter::new(adapter_config(2, 3), &latents(&ex), 9, Device::Cpu).unwrap();

    let mut straight = new();
    train_adapter(&lm, &mut straight, &plan, &ex, &AdapterTrainConfig { steps: 12, ..config.clone() }, |_, _| {}).unwrap();

    let mut first = new();
    train_adapter(&lm, &mut first, &plan, &ex, &config, |_, _| {}).unwrap();
    first.save(&path).unwrap();
    let mut resumed = PrefixAdapter::load(&path, Device::Cpu).unwrap();
    assert_eq!(resumed.step(), 6);
    assert_eq!(resumed.config(), first.config());
    let z = resumed.standardize(&ex[0].latents);
    let same = resumed.prefix_for(&plan, &z, 1, None).unwrap() - first.prefix_for(&plan, &z, 1, None).unwrap();
    assert_eq!(same.abs().max().double_value(&[]), 0.0, "a loaded adapter gives the saved one's prefix");
    train_adapter(&lm, &mut resumed, &plan, &ex, &config, |_, _| {}).unwrap();
    let d = (resumed.prefix_for(&plan, &z, 0, None).unwrap() - straight.prefix_for(&plan, &z, 0, None).unwrap()).abs().max();
    assert!(d.double_value(&[]) < 1e-6, "resumed training differs from uninterrupted by {}", d.double_value(&[]));

    // The checkpoint records the objective; resuming with the other reading is refused (before
    // any sampling), and the adapter is left as it was.
    assert_eq!(resumed.objective(), Some(AdapterObjective::Recorded));
    assert_eq!(PrefixAdapter::load(&path, Device::Cpu).unwrap().objective(), Some(AdapterObjective::Recorded));
    let other = AdapterTrainConfig { objective: AdapterObjective::Sampled { tokens: 4, temperature: 1.0 }, ..config.clone() };
    let err = train_adapter(&lm, &mut resumed, &plan, &ex, &other, |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("trained with objective Recorded") && err.contains("Sampled"), "{err}");
    let err = sample_references(&lm, &resumed, &mut examples(), &other, |_| {}).unwrap_err().to_string();
    assert!(err.contains("trained with objective Recorded"), "{err}");
    assert_eq!(resumed.step(), 12);
    assert_eq!(new().objective(), None, "a fresh adapter has no objective yet");

    // A file of another shape is refused, naming the tensor.
    std::fs::write(dir.path().join("adapter.json"), std::fs::read_to_string(dir.path().join("adapter.json")).unwrap().replace("\"width\": 16", "\"width\": 15")).unwrap();
    let err = PrefixAdapter::load(&path, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("has shape") && err.contains("'hidden."), "{err}");
}

#[test]
fn the_sampled_reading_draws_references_without_prefix_trains_and_resumes_exactly() {
    let (lm, plan) = (ToyLm::new(), plan(2, 3));
    let sampled = |temperature| AdapterTrainConfig {
        steps: 6,
        batch_size: 2,
        learning_rate: 1e-2,
        max_positions: 64,
        objective: AdapterObjective::Sampled { tokens: 4, temperature },
        ..Default::default()
    };
    let new = || PrefixAdapter::new(adapter_config(2, 3), &latents(&examples()), 9, Device::Cpu).unwrap();
    // Greedy y_ref does not depend on the latent (no prefix): every example of the one prompt
    // gets the same 4 tokens, which replace the recorded replies.
    let mut ex = examples();
    sample_references(&lm, &new(), &mut ex, &sampled(0.0), |_| {}).unwrap();
    assert!(ex.iter().all(|e| e.reference.len() == 4 && e.reference == ex[0].reference), "{:?}", ex[0].reference);
    let greedy = lm.sample_continuation(None, &[1, 2, 3], &ContinuationSampling { max_new_tokens: 4, temperature: 0.0, seed: 5 }).unwrap();
    assert_eq!(ex[0].reference, greedy);
    // Sampled ones differ between examples (seeded by index) and are the same when drawn again.
    let mut warm = examples();
    sample_references(&lm, &new(), &mut warm, &sampled(2.0), |_| {}).unwrap();
    let mut again = examples();
    sample_references(&lm, &new(), &mut again, &sampled(2.0), |_| {}).unwrap();
    assert!(warm.iter().zip(&again).all(|(a, b)| a.reference == b.reference));
    assert!(warm.iter().any(|e| e.reference != warm[0].reference), "{:?}", warm.iter().map(|e| &e.reference).collect::<Vec<_>>());

    // y_gen is drawn from the seed, step and example: 6 + 6 resumed steps equal 12 straight.
    let config = sampled(1.0);
    let mut straight = new();
    let long = train_adapter(&lm, &mut straight, &plan, &warm, &AdapterTrainConfig { steps: 12, ..config.clone() }, |_, _| {}).unwrap();
    assert!(long.last.total.is_finite() && long.last.cross_entropy > 0.0, "{long:?}");
    let mut resumed = new();
    train_adapter(&lm, &mut resumed, &plan, &warm, &config, |_, _| {}).unwrap();
    train_adapter(&lm, &mut resumed, &plan, &warm, &config, |_, _| {}).unwrap();
    let z = resumed.standardize(&warm[0].latents);
    let d = (resumed.prefix_for(&plan, &z, 0, None).unwrap() - straight.prefix_for(&plan, &z, 0, None).unwrap()).abs().max();
    assert!(d.double_value(&[]) < 1e-6, "resumed training differs from uninterrupted by {}", d.double_value(&[]));
    // The objective falls: the model grows surer of its own continuations, nearer to y_ref.
    let mut losses = Vec::new();
    let mut trained = new();
    train_adapter(&lm, &mut trained, &plan, &warm, &AdapterTrainConfig { steps: 200, ..config.clone() }, |_, l| losses.push(l.total)).unwrap();
    let (head, tail) = (losses[..20].iter().sum::<f64>() / 20.0, losses[180..].iter().sum::<f64>() / 20.0);
    eprintln!("sampled objective: first 20 steps {head:.4}, last 20 {tail:.4}");
    assert!(tail < head - 0.1, "first 20 steps {head}, last 20 {tail}");
    // Zero tokens is refused before any sampling.
    let err = sample_references(&lm, &new(), &mut examples(), &AdapterTrainConfig { objective: AdapterObjective::Sampled { tokens: 0, temperature: 1.0 }, ..config }, |_| {});
    assert!(err.unwrap_err().to_string().contains("0 tokens"));
}

/// A pipeline folder for 3 agents on model "toy" (hidden D) with k latents.
fn write_pipeline(dir: &Path, k: i64) {
    let states = AgentStates::from_concat(Tensor::randn([40, 3 * D], (Kind::Float, Device::Cpu)), vec![D; 3]).unwrap();
    let config = AutoencoderConfig { block_sizes: vec![D; 3], latent_dim: k, hidden: vec![16], lambda: 1e-3, estimator: Estimator::ColumnNorm };
    let mut ae = ThoughtAutoencoder::new(config, TrainConfig { batch_size: 16, learning_rate: 1e-3, seed: 1, jacobian_columns: None }).unwrap();
    ae.fit(&states, 20).unwrap();
    let structure = ThoughtStructure::recover(&ae, &states, &StructureConfig { aggregate: Aggregate::Max, threshold: 0.3 }).unwrap();
    let mut manifest = PipelineManifest::new((0..3).map(|_| PipelineAgent { model: "toy".into(), hidden_size: D }).collect(), 1);
    ae.save(&dir.join(&manifest.autoencoder)).unwrap();
    std::fs::write(dir.join(&manifest.structure), serde_json::to_string(&structure).unwrap()).unwrap();
    let adapter = PrefixAdapter::new(adapter_config(3, k), &ae.encode(&states).unwrap(), 0, Device::Cpu).unwrap();
    let file = PipelineManifest::adapter_file("toy");
    adapter.save(&dir.join(&file)).unwrap();
    manifest.adapters.insert("toy".into(), file);
    manifest.write(dir).unwrap();
}

#[test]
fn a_pipeline_composes_one_prefix_per_agent_and_refuses_parts_that_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), 6);
    let pipeline = ThoughtPipeline::load(dir.path(), Device::Cpu).unwrap();
    assert_eq!((pipeline.num_agents(), pipeline.prefix_len()), (3, 2));
    let states: Vec<Tensor> = (0..3).map(|i| Tensor::randn([D], (Kind::Float, Device::Cpu)) + i as f64).collect();
    let out = pipeline.compose(&states, &ComposeOptions::default()).unwrap();
    assert_eq!(out.prefixes.len(), 3);
    for (i, (p, a)) in out.prefixes.iter().zip(&out.agents).enumerate() {
        assert_eq!(p.size(), [2, D]);
        let norm = p.norm_scalaropt_dim(2, [1i64], false).mean(Kind::Float).double_value(&[]);
        assert!((norm - a.prefix_norm).abs() < 1e-9 && norm > 0.0);
        assert_eq!(a.weights.len(), 4);
        let plan = RoutingPlan::new(&pipeline.structure, Routing::Routed);
        assert_eq!((a.shared, a.private), (plan.shared_count(i), plan.private_count(i)));
    }
    let c = out.state_cosine.unwrap();
    assert!((-1.0..=1.0).contains(&c));
    // Same states, same prefixes; random latents of the same norm give others.
    let again = pipeline.compose(&states, &ComposeOptions::default()).unwrap();
    assert_eq!((&again.prefixes[1] - &out.prefixes[1]).abs().max().double_value(&[]), 0.0);
    let random = pipeline.compose(&states, &ComposeOptions { random_latents: Some(5), ..Default::default() }).unwrap();
    assert!((&random.prefixes[1] - &out.prefixes[1]).abs().max().double_value(&[]) > 0.0);
    // The adapter reads noise of the routed thoughts' norm, agent by agent.
    for (r, a) in random.agents.iter().zip(&out.agents) {
        assert!((r.thought_norm - a.thought_norm).abs() <= 1e-5 * a.thought_norm, "{} vs {}", r.thought_norm, a.thought_norm);
        assert_eq!((r.shared, r.private, r.expected_thought_norm), (a.shared, a.private, a.expected_thought_norm));
    }
    // A state of the wrong size is an error, not a panic.
    let mut bad = states.iter().map(|s| s.shallow_clone()).collect::<Vec<_>>();
    bad[2] = Tensor::zeros([D + 1], (Kind::Float, Device::Cpu));
    assert!(pipeline.compose(&bad, &ComposeOptions::default()).unwrap_err().to_string().contains("agent 2"));

    // An agent on a model without an adapter.
    let mut manifest = PipelineManifest::read(dir.path()).unwrap();
    manifest.agents[1].model = "other".into();
    manifest.write(dir.path()).unwrap();
    let err = ThoughtPipeline::load(dir.path(), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("agent 1 runs on 'other'") && err.contains("no adapter"), "{err}");
    // An adapter trained for another hidden size (the manifest says D + 0, the adapter D).
    manifest.agents[1].model = "toy".into();
    manifest.agents.iter_mut().for_each(|a| a.hidden_size = D);
    manifest.write(dir.path()).unwrap();
    ThoughtPipeline::load(dir.path(), Device::Cpu).unwrap();
    let other = tempfile::tempdir().unwrap();
    write_pipeline(other.path(), 5);
    std::fs::copy(other.path().join("adapter-toy.safetensors"), dir.path().join("adapter-toy.safetensors")).unwrap();
    std::fs::copy(other.path().join("adapter-toy.json"), dir.path().join("adapter-toy.json")).unwrap();
    let err = ThoughtPipeline::load(dir.path(), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("latent_dim is 5") && err.contains("6 was asked for"), "{err}");
    // Missing checkpoint.
    std::fs::remove_file(dir.path().join("autoencoder.safetensors")).unwrap();
    let err = ThoughtPipeline::load(dir.path(), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("autoencoder.safetensors"), "{err}");
}

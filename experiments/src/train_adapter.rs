//! `tcomm train-adapter`: trains one prefix adapter per model on a debate run's trajectories
//! (backbone frozen, gradients through the model to the adapter only) and writes the pipeline
//! folder: the adapters, copies of the autoencoder and its structure, and manifest.json.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use runtime::thought_model::FrozenModel;
use runtime::tokenizer::ChatMessage;
use tch::Tensor;
use thoughtcomm::{
    sample_references, train_adapter, AdapterConfig, AdapterExample, AdapterObjective, AdapterTrainConfig, Agreement, PipelineAgent,
    PipelineManifest, PrefixAdapter, Routing, RoutingPlan, ThoughtAutoencoder, ThoughtStructure,
};

use crate::train::{advance, bar, AE_FILE, STRUCTURE_FILE};
use crate::trajectories::Trajectories;

/// Manifest provenance key: ids of the problems of the training run that `--holdout` left out.
pub(crate) const HELD_OUT_IDS: &str = "holdout_ids";

#[derive(Clone, Copy, ValueEnum)]
pub enum AgreementTraining {
    /// Learned jointly with the adapter, starting from alpha / n (the default).
    Learned,
    /// Fixed at alpha / n.
    Fixed,
    /// None: every level weighs 1.
    None,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ObjectiveReading {
    /// (a) teacher-forced on the agent's recorded next-round response (the default: stable, cheap).
    Recorded,
    /// (b) y_ref sampled without the prefix, y_gen sampled with it at every step (a generation
    /// per turn and step: several times slower).
    Sampled,
}

/// What the training prompt of a later-round turn shows besides the prefix.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrainingContext {
    /// The other agents' previous responses, as `tcomm debate` shows them by default (the
    /// default). The response being reproduced was generated from that text, so the prefix has
    /// little to add and tends to stay inert.
    Shown,
    /// Question and own earlier answer only, as `tcomm debate --hide-text` prompts: the
    /// reference response was still generated seeing the others' text, so the prefix must carry
    /// what that text carried.
    Hidden,
}

impl TrainingContext {
    pub fn name(self) -> &'static str {
        match self {
            TrainingContext::Shown => "shown",
            TrainingContext::Hidden => "hidden",
        }
    }

    /// The context a pipeline's adapters trained with, from its manifest's provenance
    /// (pipelines from before the flag showed the text).
    pub fn trained(provenance: &serde_json::Value) -> Self {
        if provenance["context"].as_str() == Some(TrainingContext::Hidden.name()) {
            TrainingContext::Hidden
        } else {
            TrainingContext::Shown
        }
    }

    pub fn shows_text(self) -> bool {
        self == TrainingContext::Shown
    }
}

/// Which reading of the paper's Eq. 12 the adapters train with (`tcomm train-adapter`, `tcomm
/// train` and `tcomm experiment` take the same flags).
#[derive(Args, Clone)]
pub struct ObjectiveArgs {
    /// Which reading of Eq. 12 trains the adapter: what y_ref and y_gen are.
    #[arg(long = "objective", value_enum, default_value = "recorded")]
    pub reading: ObjectiveReading,
    /// Reading (b): tokens per sampled continuation (y_ref and y_gen).
    #[arg(long, default_value_t = 64)]
    pub sample_tokens: usize,
    /// Reading (b): sampling temperature of y_ref and y_gen.
    #[arg(long, default_value_t = 0.7)]
    pub sample_temperature: f64,
    /// Whether the training prompts show the other agents' responses (shown) or leave them to
    /// the prefix (hidden; pair with `tcomm debate --hide-text`).
    #[arg(long, value_enum, default_value = "shown")]
    pub adapter_context: TrainingContext,
}

impl ObjectiveArgs {
    fn objective(&self) -> AdapterObjective {
        match self.reading {
            ObjectiveReading::Recorded => AdapterObjective::Recorded,
            ObjectiveReading::Sampled => AdapterObjective::Sampled { tokens: self.sample_tokens, temperature: self.sample_temperature },
        }
    }
}

/// Where and how the frozen model reads the run's turns (`train-adapter` and `eval-adapter`).
#[derive(Args, Clone)]
pub struct FrozenModelArgs {
    /// Positions per turn at most (longer prompts lose their beginning).
    #[arg(long, default_value_t = 1024)]
    pub max_positions: usize,
    /// Device of the frozen model.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype of the frozen model: auto (f32 on the CPU, bf16 on CUDA), f32, bf16, f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Data folder to restore the questions of an archived run from (default: $TCOMM_DATA, then
    /// ../shared/data); only read when the run's questions are blank.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct TrainAdapterArgs {
    /// The debate run (with saved states) whose trajectories are the training data.
    #[arg(long)]
    pub run: PathBuf,
    /// The autoencoder folder written by `tcomm train-ae`.
    #[arg(long)]
    pub ae: PathBuf,
    /// m, prefix vectors per agent (1 in the paper's main results).
    #[arg(long, default_value_t = 1)]
    pub prefix_len: i64,
    /// Hidden width of the adapter MLP.
    #[arg(long, default_value_t = 256)]
    pub width: i64,
    #[arg(long, value_enum, default_value = "learned")]
    pub agreement: AgreementTraining,
    /// Total optimizer steps per adapter (a rerun continues from the checkpoint).
    #[arg(long, default_value_t = 200)]
    pub steps: u64,
    /// Turns per step (gradients accumulated).
    #[arg(long, default_value_t = 4)]
    pub batch_size: i64,
    #[arg(long, default_value_t = 1e-4)]
    pub learning_rate: f64,
    /// Weight of the (1 - cosine) term of the objective.
    #[arg(long, default_value_t = 1.0)]
    pub cosine_weight: f64,
    #[command(flatten)]
    pub objective: ObjectiveArgs,
    /// Problems at the end of the run left out of training, for `tcomm eval-adapter` to test the
    /// adapters on (the autoencoder, unsupervised, has seen their states).
    #[arg(long, default_value_t = 0)]
    pub holdout: usize,
    /// Scale of the output layer's initial weights.
    #[arg(long, default_value_t = 0.005)]
    pub init_scale: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub model: FrozenModelArgs,
    /// The pipeline folder to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// `tcomm train-adapter`.
pub fn run(args: TrainAdapterArgs) -> anyhow::Result<()> {
    let manifest = train(&args)?;
    println!("thought pipeline written to {} (agents: {:?})", args.out.display(), manifest.agents.iter().map(|a| &a.model).collect::<Vec<_>>());
    Ok(())
}

fn copy_into(from: &Path, to: &Path) -> anyhow::Result<()> {
    if from.canonicalize().ok() != to.canonicalize().ok() {
        std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Trains the adapters and writes the pipeline folder; returns its manifest.
pub fn train(args: &TrainAdapterArgs) -> anyhow::Result<PipelineManifest> {
    let mut run = Trajectories::load(&args.run)?;
    run.restore_questions(args.model.data_dir.as_deref())?;
    let ae_path = args.ae.join(AE_FILE);
    let ae = ThoughtAutoencoder::load(&ae_path)?;
    let states = run.agent_states()?;
    ae.check_states(&states).with_context(|| format!("{} does not fit the states of {}", ae_path.display(), args.run.display()))?;
    let structure_text = std::fs::read_to_string(args.ae.join(STRUCTURE_FILE)).with_context(|| format!("{}: no {STRUCTURE_FILE}", args.ae.display()))?;
    let structure: ThoughtStructure = serde_json::from_str(&structure_text).with_context(|| format!("{}: bad {STRUCTURE_FILE}", args.ae.display()))?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}: cannot create", args.out.display()))?;
    let agents: Vec<PipelineAgent> = run
        .config
        .agents
        .iter()
        .zip(states.block_sizes())
        .map(|(a, &hidden_size)| PipelineAgent { model: a.model.clone(), hidden_size })
        .collect();
    // A rerun that finds an adapter already trained runs no step: it keeps the losses that the
    // earlier run recorded for that adapter, instead of overwriting them with nulls.
    let earlier = PipelineManifest::read(&args.out).ok().map(|m| m.provenance).unwrap_or_default();
    let context = args.objective.adapter_context;
    let trained_before = earlier["adapter_steps"].as_u64().is_some_and(|s| s > 0);
    let earlier_setup = (TrainingContext::trained(&earlier), earlier["holdout"].as_u64().unwrap_or(0));
    if trained_before && earlier_setup != (context, args.holdout as u64) {
        bail!(
            "{}: the adapters there trained with --adapter-context {} --holdout {}; continuing with {} and {} would mix two setups (use another --out)",
            args.out.display(),
            earlier_setup.0.name(),
            earlier_setup.1,
            context.name(),
            args.holdout
        );
    }
    let trained_problems = run.problems.len().checked_sub(args.holdout).filter(|&n| n > 0);
    let Some(trained_problems) = trained_problems else {
        bail!("--holdout {} leaves no problem of the {} in {} to train on", args.holdout, run.problems.len(), args.run.display());
    };
    // The held-out problems by id, so that eval-adapter finds them even if the run grows later.
    let held_out: Vec<String> = run.problems[trained_problems..].iter().map(|p| p.id.clone()).collect();
    if let Some(earlier_ids) = earlier.get(HELD_OUT_IDS).filter(|_| trained_before) {
        if *earlier_ids != serde_json::json!(held_out) {
            bail!(
                "{}: the adapters there held out other problems of {} (the run changed since); continuing would train on problems held out before (use another --out)",
                args.out.display(),
                args.run.display()
            );
        }
    }
    let mut manifest = PipelineManifest::new(agents, run.layer);
    let ae_json = thoughtcomm::config_path(&ae_path);
    copy_into(&ae_path, &args.out.join(&manifest.autoencoder))?;
    copy_into(&ae_json, &thoughtcomm::config_path(&args.out.join(&manifest.autoencoder)))?;
    copy_into(&args.ae.join(STRUCTURE_FILE), &args.out.join(&manifest.structure))?;

    let codes = ae.encode(&states)?;
    let plan = RoutingPlan::new(&structure, Routing::Routed);
    let device = runtime::device::parse_device(&args.model.device)?;
    let kind = runtime::device::parse_kind(&args.model.dtype, device)?;
    let mut losses = BTreeMap::new();
    // The steps the adapters have, which a rerun with fewer --steps than an earlier one does not undo.
    let mut trained_steps: Option<u64> = None;
    let models: BTreeSet<String> = run.config.agents.iter().map(|a| a.model.clone()).collect();
    for model_name in models {
        let model = runtime::loader::load(&model_name, device, kind)?;
        let mut examples = examples(&run, &(0..trained_problems).collect::<Vec<_>>(), &ae, &model, &model_name, context.shows_text())?;
        if examples.is_empty() {
            bail!("{}: no turn after the first round for agents on '{model_name}' (the run needs --rounds >= 2)", args.run.display());
        }
        let config = AdapterConfig {
            num_agents: run.config.agents.len(),
            latent_dim: ae.config().latent_dim,
            hidden_size: model.network.spec().hidden_size,
            prefix_len: args.prefix_len,
            width: args.width,
            agreement: match args.agreement {
                AgreementTraining::Learned => Agreement::Learned,
                AgreementTraining::Fixed => Agreement::Fixed,
                AgreementTraining::None => Agreement::None,
            },
            init_scale: args.init_scale,
        };
        let file = PipelineManifest::adapter_file(&model_name);
        let path = args.out.join(&file);
        let mut adapter = if path.exists() {
            let adapter = PrefixAdapter::load(&path, device)?;
            if adapter.config() != &config {
                bail!("{}: an adapter of another shape is there ({:?}); use another --out or delete it", path.display(), adapter.config());
            }
            adapter
        } else {
            PrefixAdapter::new(config, &codes, args.seed, device)?
        };
        let lm = FrozenModel::new(&model.network, model.tokenizer.eos_token_ids());
        let train_config = AdapterTrainConfig {
            steps: 0,
            batch_size: args.batch_size,
            learning_rate: args.learning_rate,
            clip: 1.0,
            cosine_weight: args.cosine_weight,
            max_positions: args.model.max_positions,
            objective: args.objective.objective(),
        };
        if matches!(train_config.objective, AdapterObjective::Sampled { .. }) && adapter.step() < args.steps {
            let what = format!("y_ref {model_name}");
            let progress = bar(examples.len() as u64, &what)?;
            sample_references(&lm, &adapter, &mut examples, &train_config, |done| advance(&progress, &what, done as u64))?;
            progress.finish();
        }
        let what = format!("adapter {model_name}");
        let progress = bar(args.steps, &what)?;
        progress.set_position(adapter.step().min(args.steps));
        let (mut first, mut last) = (None, None);
        // The steps all adapters so far have, this one included.
        let common_steps = |step: u64| trained_steps.map_or(step, |s: u64| s.min(step));
        const CHUNK: u64 = 10;
        while adapter.step() < args.steps {
            let steps = CHUNK.min(args.steps - adapter.step());
            let report = train_adapter(&lm, &mut adapter, &plan, &examples, &AdapterTrainConfig { steps, ..train_config.clone() }, |step, loss| {
                progress.set_message(format!("loss {:.3} (cross-entropy {:.3}, cosine {:.3})", loss.total, loss.cross_entropy, loss.cosine));
                advance(&progress, &what, step);
            })?;
            first.get_or_insert(report.first);
            last = Some(report.last);
            adapter.save(&path)?;
            // The folder is a usable pipeline at every saved chunk (for eval-adapter or a debate
            // while training goes on, or after a kill).
            manifest.adapters.insert(model_name.clone(), file.clone());
            let mut so_far = losses.clone();
            so_far.insert(model_name.clone(), serde_json::json!({ "examples": examples.len(), "first": first, "last": last }));
            manifest.provenance = provenance(args, &held_out, common_steps(adapter.step()), &so_far);
            manifest.write(&args.out)?;
        }
        progress.finish();
        adapter.save(&path)?;
        let recorded = &earlier["losses"][&model_name];
        let loss = if first.is_none() && earlier["adapter_steps"] == adapter.step() && !recorded.is_null() {
            recorded.clone()
        } else {
            serde_json::json!({ "examples": examples.len(), "first": first, "last": last })
        };
        losses.insert(model_name.clone(), loss);
        trained_steps = Some(common_steps(adapter.step()));
        manifest.adapters.insert(model_name, file);
    }
    if let Some(steps) = trained_steps {
        manifest.provenance = provenance(args, &held_out, steps, &losses);
    }
    manifest.write(&args.out)?;
    Ok(manifest)
}

/// How the pipeline's adapters were trained, for its manifest.
fn provenance(args: &TrainAdapterArgs, held_out: &[String], adapter_steps: u64, losses: &BTreeMap<String, serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "run": args.run.display().to_string(),
        "autoencoder": args.ae.display().to_string(),
        "adapter_steps": adapter_steps,
        "prefix_len": args.prefix_len,
        "objective": args.objective.objective(),
        "context": args.objective.adapter_context.name(),
        "holdout": args.holdout,
        HELD_OUT_IDS: held_out,
        "losses": losses,
    })
}

/// Every turn after the first round of an agent on `model_name` in the run's `problems` (indices): the
/// latents of the round before, the prompt the agent saw (its role as the system message, as the
/// runtime adds it; without the other agents' responses unless `show_text`) and its response.
pub(crate) fn examples(
    run: &Trajectories,
    problems: &[usize],
    ae: &ThoughtAutoencoder,
    model: &runtime::loader::Model,
    model_name: &str,
    show_text: bool,
) -> anyhow::Result<Vec<AdapterExample>> {
    let math = run.config.is_math();
    let tok = &model.tokenizer;
    let mut out = Vec::new();
    for &p in problems {
        let problem = &run.problems[p];
        let responses: Vec<Vec<String>> = problem.rounds.iter().map(|r| r.iter().map(|t| t.response.clone()).collect()).collect();
        for r in 1..problem.rounds.len() {
            let latents: Tensor = ae.encode(&run.round_states(p, r - 1)?)?.squeeze_dim(0);
            for (a, agent) in run.config.agents.iter().enumerate().filter(|(_, ag)| ag.model == model_name) {
                let system = (!agent.role.is_empty()).then(|| ChatMessage::new("system", agent.role.clone()));
                let turns = agents::prompts::conversation(&problem.question, math, &responses[..r], a, show_text);
                let messages: Vec<ChatMessage> = system.into_iter().chain(turns.into_iter().map(|(role, c)| ChatMessage::new(role, c))).collect();
                let context = tok.encode_chat(&messages)?;
                let reference = tok.encode(&responses[r][a], false)?;
                if reference.is_empty() {
                    continue;
                }
                out.push(AdapterExample { agent: a, latents: latents.shallow_clone(), context, reference });
            }
        }
    }
    Ok(out)
}

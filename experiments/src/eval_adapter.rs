//! `tcomm eval-adapter`: the adapters of a thought pipeline on turns they did not train on, fed
//! the real thoughts, routed noise of the same norm, and no prefix: whether the thoughts carry
//! information the adapter uses, measured on its own objective in minutes instead of debates.
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use runtime::thought_model::FrozenModel;
use thoughtcomm::{evaluate_adapter, AdapterTrainConfig, HeldOutLoss, PrefixInput, RoutingPlan, ThoughtPipeline};

use crate::train::{advance, bar};
use crate::train_adapter::{examples, FrozenModelArgs, TrainingContext, HELD_OUT_IDS};
use crate::trajectories::Trajectories;

#[derive(Args)]
pub struct EvalAdapterArgs {
    /// The pipeline folder (from `tcomm train` or `tcomm train-adapter`).
    #[arg(long)]
    pub pipeline: PathBuf,
    /// A debate run with saved states to evaluate on. Default: the run the adapters trained on,
    /// of which only the problems `--holdout` left out are used.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Whether the prompts show the other agents' responses. Default: as the adapters trained.
    #[arg(long, value_enum)]
    pub adapter_context: Option<TrainingContext>,
    /// Seed of the random latents.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub model: FrozenModelArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalAdapterArgs) -> anyhow::Result<()> {
    let device = runtime::device::parse_device(&args.model.device)?;
    let kind = runtime::device::parse_kind(&args.model.dtype, device)?;
    let pipeline = ThoughtPipeline::load(&args.pipeline, device).with_context(|| format!("loading the thought pipeline in {}", args.pipeline.display()))?;
    let provenance = &pipeline.manifest.provenance;
    let trained_on = provenance["run"].as_str().map(PathBuf::from);
    let holdout = provenance["holdout"].as_u64().unwrap_or(0) as usize;
    let (run_dir, own_run) = match (&args.run, &trained_on) {
        (Some(dir), Some(t)) => (dir.clone(), same_dir(dir, t)),
        (Some(dir), None) => (dir.clone(), false),
        (None, Some(t)) => (t.clone(), true),
        (None, None) => bail!("{}: the manifest does not name its training run; give --run", args.pipeline.display()),
    };
    if own_run && holdout == 0 {
        bail!(
            "the adapters trained on every problem of {}: give --run with other problems (a debate with --save-states), or retrain with --holdout N",
            run_dir.display()
        );
    }
    let mut run = Trajectories::load(&run_dir)?;
    run.restore_questions(args.model.data_dir.as_deref())?;
    if run.config.agents.len() != pipeline.num_agents() {
        bail!("{} has {} agents, the pipeline was trained for {}", run_dir.display(), run.config.agents.len(), pipeline.num_agents());
    }
    pipeline.autoencoder.check_states(&run.agent_states()?).with_context(|| format!("the pipeline's autoencoder does not fit the states of {}", run_dir.display()))?;
    let problems = if own_run { held_out(&run, provenance, holdout)? } else { (0..run.problems.len()).collect() };
    let context = args.adapter_context.unwrap_or(TrainingContext::trained(provenance));
    let plan = RoutingPlan::new(&pipeline.structure, thoughtcomm::Routing::Routed);
    let config = AdapterTrainConfig { max_positions: args.model.max_positions, ..AdapterTrainConfig::default() };
    let mut report = serde_json::Map::new();
    let models: std::collections::BTreeSet<String> = run.config.agents.iter().map(|a| a.model.clone()).collect();
    for model_name in models {
        let agent = run.config.agents.iter().position(|a| a.model == model_name).unwrap_or_default();
        let model = runtime::loader::load(&model_name, device, kind)?;
        let examples = examples(&run, &problems, &pipeline.autoencoder, &model, &model_name, context.shows_text())?;
        if examples.is_empty() {
            bail!("{}: no turn after the first round for agents on '{model_name}' in the evaluated problems", run_dir.display());
        }
        let lm = FrozenModel::new(&model.network, model.tokenizer.eos_token_ids());
        let what = format!("eval {model_name}");
        let progress = bar(examples.len() as u64, &what)?;
        let losses = evaluate_adapter(&lm, pipeline.adapter(agent), &plan, &examples, &config, args.seed, |done| advance(&progress, &what, done as u64))?;
        progress.finish_and_clear();
        if !args.json {
            print_table(&model_name, &losses);
        }
        report.insert(model_name, serde_json::to_value(&losses)?);
    }
    if args.json {
        let out = serde_json::json!({
            "pipeline": args.pipeline.display().to_string(),
            "run": run_dir.display().to_string(),
            "problems": problems.iter().map(|&p| run.problems[p].id.as_str()).collect::<Vec<_>>(),
            "context": context.name(),
            "models": report,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// Indices in `run` of the problems the adapters did not train on: the ids the manifest records,
/// or for manifests written before those, the last `holdout` problems of the results file.
fn held_out(run: &Trajectories, provenance: &serde_json::Value, holdout: usize) -> anyhow::Result<Vec<usize>> {
    let Some(ids) = provenance.get(HELD_OUT_IDS).and_then(|v| v.as_array()) else {
        return Ok((run.problems.len().saturating_sub(holdout)..run.problems.len()).collect());
    };
    ids.iter()
        .map(|id| {
            let id = id.as_str().unwrap_or_default();
            run.problems.iter().position(|p| p.id == id).with_context(|| format!("held-out problem '{id}' has no saved states in the training run any more"))
        })
        .collect()
}

fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn print_table(model: &str, losses: &[HeldOutLoss]) {
    let n = losses.first().map_or(0, |l| l.examples);
    println!("{model}: {n} held-out turns (cross-entropy of the recorded response, nats per token; gap = input - thoughts)");
    println!("{:<15} {:>13} {:>8} {:>18} {:>16}", "input", "cross-entropy", "cosine", "gap (± s.e.)", "thoughts better");
    for l in losses {
        let name = match l.input {
            PrefixInput::Thoughts => "thoughts",
            PrefixInput::RandomLatents => "random latents",
            PrefixInput::NoPrefix => "no prefix",
        };
        let gap = if l.input == PrefixInput::Thoughts { "-".to_string() } else { format!("{:+.4} ± {:.4}", l.cross_entropy_gap, l.gap_standard_error) };
        let better = if l.input == PrefixInput::Thoughts { "-".to_string() } else { format!("{}/{n}", l.thoughts_better) };
        println!("{name:<15} {:>13.4} {:>8.4} {gap:>18} {better:>16}", l.mean.cross_entropy, l.mean.cosine);
    }
}

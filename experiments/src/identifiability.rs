//! `tcomm identifiability`: the synthetic identifiability benchmark of the thought autoencoder.
//! Generates agent states from latents with a known shared/private structure, trains the
//! autoencoder with the chosen Jacobian penalty and without it (lambda = 0, the ablation), and
//! reports how well each recovers the latents (MCC) and the structure (F1).
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::ProgressBar;
use thoughtcomm::benchmark::{self, BenchConfig, BenchReport, RecoveryScores, TrainingObserver};
use thoughtcomm::synthetic::SyntheticConfig;
use thoughtcomm::{
    Aggregate, AutoencoderConfig, Estimator, StructureConfig, ThoughtAutoencoder, ThoughtError, TrainConfig, TrainReport,
};

use crate::train::{bar, show_chunk};

const LONG_ABOUT: &str = "\
The synthetic identifiability benchmark of the thought autoencoder.

Latents are i.i.d. Laplace, grouped into thoughts shared by all agents, by each pair of agents and
private to each agent (round-robin, so every group has a latent). Each agent observes only its own
thoughts through an invertible two-layer leaky-ReLU map whose square second layer is sparse and
structurally sparse over all agents (the condition under which single latents are identifiable).
The autoencoder is trained twice on the same data: with --lambda and with lambda = 0 (ablation).

Columns: MCC = mean |Pearson correlation| between true latents and recovered ones after a
Hungarian matching, over the shared (>= 2 agents) and private true latents; structure F1 = F1 of
the recovered agent-by-latent matrix B against the truth (after the same matching).

Estimators: paper (element-wise l1 of the decoder Jacobian), column-norm (the same with each
Jacobian column scaled by its latent's standard deviation), group (l2 over each agent's rows, l1
across agents and latents, column-normalized), log (the default: an l0 relaxation of column-norm).

At the paper's sizes (--latent-dim 128 and up) a training takes hours on a CPU: --checkpoint DIR
saves both trainings there every 200 steps, and a rerun with the same settings resumes them.";

#[derive(clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct Args {
    /// Number of agents (at least 2).
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Seeds the data, the initial weights and the mini-batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of true latents, and of latents the autoencoder fits.
    #[arg(long, default_value_t = 24)]
    latent_dim: usize,
    #[arg(long, default_value_t = 5000)]
    samples: usize,
    /// paper, column-norm, group or log.
    #[arg(long, default_value_t = Estimator::default())]
    estimator: Estimator,
    /// Weight of the Jacobian penalty.
    #[arg(long, default_value_t = 1e-3)]
    lambda: f64,
    /// Adam steps per training run.
    #[arg(long, default_value_t = 6000)]
    steps: u64,
    /// Hidden widths of the encoder (the decoder mirrors them), comma-separated. Default: three
    /// layers as wide as the state (its size rounded up to a power of two, at least 256). Three
    /// layers recover the private latents markedly better than two, and layers narrower than
    /// the state recover far worse at 256 latents (README).
    #[arg(long, value_delimiter = ',')]
    hidden: Vec<i64>,
    #[arg(long, default_value_t = 128)]
    batch_size: i64,
    #[arg(long, default_value_t = 1e-3)]
    learning_rate: f64,
    /// Estimate the penalty on this many random latent columns of the Jacobian per step (default:
    /// all k): an unbiased estimate at that fraction of the Jacobian's cost, for large --latent-dim.
    #[arg(long)]
    jacobian_columns: Option<i64>,
    /// B[i][j] = score > threshold * (largest score); scores are column-scaled |dH/dZ|.
    #[arg(long, default_value_t = 0.1)]
    threshold: f64,
    /// How |dH/dZ| is aggregated over samples: max or mean.
    #[arg(long, default_value_t = StructureConfig::default().aggregate)]
    aggregate: Aggregate,
    /// libtorch intra-op threads.
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Where the autoencoders train: cpu, cuda or cuda:N (the paper's sizes, 512 latents and
    /// up, take many hours per seed on a CPU). CUDA results are not bit-for-bit those of the CPU.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Skip the lambda = 0 training (the ablation): halves the time while tuning at large sizes.
    /// The JSON's `*_no_sparsity` fields are then null.
    #[arg(long)]
    no_ablation: bool,
    /// Save each training's autoencoder in this folder every 200 steps; a rerun with the same
    /// settings (and the same or more --steps) resumes from it.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
}

pub fn run(mut args: Args) -> anyhow::Result<()> {
    tch::set_num_threads(args.threads);
    let synthetic = SyntheticConfig { agents: args.agents, latent_dim: args.latent_dim, samples: args.samples, seed: args.seed };
    if args.hidden.is_empty() {
        args.hidden = default_hidden(synthetic.state_dim());
    }
    let config = BenchConfig {
        data: synthetic,
        estimator: args.estimator,
        lambda: args.lambda,
        hidden: args.hidden.clone(),
        steps: args.steps,
        train: train_config(&args),
        structure: StructureConfig { aggregate: args.aggregate, threshold: args.threshold },
        ablation: !args.no_ablation,
        device: runtime::device::parse_device(&args.device)?,
    };
    if let Some(dir) = &args.checkpoint {
        check_checkpoint_data(dir, &config.data)?;
    }
    let mut observer = Progress { args: &args, bar: None };
    let report = benchmark::run_observed(&config, &mut observer).context("identifiability benchmark")?;
    if args.json {
        println!("{}", to_json(&args, &report));
    } else {
        print_table(&args, &report);
    }
    Ok(())
}

/// Three layers of the state's size rounded up to a power of two, at least 256: 256 for the
/// default 24 latents (43 state dimensions) and for 128 (221), 512 for 256 latents (441), where
/// three layers of 256 reached MCC 0.60 and three of 512 0.84 (seed 0, 24,000 steps).
fn default_hidden(state_dim: usize) -> Vec<i64> {
    vec![state_dim.next_power_of_two().max(256) as i64; 3]
}

fn train_config(args: &Args) -> TrainConfig {
    TrainConfig {
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        seed: args.seed,
        jacobian_columns: args.jacobian_columns,
    }
}

/// File in a --checkpoint folder naming the data its autoencoders were trained on.
const DATA_FILE: &str = "data.json";

/// Writes the data settings into a new checkpoint folder, or checks that an existing one holds
/// autoencoders trained on the same data (the checkpoints themselves record shapes and training).
fn check_checkpoint_data(dir: &Path, data: &SyntheticConfig) -> anyhow::Result<()> {
    let settings = serde_json::json!({
        "agents": data.agents, "latent_dim": data.latent_dim, "samples": data.samples, "seed": data.seed,
    });
    let path = dir.join(DATA_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let found: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
        anyhow::ensure!(
            found == settings,
            "{}: the checkpoints there were trained on other data ({found}); this run is {settings}: use another --checkpoint folder",
            path.display()
        );
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    std::fs::write(&path, settings.to_string()).with_context(|| format!("{}: cannot write", path.display()))
}

/// A progress bar (a log line every tenth without a terminal) per training, and the
/// --checkpoint saves and resumes.
struct Progress<'a> {
    args: &'a Args,
    bar: Option<ProgressBar>,
}

impl Progress<'_> {
    fn checkpoint(&self, name: &str) -> Option<PathBuf> {
        self.args.checkpoint.as_ref().map(|dir| dir.join(format!("{name}.safetensors")))
    }
}

impl TrainingObserver for Progress<'_> {
    fn resume(&mut self, name: &str, config: &AutoencoderConfig) -> thoughtcomm::Result<Option<ThoughtAutoencoder>> {
        let steps = self.args.steps;
        let bar = bar(steps, name).map_err(|e| ThoughtError::Config(e.to_string()))?;
        let resumed = match self.checkpoint(name) {
            Some(path) if path.exists() => {
                let ae = ThoughtAutoencoder::load_expecting(&path, config)?;
                let expected = train_config(self.args);
                if ae.train_config() != &expected {
                    let found = format!("{:?}", ae.train_config());
                    return Err(ThoughtError::checkpoint_mismatch(&path, "training settings", found, format!("{expected:?}")));
                }
                if ae.step() > steps {
                    return Err(ThoughtError::checkpoint_mismatch(&path, "step (beyond --steps)", ae.step(), steps));
                }
                eprintln!("{name}: resuming at step {} of {steps} from {}", ae.step(), path.display());
                bar.set_position(ae.step());
                Some(ae)
            }
            _ => None,
        };
        self.bar = Some(bar);
        Ok(resumed)
    }

    fn after_chunk(&mut self, name: &str, ae: &ThoughtAutoencoder, report: &TrainReport) -> thoughtcomm::Result<()> {
        if let Some(bar) = &self.bar {
            show_chunk(bar, name, ae.step(), report);
            if ae.step() >= self.args.steps {
                bar.finish();
            }
        }
        match self.checkpoint(name) {
            Some(path) => ae.save(&path),
            None => Ok(()),
        }
    }
}

fn to_json(args: &Args, r: &BenchReport) -> serde_json::Value {
    serde_json::json!({
        "mcc_shared": r.sparse.mcc_shared,
        "mcc_private": r.sparse.mcc_private,
        "structure_f1": r.sparse.structure_f1,
        "mcc_shared_no_sparsity": r.no_sparsity.as_ref().map(|s| s.mcc_shared),
        "mcc_private_no_sparsity": r.no_sparsity.as_ref().map(|s| s.mcc_private),
        "structure_f1_no_sparsity": r.no_sparsity.as_ref().map(|s| s.structure_f1),
        "settings": {
            "agents": args.agents, "seed": args.seed, "latent_dim": args.latent_dim, "samples": args.samples,
            "estimator": args.estimator, "lambda": args.lambda, "steps": args.steps, "hidden": args.hidden,
            "batch_size": args.batch_size, "learning_rate": args.learning_rate, "jacobian_columns": args.jacobian_columns, "threshold": args.threshold,
            "aggregate": args.aggregate.name(), "threads": args.threads, "device": args.device,
        },
        "true_alpha": r.true_alpha,
        "sparse": r.sparse,
        "no_sparsity": r.no_sparsity,
    })
}

fn print_table(args: &Args, r: &BenchReport) {
    let shared = r.true_alpha.iter().filter(|&&a| a >= 2).count();
    println!(
        "identifiability: {} agents, {} latents ({} shared, {} private), {} samples, seed {}",
        args.agents,
        args.latent_dim,
        shared,
        args.latent_dim - shared,
        args.samples,
        args.seed
    );
    println!("estimator {}, {} steps, hidden {:?}, batch {}", args.estimator, args.steps, args.hidden, args.batch_size);
    println!(
        "{:<22} {:>10} {:>11} {:>12} {:>14} {:>9} {:>10}",
        "", "MCC shared", "MCC private", "structure F1", "reconstruction", "train s", "samples/s"
    );
    let row = |name: String, s: &RecoveryScores| {
        println!(
            "{:<22} {:>10.3} {:>11.3} {:>12.3} {:>14.4} {:>9.1} {:>10.0}",
            name, s.mcc_shared, s.mcc_private, s.structure_f1, s.reconstruction, s.train_seconds, s.samples_per_second
        )
    };
    row(format!("lambda = {}", args.lambda), &r.sparse);
    if let Some(ablation) = &r.no_sparsity {
        row("lambda = 0 (ablation)".into(), ablation);
    }
}

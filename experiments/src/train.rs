//! Training ThoughtComm's parts on debate trajectories:
//! - `tcomm train-ae`: the thought autoencoder on the states a debate saved, then its structure;
//! - `tcomm train-adapter`: the prefix adapter(s), backbone frozen, into a pipeline folder;
//! - `tcomm train`: the whole pipeline (collect states with a text debate, train both) into one
//!   folder with a manifest, which `tcomm debate --mode thoughtcomm --thoughts DIR` uses.
//!
//! Each step resumes: the debate from its results, the autoencoder and the adapters from their
//! checkpoints (training continues to the asked number of steps).
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use thoughtcomm::{
    AgentStates, Aggregate, AutoencoderConfig, Estimator, StructureConfig, ThoughtAutoencoder, ThoughtStructure, TrainConfig,
    TrainReport,
};

use crate::structure_plot;
use crate::trajectories::Trajectories;

pub const AE_FILE: &str = "autoencoder.safetensors";
pub const STRUCTURE_FILE: &str = "structure.json";

#[derive(Args, Clone)]
pub struct TrainAeArgs {
    /// A debate run folder with saved states (`tcomm debate --save-states`).
    #[arg(long)]
    pub states: PathBuf,
    /// k, the number of latent thoughts.
    #[arg(long, default_value_t = 64)]
    pub latent_dim: i64,
    /// Weight of the decoder-Jacobian penalty (0: a plain autoencoder). The penalty sums over
    /// all n_h x k Jacobian entries while the reconstruction is a mean, so the weight that suits
    /// model states (n_h = agents x hidden size, thousands) is far below the synthetic
    /// benchmark's 1e-3, which switches the decoder off on them (see the README's sweep).
    #[arg(long = "lambda", default_value_t = 3e-5)]
    pub lambda: f64,
    /// paper, column-norm, group or log (see `tcomm identifiability --help`).
    #[arg(long, default_value_t = Estimator::default())]
    pub estimator: Estimator,
    /// Hidden widths of the encoder (the decoder mirrors them), comma-separated.
    #[arg(long, default_value = "256", value_delimiter = ',')]
    pub hidden: Vec<i64>,
    /// Total Adam steps (a rerun continues from the checkpoint up to this number).
    #[arg(long, default_value_t = 3000)]
    pub steps: u64,
    #[arg(long, default_value_t = 128)]
    pub batch_size: i64,
    #[arg(long, default_value_t = 1e-3)]
    pub learning_rate: f64,
    /// Estimate the penalty on this many random latent columns of the Jacobian per step (default:
    /// all k): an unbiased estimate at that fraction of the Jacobian's cost.
    #[arg(long)]
    pub jacobian_columns: Option<i64>,
    /// B[i][j] = score > threshold * (largest score).
    #[arg(long, default_value_t = 0.1)]
    pub threshold: f64,
    /// How |dH/dZ| is aggregated over samples into the scores: max or mean.
    #[arg(long, default_value_t = StructureConfig::default().aggregate)]
    pub aggregate: Aggregate,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the autoencoder trains: cpu, cuda or cuda:N (the checkpoint is the same either way;
    /// CUDA arithmetic is not bit-for-bit the CPU's).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Another debate run with saved states (e.g. dev problems) on which the explained variance
    /// is also reported: how well the autoencoder generalizes beyond its training states.
    #[arg(long)]
    pub held_out: Option<PathBuf>,
    /// Output folder: autoencoder.safetensors/.json, structure.json, structure.png.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn bar(len: u64, what: &str) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(len);
    let template = format!("{{spinner}} {what} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {{msg}} (eta {{eta}})");
    bar.set_style(ProgressStyle::with_template(&template).map_err(|e| anyhow::anyhow!("progress bar: {e}"))?);
    Ok(bar)
}

/// Moves `bar` to `position`. Without a terminal (nohup, a pipe) indicatif draws nothing, so
/// there a line is logged at every tenth of the work, with the bar's message.
pub fn advance(bar: &ProgressBar, what: &str, position: u64) {
    let len = bar.length().unwrap_or(0).max(1);
    let tenth = |p: u64| p.min(len) * 10 / len;
    if bar.is_hidden() && tenth(position) > tenth(bar.position()) {
        let elapsed = format!("{:.0?}", bar.elapsed());
        tracing::info!(progress = format!("{position}/{len}"), elapsed, "{what}: {}", bar.message());
    }
    bar.set_position(position);
}

/// Shows a finished chunk of autoencoder training on `bar`: its losses and the step reached.
pub fn show_chunk(bar: &ProgressBar, what: &str, step: u64, report: &TrainReport) {
    bar.set_message(format!("reconstruction {:.4} penalty {:.3}", report.reconstruction, report.penalty));
    advance(bar, what, step);
}

/// Below this share of the states' variance reconstructed, the autoencoder's latents carry
/// (almost) nothing: typically a --lambda too strong for the states' size, whose penalty sums
/// over all n_h x k Jacobian entries while the reconstruction is a mean per entry.
pub const MIN_EXPLAINED_VARIANCE: f64 = 0.05;

/// `tcomm train-ae`; returns the share of the training states' variance the autoencoder
/// reconstructs (a warning is printed when it is below [`MIN_EXPLAINED_VARIANCE`]).
pub fn train_ae(args: TrainAeArgs) -> anyhow::Result<f64> {
    let states = Trajectories::load(&args.states)?.agent_states()?;
    let (ae, structure) = fit_autoencoder(&states, &args)?;
    let explained = ae.explained_variance(&states)?;
    println!("{}", describe_structure(&structure));
    println!(
        "autoencoder: {} samples, step {}, explained variance of the states {explained:.3}, written to {}",
        states.samples(),
        ae.step(),
        args.out.join(AE_FILE).display()
    );
    if let Some(dir) = &args.held_out {
        let held_out = Trajectories::load(dir)?.agent_states()?;
        let explained = ae.explained_variance(&held_out)?;
        println!("held-out states ({}): {} samples, explained variance {explained:.3}", dir.display(), held_out.samples());
    }
    if explained < MIN_EXPLAINED_VARIANCE {
        tracing::warn!(
            explained,
            lambda = args.lambda,
            "the autoencoder reconstructs almost none of the states: its latents carry no thoughts; lower --lambda"
        );
    }
    Ok(explained)
}

/// Trains (or resumes) the autoencoder on a run's states and writes it with its structure.
fn fit_autoencoder(states: &AgentStates, args: &TrainAeArgs) -> anyhow::Result<(ThoughtAutoencoder, ThoughtStructure)> {
    let config = AutoencoderConfig {
        block_sizes: states.block_sizes().to_vec(),
        latent_dim: args.latent_dim,
        hidden: args.hidden.clone(),
        lambda: args.lambda,
        estimator: args.estimator,
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}: cannot create", args.out.display()))?;
    let path = args.out.join(AE_FILE);
    let device = runtime::device::parse_device(&args.device)?;
    let ae = if path.exists() {
        let ae = ThoughtAutoencoder::load_expecting(&path, &config)?;
        eprintln!("resuming the autoencoder at step {}", ae.step());
        ae
    } else {
        // Batches are drawn with replacement; one larger than the data only repeats samples at
        // the cost of a larger Jacobian (batch x n_h x k).
        let batch_size = args.batch_size.min(states.samples());
        if batch_size < args.batch_size {
            tracing::info!(batch_size, samples = states.samples(), "batch size lowered to the number of samples");
        }
        let train = TrainConfig {
            batch_size,
            learning_rate: args.learning_rate,
            seed: args.seed,
            jacobian_columns: args.jacobian_columns,
        };
        ThoughtAutoencoder::new(config, train)?
    };
    let mut ae = ae.to_device(device);
    let bar = bar(args.steps, "autoencoder")?;
    bar.set_position(ae.step().min(args.steps));
    const CHUNK: u64 = 50;
    ae.fit_until(states, args.steps, CHUNK, |ae, report| {
        show_chunk(&bar, "autoencoder", ae.step(), report);
        // Saved as it goes: a killed run resumes from the last chunk.
        ae.save(&path)
    })?;
    bar.finish();
    ae.save(&path)?;
    let structure_config = StructureConfig { aggregate: args.aggregate, threshold: args.threshold };
    let structure = ThoughtStructure::recover(&ae, states, &structure_config)?;
    let json = serde_json::to_string_pretty(&structure)?;
    std::fs::write(args.out.join(STRUCTURE_FILE), json).with_context(|| format!("{}: cannot write the structure", args.out.display()))?;
    structure_plot::heatmap(&args.out.join("structure.png"), &structure)?;
    Ok((ae, structure))
}

/// Per agent: how many thoughts it has, shared and private.
pub fn describe_structure(s: &ThoughtStructure) -> String {
    let mut out = String::from("| agent | thoughts | shared | private |\n| --- | --- | --- | --- |\n");
    for i in 0..s.num_agents() {
        out.push_str(&format!("| {i} | {} | {} | {} |\n", s.thoughts(i).len(), s.shared(i).len(), s.private(i).len()));
    }
    let unused = s.alpha.iter().filter(|&&a| a == 0).count();
    let all = s.alpha.iter().filter(|&&a| a == s.num_agents()).count();
    out.push_str(&format!("\n{} latents: {all} shared by all agents, {unused} unused\n", s.num_latents()));
    out
}

//! `tcomm bench ae`: training throughput (samples/s) of the thought autoencoder against the
//! equivalent PyTorch script (`scripts/bench_ae.py`: the same network, objective, optimizer,
//! batch and thread count), measured side by side in one invocation.
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use thoughtcomm::{AgentStates, AutoencoderConfig, Estimator, ThoughtAutoencoder, TrainConfig};

use super::{default_python, run_json_worker, scripts_dir};

#[derive(Args)]
pub struct AeArgs {
    /// Agent state sizes, comma-separated (default: the identifiability benchmark's 3 agents).
    #[arg(long, default_value = "15,14,14", value_delimiter = ',')]
    blocks: Vec<i64>,
    #[arg(long, default_value_t = 24)]
    latent_dim: i64,
    /// Hidden widths of the encoder (the decoder mirrors them), comma-separated.
    #[arg(long, default_value = "256,256,256", value_delimiter = ',')]
    hidden: Vec<i64>,
    /// paper, column-norm, group or log (the default is train-ae's).
    #[arg(long, default_value_t = Estimator::default())]
    estimator: Estimator,
    #[arg(long = "lambda", default_value_t = 1e-3)]
    lambda: f64,
    #[arg(long, default_value_t = 128)]
    batch_size: i64,
    #[arg(long, default_value_t = 5000)]
    samples: i64,
    /// Timed Adam steps per measurement.
    #[arg(long, default_value_t = 500)]
    steps: u64,
    /// Untimed steps before each measurement.
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    /// Intra-op threads on both sides.
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Measurements per side, alternating; the fastest of each is kept.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// The Python with torch (default: the repository's .venv).
    #[arg(long)]
    python: Option<PathBuf>,
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Deserialize)]
struct PytorchRun {
    samples_per_second: f64,
    torch: String,
}

#[derive(Serialize)]
struct AeReport {
    ours_samples_per_second: f64,
    pytorch_samples_per_second: f64,
    ratio: f64,
    torch: String,
    blocks: Vec<i64>,
    latent_dim: i64,
    hidden: Vec<i64>,
    estimator: String,
    lambda: f64,
    batch_size: i64,
    steps: u64,
    threads: i32,
    repeat: usize,
}

/// One measurement of this implementation: samples/s over `steps` timed steps.
fn measure_ours(args: &AeArgs) -> anyhow::Result<f64> {
    let n_h: i64 = args.blocks.iter().sum();
    let states = AgentStates::from_concat(Tensor::randn([args.samples, n_h], (Kind::Float, Device::Cpu)), args.blocks.clone())?;
    let config = AutoencoderConfig {
        block_sizes: args.blocks.clone(),
        latent_dim: args.latent_dim,
        hidden: args.hidden.clone(),
        lambda: args.lambda,
        estimator: args.estimator,
    };
    let mut ae = ThoughtAutoencoder::new(config, TrainConfig { batch_size: args.batch_size, learning_rate: 1e-3, seed: 0, jacobian_columns: None })?;
    ae.fit(&states, args.warmup)?;
    let start = Instant::now();
    ae.fit(&states, args.steps)?;
    Ok(args.steps as f64 * args.batch_size as f64 / start.elapsed().as_secs_f64())
}

fn measure_pytorch(args: &AeArgs) -> anyhow::Result<PytorchRun> {
    let python = args.python.clone().unwrap_or_else(default_python);
    let join = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let mut cmd = Command::new(&python);
    cmd.arg(scripts_dir().join("bench_ae.py"))
        .args(["--blocks", &join(&args.blocks), "--hidden", &join(&args.hidden)])
        .args(["--latent-dim", &args.latent_dim.to_string(), "--estimator", args.estimator.name()])
        .args(["--lambda", &args.lambda.to_string(), "--batch-size", &args.batch_size.to_string()])
        .args(["--samples", &args.samples.to_string(), "--steps", &args.steps.to_string()])
        .args(["--warmup", &args.warmup.to_string(), "--threads", &args.threads.to_string()]);
    run_json_worker(cmd).with_context(|| format!("the PyTorch side ({})", python.display()))
}

pub fn run(args: AeArgs) -> anyhow::Result<()> {
    tch::set_num_threads(args.threads);
    let (mut ours, mut theirs): (f64, Option<PytorchRun>) = (0.0, None);
    for i in 0..args.repeat.max(1) {
        tracing::info!(measurement = i + 1, "thought autoencoder training throughput");
        ours = ours.max(measure_ours(&args)?);
        let run = measure_pytorch(&args)?;
        if theirs.as_ref().is_none_or(|t| run.samples_per_second > t.samples_per_second) {
            theirs = Some(run);
        }
    }
    let theirs = theirs.context("no PyTorch measurement")?;
    let report = AeReport {
        ours_samples_per_second: ours,
        pytorch_samples_per_second: theirs.samples_per_second,
        ratio: ours / theirs.samples_per_second,
        torch: theirs.torch,
        blocks: args.blocks.clone(),
        latent_dim: args.latent_dim,
        hidden: args.hidden.clone(),
        estimator: args.estimator.name().into(),
        lambda: args.lambda,
        batch_size: args.batch_size,
        steps: args.steps,
        threads: args.threads,
        repeat: args.repeat,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("| implementation | samples/s |\n| --- | --- |");
        println!("| thoughtcomm (tch) | {:.0} |\n| PyTorch {} | {:.0} |", report.ours_samples_per_second, report.torch, report.pytorch_samples_per_second);
        println!(
            "ratio ours / PyTorch: {:.2} (blocks {:?}, k {}, hidden {:?}, {}, batch {}, {} threads, best of {})",
            report.ratio, report.blocks, report.latent_dim, report.hidden, report.estimator, report.batch_size, report.threads, report.repeat
        );
    }
    Ok(())
}

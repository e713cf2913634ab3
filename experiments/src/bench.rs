//! `tcomm bench`: benchmarks that measure this implementation side by side with the tools users
//! know, in one invocation: `decode` (the engine against transformers and llama.cpp), `serve`
//! (the gRPC runtime against the engine called directly), `ae` (the thought autoencoder's
//! training against PyTorch). This file holds the subcommands and the helpers they share.
mod ae;
mod decode;
mod serve;
mod worker;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use runtime::server::convert::kind_name;
use serde::Deserialize;

pub use crate::infer::ModelArgs;
pub use worker::WorkerArgs;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Decode speed (tokens/s, time to first token, peak RSS) of this engine against transformers.
    #[command(long_about = decode::LONG_ABOUT)]
    Decode(decode::DecodeArgs),
    /// One measured run of this engine in its own process; prints one JSON line (used by `decode`).
    #[command(hide = true)]
    DecodeWorker(WorkerArgs),
    /// Throughput and latency through the in-process gRPC runtime against the engine called directly.
    Serve(serve::ServeArgs),
    /// Training throughput of the thought autoencoder against the equivalent PyTorch script.
    Ae(ae::AeArgs),
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Decode(args) => decode::run(args),
        BenchCommand::DecodeWorker(args) => worker::run(args),
        BenchCommand::Serve(args) => serve::run(args),
        BenchCommand::Ae(args) => ae::run(args),
    }
}

fn set_omp_policy(cmd: &mut Command, policy: &str) {
    if policy != "inherit" {
        cmd.env("OMP_WAIT_POLICY", policy);
    }
}

/// The 1-minute load average (Linux), None elsewhere.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Runs a worker, returns its last stdout line parsed as JSON; stderr is shown on failure.
pub(super) fn run_json_worker<T: for<'de> Deserialize<'de>>(mut cmd: Command) -> anyhow::Result<T> {
    tracing::debug!(?cmd, "starting worker");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!(
            "{:?} exited with {}:\n{}",
            cmd.get_program(),
            out.status,
            tail.join("\n")
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("the worker printed no JSON line")?;
    serde_json::from_str(line).with_context(|| format!("parsing the worker's output: {line}"))
}

fn repo_root() -> PathBuf {
    match std::env::var_os("TCOMM_ROOT") {
        Some(root) if Path::new(&root).join("scripts").is_dir() => PathBuf::from(root),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

pub(super) fn scripts_dir() -> PathBuf {
    repo_root().join("scripts")
}

pub(super) fn default_python() -> PathBuf {
    let venv = repo_root().join(".venv").join("bin").join("python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

//! `tcomm train`: the whole ThoughtComm training pipeline in one folder.
//! 1. `<out>/collect`: a text debate on the training split with `--save-states`;
//! 2. `<out>/ae`: the thought autoencoder and its structure (`tcomm train-ae`);
//! 3. `<out>`: the prefix adapters and `manifest.json` (`tcomm train-adapter`).
//!
//! Every step resumes, so rerunning the same command after a kill continues where it stopped.
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use agents::dataset::Dataset;
use clap::{Args, Parser};

use crate::debate::DebateArgs;
use crate::train::{self, TrainAeArgs};
use crate::train_adapter::{self, ObjectiveArgs, TrainAdapterArgs};

/// The debate settings shared by `tcomm train` (to collect states) and `tcomm experiment` (every
/// arm): the same agents, rounds, token budget, seeds and data.
#[derive(Args, Clone)]
pub struct DebateSetup {
    /// Model of every agent, or one per agent when repeated.
    #[arg(long = "model", default_value = runtime::registry::DEFAULT_MODEL)]
    pub models: Vec<String>,
    /// gsm8k, math or math500.
    #[arg(long, default_value = "gsm8k")]
    pub dataset: String,
    #[arg(long, default_value_t = 3)]
    pub agents: usize,
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: u32,
    /// Data folder with gsm8k/ and math/ (default: $TCOMM_DATA, then ../shared/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Problems solved concurrently.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: auto (f32 on the CPU, bf16 on CUDA), f32, bf16, f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
}

impl DebateSetup {
    /// These settings as `tcomm debate` flags, for the problems `limit` of `split` into `out`.
    pub fn words(&self, split: Option<&str>, limit: usize, out: &std::path::Path) -> Vec<OsString> {
        let mut pairs = vec![
            ("--dataset", self.dataset.clone()),
            ("--limit", limit.to_string()),
            ("--agents", self.agents.to_string()),
            ("--rounds", self.rounds.to_string()),
            ("--max-new-tokens", self.max_new_tokens.to_string()),
            ("--parallel", self.parallel.to_string()),
            ("--seed", self.seed.to_string()),
            ("--device", self.device.clone()),
            ("--dtype", self.dtype.clone()),
            ("--out", out.display().to_string()),
        ];
        pairs.extend(self.models.iter().map(|m| ("--model", m.clone())));
        if let Some(split) = split {
            pairs.push(("--split", split.to_string()));
        }
        if let Some(dir) = &self.data_dir {
            pairs.push(("--data-dir", dir.display().to_string()));
        }
        words(&pairs)
    }
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub setup: DebateSetup,
    /// Split of the training debates. Default: train for gsm8k; for math and math500, MATH's
    /// test_dev without the MATH-500 problems (MATH has no training split here, and MATH-500,
    /// the MATH evaluation set, is a subset of the test split).
    #[arg(long)]
    pub split: Option<String>,
    /// Training problems whose debates are collected (the paper used about 500).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Layer of the states (default 2/3 of the depth).
    #[arg(long)]
    pub state_layer: Option<u32>,
    #[arg(long, default_value_t = 64)]
    pub latent_dim: i64,
    /// Weight of the autoencoder's Jacobian penalty (see `tcomm train-ae --help`).
    #[arg(long = "lambda", default_value_t = 3e-5)]
    pub lambda: f64,
    #[arg(long, default_value_t = 3000)]
    pub ae_steps: u64,
    #[arg(long, default_value_t = 200)]
    pub adapter_steps: u64,
    /// m, prefix vectors per agent.
    #[arg(long, default_value_t = 1)]
    pub prefix_len: i64,
    #[arg(long, default_value_t = 1e-4)]
    pub adapter_learning_rate: f64,
    /// Collected problems left out of the adapter's training, for `tcomm eval-adapter`.
    #[arg(long, default_value_t = 0)]
    pub holdout: usize,
    #[command(flatten)]
    pub objective: ObjectiveArgs,
    /// The pipeline folder (what `tcomm debate --mode thoughtcomm --thoughts` takes).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Parser)]
struct Subcommand<A: Args> {
    #[command(flatten)]
    args: A,
}

/// Builds the arguments of subcommand `name` from words, with the defaults of its command line
/// (so a pipeline step run from here behaves as the same step run by hand).
pub fn parse_words<A: Args>(name: &str, words: Vec<OsString>) -> anyhow::Result<A> {
    let argv = std::iter::once(OsString::from(name)).chain(words);
    Ok(Subcommand::<A>::try_parse_from(argv).map_err(|e| anyhow::anyhow!("{name} arguments: {e}"))?.args)
}

/// `--flag value` pairs (and bare flags) as words.
pub fn words(pairs: &[(&str, String)]) -> Vec<OsString> {
    pairs.iter().flat_map(|(k, v)| [OsString::from(*k)].into_iter().chain((!v.is_empty()).then(|| OsString::from(v)))).collect()
}

/// The pipeline's training debates (text debate with saved states), inside its folder.
pub const COLLECT_DIR: &str = "collect";

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let setup = &args.setup;
    let source = training_source(&setup.dataset, args.split.as_deref())?;
    let collect = args.out.join(COLLECT_DIR);
    let mut collect_words = words(&[("--mode", "text".into()), ("--save-states", String::new())]);
    let collect_setup = DebateSetup { dataset: source.dataset.name().to_string(), ..setup.clone() };
    collect_words.extend(collect_setup.words(Some(source.split.as_str()), args.limit, &collect));
    collect_words.extend(source.exclude.iter().flat_map(|d| words(&[("--exclude", d.name().to_string())])));
    if let Some(layer) = args.state_layer {
        collect_words.extend(words(&[("--state-layer", layer.to_string())]));
    }
    eprintln!("[1/3] collecting debate states into {}", collect.display());
    crate::debate::run(parse_words::<DebateArgs>("debate", collect_words)?)?;

    let ae_dir = args.out.join("ae");
    eprintln!("[2/3] training the thought autoencoder into {}", ae_dir.display());
    let mut ae_args: TrainAeArgs = parse_words("train-ae", words(&[("--states", collect.display().to_string()), ("--out", ae_dir.display().to_string())]))?;
    ae_args.latent_dim = args.latent_dim;
    ae_args.lambda = args.lambda;
    ae_args.steps = args.ae_steps;
    ae_args.seed = setup.seed;
    let lambda = ae_args.lambda;
    let explained = train::train_ae(ae_args)?;
    // An adapter trained on latents that carry nothing costs hours and injects noise.
    if explained < train::MIN_EXPLAINED_VARIANCE {
        anyhow::bail!(
            "the autoencoder in {dir} reconstructs {:.1}% of the states' variance (at least {:.0}% needed): with --lambda {lambda} \
             the Jacobian penalty switched its decoder off. Remove {dir} and rerun with a smaller --lambda (the collected states are kept)",
            100.0 * explained,
            100.0 * train::MIN_EXPLAINED_VARIANCE,
            dir = ae_dir.display(),
        );
    }

    eprintln!("[3/3] training the prefix adapter(s) into {}", args.out.display());
    let mut adapter_args = adapter_args(&collect, &ae_dir, &args.out, setup, &args.objective)?;
    adapter_args.prefix_len = args.prefix_len;
    adapter_args.steps = args.adapter_steps;
    adapter_args.learning_rate = args.adapter_learning_rate;
    adapter_args.holdout = args.holdout;
    train_adapter::run(adapter_args)
}

/// Where a pipeline for a dataset collects its training debates.
#[derive(Debug, PartialEq)]
pub struct TrainingSource {
    pub dataset: Dataset,
    pub split: String,
    /// Datasets whose evaluation problems are left out of the training problems.
    pub exclude: Vec<Dataset>,
}

/// GSM8K trains on its train split. MATH has no training split in the shared data, so both MATH
/// datasets train on MATH's test_dev without the MATH-500 problems (all of which are in the test
/// split): MATH-500 is the MATH evaluation set. `split` overrides the split only.
pub fn training_source(dataset: &str, split: Option<&str>) -> anyhow::Result<TrainingSource> {
    let (dataset, default_split, exclude) = match dataset.parse::<Dataset>()? {
        Dataset::Gsm8k => (Dataset::Gsm8k, "train", vec![]),
        Dataset::Math | Dataset::Math500 => (Dataset::Math, "test_dev", vec![Dataset::Math500]),
    };
    Ok(TrainingSource { dataset, split: split.unwrap_or(default_split).to_string(), exclude })
}

/// `tcomm train-adapter` arguments for the states of `run`, the autoencoder in `ae`, into `out`,
/// with the debate's seed, device and dtype and the given objective; the rest are its defaults.
pub fn adapter_args(run: &Path, ae: &Path, out: &Path, setup: &DebateSetup, objective: &ObjectiveArgs) -> anyhow::Result<TrainAdapterArgs> {
    let mut args: TrainAdapterArgs =
        parse_words("train-adapter", words(&[("--run", run.display().to_string()), ("--ae", ae.display().to_string()), ("--out", out.display().to_string())]))?;
    args.objective = objective.clone();
    args.seed = setup.seed;
    args.model.device = setup.device.clone();
    args.model.dtype = setup.dtype.clone();
    args.model.data_dir = setup.data_dir.clone();
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn math_pipelines_train_on_math_without_math500() {
        let source = |d: &str, split: Option<&str>| training_source(d, split).map_err(|e| e.to_string());
        let gsm8k = TrainingSource { dataset: Dataset::Gsm8k, split: "train".into(), exclude: vec![] };
        let math = TrainingSource { dataset: Dataset::Math, split: "test_dev".into(), exclude: vec![Dataset::Math500] };
        assert_eq!(source("gsm8k", None), Ok(gsm8k));
        assert_eq!(source("math", None), Ok(math));
        assert_eq!(source("math500", None), source("math", None));
        assert_eq!(source("gsm8k", Some("dev")).map(|s| s.split), Ok("dev".to_string()));
        assert!(source("gsm9k", None).is_err_and(|e| e.contains("gsm9k")));
    }
}

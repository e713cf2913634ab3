//! `tcomm experiment thoughtcomm-vs-text`: single model, text debate and ThoughtComm (plus the
//! chosen ablations) on the same problems with the same seeds, agents, rounds and token budget,
//! then `tcomm report` with text debate as the baseline of the paired tests. The ThoughtComm arms
//! take the text arm's first round (`tcomm debate --first-round-from`), so that every paired test
//! compares what happens from round 2 on. Every run resumes.
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use thoughtcomm::PipelineManifest;

use crate::debate::DebateArgs;
use crate::train_adapter::{self, ObjectiveArgs, TrainingContext};
use crate::train_pipeline::{self, parse_words, words, DebateSetup, TrainArgs};

#[derive(Args)]
pub struct ExperimentArgs {
    #[command(subcommand)]
    command: ExperimentCommand,
}

#[derive(Subcommand)]
enum ExperimentCommand {
    /// Single model vs text debate vs ThoughtComm on the same problems, with ablations and a report.
    ThoughtcommVsText(VsTextArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ablation {
    /// Agreement weights of 1 (no reweighting).
    NoAgreement,
    /// All thoughts to all agents.
    NoRouting,
    /// Routed random latents of the real thoughts' norm: do the thoughts carry information?
    RandomLatents,
    /// The prefix replaces the other agents' texts instead of coming on top.
    HideText,
}

impl Ablation {
    fn name(self) -> &'static str {
        match self {
            Ablation::NoAgreement => "no-agreement",
            Ablation::NoRouting => "no-routing",
            Ablation::RandomLatents => "random-latents",
            Ablation::HideText => "hide-text",
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Ablation::NoAgreement => &["--agreement", "none"],
            Ablation::NoRouting => &["--routing", "all"],
            Ablation::RandomLatents => &["--random-latents"],
            Ablation::HideText => &["--hide-text"],
        }
    }
}

#[derive(Args)]
pub struct VsTextArgs {
    #[command(flatten)]
    pub setup: DebateSetup,
    /// Evaluation split (default: the dataset's: dev, or test_dev for math).
    #[arg(long)]
    pub split: Option<String>,
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
    /// A trained pipeline folder; default: train one into <out>/pipeline (see --train-limit).
    #[arg(long)]
    pub thoughts: Option<PathBuf>,
    /// Training problems when the pipeline is trained here.
    #[arg(long, default_value_t = 100)]
    pub train_limit: usize,
    /// Adam steps of the autoencoder when the pipeline is trained here.
    #[arg(long, default_value_t = 3000)]
    pub ae_steps: u64,
    /// Optimizer steps of each adapter trained here (the pipeline's and those of --prefix-lens).
    #[arg(long, default_value_t = 200)]
    pub adapter_steps: u64,
    /// Ablation runs to add, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub ablations: Vec<Ablation>,
    /// Extra prefix lengths m to train adapters for and run (the main run uses the pipeline's m),
    /// comma-separated; needs a pipeline made by `tcomm train` (it reuses its states and autoencoder).
    #[arg(long, value_delimiter = ',')]
    pub prefix_lens: Vec<i64>,
    #[command(flatten)]
    pub objective: ObjectiveArgs,
    /// Let every ThoughtComm arm sample its own first round instead of taking the text arm's.
    /// Sampled first rounds differ between any two runs (batch composition changes the logits'
    /// last bits, and a temperature turns that into other tokens), so the paired tests then also
    /// count round-1 luck.
    #[arg(long)]
    pub independent_first_rounds: bool,
    /// The experiment folder: one run folder per arm, report.md and plots.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    match args.command {
        ExperimentCommand::ThoughtcommVsText(a) => vs_text(a),
    }
}

fn vs_text(args: VsTextArgs) -> anyhow::Result<()> {
    let pipeline = match &args.thoughts {
        Some(dir) => dir.clone(),
        None => {
            let source = train_pipeline::training_source(&args.setup.dataset, None)?;
            let evaluated = args.setup.dataset.parse::<agents::dataset::Dataset>()?;
            if source.dataset == evaluated && args.split.as_deref().unwrap_or(evaluated.default_split()) == source.split {
                bail!(
                    "--dataset {evaluated}: the pipeline trained here would debate the {evaluated} {} problems this experiment evaluates on; \
                     evaluate on math500 (a MATH pipeline trains on MATH test_dev without the MATH-500 problems) or pass --thoughts",
                    source.split
                );
            }
            let dir = args.out.join("pipeline");
            eprintln!("== training the thought pipeline into {}", dir.display());
            let mut train: TrainArgs = parse_words("train", words(&[("--out", dir.display().to_string())]))?;
            train.setup = args.setup.clone();
            train.limit = args.train_limit;
            train.ae_steps = args.ae_steps;
            train.adapter_steps = args.adapter_steps;
            train.objective = args.objective.clone();
            train_pipeline::run(train)?;
            dir
        }
    };
    // The ThoughtComm arms prompt as the pipeline's adapters were trained to be prompted.
    let manifest = PipelineManifest::read(&pipeline).with_context(|| format!("reading the thought pipeline in {}", pipeline.display()))?;
    let trained = TrainingContext::trained(&manifest.provenance);
    let hidden = !trained.shows_text();
    if hidden && args.ablations.iter().any(|a| matches!(a, Ablation::HideText)) {
        bail!("--ablations hide-text: the pipeline's adapters were trained with the text hidden, so every ThoughtComm arm already hides it");
    }
    let context: &[&str] = if hidden { Ablation::HideText.flags() } else { &[] };
    let mut objective = args.objective.clone();
    objective.adapter_context = trained;
    let mut arms: Vec<(String, Vec<OsString>)> = vec![
        ("text".into(), mode_words("text", &[])),
        ("single".into(), mode_words("single", &[])),
    ];
    let text_run = args.out.join("text").display().to_string();
    let with_pipeline = |dir: &Path, extra: &[&str]| {
        let mut w = mode_words("thoughtcomm", extra);
        w.extend(context.iter().map(OsString::from));
        w.extend(words(&[("--thoughts", dir.display().to_string())]));
        if !args.independent_first_rounds {
            w.extend(words(&[("--first-round-from", text_run.clone())]));
        }
        w
    };
    arms.push(("thoughtcomm".into(), with_pipeline(&pipeline, &[])));
    for ablation in &args.ablations {
        arms.push((format!("thoughtcomm-{}", ablation.name()), with_pipeline(&pipeline, ablation.flags())));
    }
    for &m in &args.prefix_lens {
        let dir = args.out.join(format!("pipeline-m{m}"));
        eprintln!("== training adapters with prefix length {m} into {}", dir.display());
        let mut adapter_args = train_pipeline::adapter_args(&pipeline.join("collect"), &pipeline.join("ae"), &dir, &args.setup, &objective)?;
        adapter_args.prefix_len = m;
        adapter_args.steps = args.adapter_steps;
        train_adapter::train(&adapter_args)?;
        arms.push((format!("thoughtcomm-m{m}"), with_pipeline(&dir, &[])));
    }
    let mut run_dirs = Vec::new();
    for (name, mut arm) in arms {
        let out = args.out.join(&name);
        arm.extend(args.setup.words(args.split.as_deref(), args.limit, &out));
        eprintln!("== {name} into {}", out.display());
        crate::debate::run(parse_words::<DebateArgs>("debate", arm)?)?;
        run_dirs.push(out);
    }
    crate::report::run(crate::report::ReportArgs { runs: run_dirs, out: Some(args.out.clone()) })
}

fn mode_words(mode: &str, extra: &[&str]) -> Vec<OsString> {
    ["--mode", mode].iter().chain(extra).map(OsString::from).collect()
}

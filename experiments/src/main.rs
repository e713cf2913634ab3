//! `tcomm`: the command-line tool of ThoughtComm-RS.
mod archive;
mod bench;
mod debate;
mod eval_adapter;
mod experiment;
mod identifiability;
mod infer;
mod inprocess;
mod models;
mod report;
mod report_thoughts;
mod serve;
mod structure_plot;
mod train;
mod train_adapter;
mod train_pipeline;
mod trajectories;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tcomm", version, about = "Multi-agent debate with latent thought communication, on libtorch")]
#[command(long_about = "ThoughtComm-RS: several LLM agents debate math problems and exchange latent thoughts.\n\
Models are given as a known name (see `tcomm models`), a .gguf file, or a Hugging Face checkpoint folder.\n\
Set RUST_LOG=debug for detailed logs.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the known models, where they are and whether they are downloaded and intact.
    Models(models::ModelsArgs),
    /// Print the top next-token logits of a text (the last position).
    Logits(infer::LogitsArgs),
    /// Generate a reply to a prompt, with the model's chat template applied.
    Generate(infer::GenerateArgs),
    /// The synthetic identifiability benchmark of the thought autoencoder
    Identifiability(identifiability::Args),
    /// Run the gRPC runtime that hosts agents
    Serve(serve::ServeArgs),
    /// Run a debate mode (single, self-consistency, text, thoughtcomm) on GSM8K, MATH or your JSONL.
    Debate(debate::DebateArgs),
    /// Compare runs: markdown table with intervals and paired tests, plots per round.
    Report(report::ReportArgs),
    /// Benchmarks: decode speed against transformers (and llama.cpp), gRPC serving overhead
    Bench(bench::BenchArgs),
    /// Train the thought autoencoder on the hidden states a debate saved (--save-states).
    TrainAe(train::TrainAeArgs),
    /// Train the prefix adapter(s) on a debate's trajectories and write a thought pipeline folder.
    TrainAdapter(train_adapter::TrainAdapterArgs),
    /// Test a pipeline's adapters on held-out turns: real thoughts against random latents and no prefix.
    EvalAdapter(eval_adapter::EvalAdapterArgs),
    /// The whole ThoughtComm training pipeline: collect states, train the autoencoder and adapter.
    Train(train_pipeline::TrainArgs),
    /// Experiments that run several arms on the same problems and report them together.
    Experiment(experiment::ExperimentArgs),
    /// Copy a run folder for sharing with its questions blanked (no dataset text); rerun to add new problems.
    Archive(archive::ArchiveArgs),
}

/// Log filter without RUST_LOG: warnings from everything, and this binary's progress lines (one
/// every tenth of a long job when stderr is not a terminal, where no bar is drawn).
const DEFAULT_LOG_FILTER: &str = "warn,tcomm=info";

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Models(args) => models::run(args),
        Command::Logits(args) => infer::logits(args),
        Command::Generate(args) => infer::generate(args),
        Command::Identifiability(args) => identifiability::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Debate(args) => debate::run(args),
        Command::Report(args) => report::run(args),
        Command::Bench(args) => bench::run(args),
        Command::TrainAe(args) => train::train_ae(args).map(|_| ()),
        Command::TrainAdapter(args) => train_adapter::run(args),
        Command::EvalAdapter(args) => eval_adapter::run(args),
        Command::Train(args) => train_pipeline::run(args),
        Command::Experiment(args) => experiment::run(args),
        Command::Archive(args) => archive::run(args),
    };
    if let Err(err) = result {
        // One line, the whole chain of causes, no backtrace: users read this as the message.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

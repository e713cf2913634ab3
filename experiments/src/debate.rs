//! `tcomm debate`: runs a debate mode over a dataset through the gRPC runtime (in-process by
//! default, or `--runtime URL`), appending one result line per problem to `<out>/results.jsonl`.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use agents::answer::Grader;
use agents::dataset::{self, AnswerFormat, Dataset};
use agents::debate::{AgentConfig, Debate, DebateConfig, Mode};
use agents::prompts::DEFAULT_ROLES;
use agents::thoughts::{AgreementMode, RoutingMode, ThoughtsConfig};
use agents::results::RunWriter;
use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use thoughtcomm::pipeline::PipelineManifest;

use crate::models;
use crate::train_adapter::TrainingContext;

#[derive(Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// One agent answers once.
    Single,
    /// N independent samples, majority vote.
    SelfConsistency,
    /// Du et al. 2023 debate: N agents, R rounds, each sees the others' latest answers.
    Text,
    /// Text debate plus latent thoughts: before each later round every agent gets a prefix made
    /// from the thoughts routed to it (needs --thoughts, a folder from `tcomm train`).
    Thoughtcomm,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RoutingArg {
    /// Each agent gets the thoughts that affect its own state (the paper).
    Routed,
    /// Ablation: all thoughts to all agents.
    All,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AgreementArg {
    /// The weights the adapters were trained with (learned unless trained otherwise).
    Trained,
    /// w[alpha] = alpha / n.
    Fixed,
    /// Ablation: no agreement reweighting.
    None,
}

#[derive(Args)]
pub struct DebateArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub mode: ModeArg,
    /// Number of agents (samples for self-consistency; single uses 1).
    #[arg(long, default_value_t = 3)]
    pub agents: usize,
    /// Rounds of the text debate (the other modes have one).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// gsm8k, math (split test_dev) or math500 (split dev).
    #[arg(long, default_value = "gsm8k")]
    pub dataset: String,
    /// Defaults to the dataset's evaluation split (dev, or test_dev for math).
    #[arg(long)]
    pub split: Option<String>,
    /// Leave out the problems whose question is also in this dataset's evaluation split (gsm8k,
    /// math or math500; repeatable), before --limit. `tcomm train` on MATH leaves out math500.
    #[arg(long = "exclude", value_name = "DATASET")]
    pub exclude: Vec<Dataset>,
    /// Use your own JSONL file instead of --dataset (see --question-field, --answer-field, --answer-format).
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    #[arg(long, default_value = "question")]
    pub question_field: String,
    #[arg(long, default_value = "answer")]
    pub answer_field: String,
    /// gsm8k (text after ####), math (last \boxed{}), plain.
    #[arg(long, default_value = "plain")]
    pub answer_format: String,
    /// First N problems (a rerun with a larger limit continues the same run).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Data folder with gsm8k/ and math/ (default: $TCOMM_DATA, then ../shared/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Model of every agent, or one per agent when repeated.
    #[arg(long = "model", default_value = runtime::registry::DEFAULT_MODEL)]
    pub models: Vec<String>,
    /// System prompt per agent (repeatable, cycled). Default: solver, calculation checker, critic.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Give the agents no system prompt at all.
    #[arg(long)]
    pub no_roles: bool,
    /// Sampling temperature (default 0 = greedy for single, 0.7 otherwise).
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Problems solved concurrently (their agents share the runtime's batches).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Store each agent's hidden state per round under <out>/states/ (for `tcomm train-ae`).
    #[arg(long)]
    pub save_states: bool,
    /// Layer of the saved states (transformers numbering; default 2/3 of the depth).
    #[arg(long)]
    pub state_layer: Option<u32>,
    /// Run folder: config.json and results.jsonl. Rerunning the same command resumes.
    #[arg(long)]
    pub out: PathBuf,
    /// Use a running `tcomm serve` at this URL instead of an in-process runtime.
    #[arg(long)]
    pub runtime: Option<String>,
    #[arg(long, env = "TCOMM_RUNTIME_TOKEN")]
    pub runtime_token: Option<String>,
    /// Device of the in-process runtime.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype of the in-process runtime: auto (f32 on the CPU, bf16 on CUDA), f32, bf16, f16.
    /// bf16 on a CPU with AVX512-BF16 or AMX decodes large batches several times faster than f32.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// How the in-process runtime stores the weights: dense (in --dtype) or int8 (weight-only,
    /// per-row scales; CPU only).
    #[arg(long, default_value = "dense")]
    pub weights: String,
    /// thoughtcomm: the trained thought pipeline folder (from `tcomm train`); with --runtime, a
    /// path on the server's machine.
    #[arg(long)]
    pub thoughts: Option<PathBuf>,
    /// thoughtcomm: do not show the other agents' responses in later rounds (the prefix replaces them).
    #[arg(long)]
    pub hide_text: bool,
    /// thoughtcomm: which thoughts reach each agent.
    #[arg(long, value_enum, default_value = "routed")]
    pub routing: RoutingArg,
    /// thoughtcomm: agreement weights.
    #[arg(long, value_enum, default_value = "trained")]
    pub agreement: AgreementArg,
    /// thoughtcomm ablation: each agent's routed thoughts replaced by routed Gaussian noise of
    /// their norm (the adapter reads an input of the same size without the content).
    #[arg(long)]
    pub random_latents: bool,
    /// text, thoughtcomm: take the first round from this run (a text or thoughtcomm debate of the
    /// same dataset, agents, seed and token budget) instead of sampling it, so that the two arms
    /// differ only from round 2 on and their paired comparison measures just that. thoughtcomm
    /// feeds each recorded response back to its agent (one prefill) for the states its thoughts
    /// come from. Problems the run does not have yet are left for a later rerun. Wall times then
    /// cover the later rounds (and that prefill).
    #[arg(long, value_name = "RUN")]
    pub first_round_from: Option<PathBuf>,
}

impl DebateArgs {
    /// `formats`: the compute dtype and weight format the runtime reported per model name.
    fn config(&self, num_layers: Option<u32>, formats: &HashMap<String, (String, String)>) -> anyhow::Result<DebateConfig> {
        let (mode, agents, rounds) = match self.mode {
            ModeArg::Single => (Mode::Single, 1, 1),
            ModeArg::SelfConsistency => (Mode::SelfConsistency, self.agents, 1),
            ModeArg::Text => (Mode::Text, self.agents, self.rounds),
            ModeArg::Thoughtcomm => (Mode::ThoughtComm, self.agents, self.rounds),
        };
        let thoughts = match (self.mode, &self.thoughts) {
            (ModeArg::Thoughtcomm, Some(dir)) => Some(ThoughtsConfig {
                pipeline: pipeline_name(dir),
                checkpoints: pipeline_digest(dir)?,
                show_text: adapters_prompted_as(dir, !self.hide_text)?,
                routing: match self.routing {
                    RoutingArg::Routed => RoutingMode::Routed,
                    RoutingArg::All => RoutingMode::All,
                },
                agreement: match self.agreement {
                    AgreementArg::Trained => AgreementMode::Trained,
                    AgreementArg::Fixed => AgreementMode::Fixed,
                    AgreementArg::None => AgreementMode::None,
                },
                random_latents: self.random_latents,
            }),
            (ModeArg::Thoughtcomm, None) => bail!("--mode thoughtcomm needs --thoughts DIR (a pipeline folder from `tcomm train`)"),
            (_, Some(_)) => bail!("--thoughts is only used with --mode thoughtcomm"),
            (_, None) => None,
        };
        if agents == 0 || rounds == 0 {
            bail!("--agents and --rounds must be at least 1");
        }
        if self.models.len() != 1 && self.models.len() != agents {
            bail!("give one --model for all agents or one per agent ({} agents, {} models)", agents, self.models.len());
        }
        let roles: Vec<String> = if self.no_roles {
            vec![String::new()]
        } else if self.roles.is_empty() {
            DEFAULT_ROLES.iter().map(|r| r.to_string()).collect()
        } else {
            self.roles.clone()
        };
        let temperature = self.temperature.unwrap_or(if agents == 1 && rounds == 1 { 0.0 } else { 0.7 });
        let agents = (0..agents)
            .map(|i| {
                let model = self.models[i % self.models.len()].clone();
                let (dtype, weights) = formats.get(&model).cloned().unzip();
                AgentConfig {
                    dtype,
                    weights,
                    model,
                    role: roles[i % roles.len()].clone(),
                    temperature,
                    top_p: self.top_p,
                }
            })
            .collect();
        let (dataset, split, grader) = match &self.jsonl {
            Some(path) => (path.display().to_string(), String::new(), grader_of(&self.answer_format)?),
            None => {
                let d: Dataset = self.dataset.parse()?;
                (d.name().to_string(), self.split.clone().unwrap_or_else(|| d.default_split().to_string()), Grader::from(d))
            }
        };
        if self.first_round_from.is_some() && (!matches!(self.mode, ModeArg::Text | ModeArg::Thoughtcomm) || self.save_states) {
            bail!("--first-round-from is for --mode text or thoughtcomm without --save-states (the states are saved while sampling)");
        }
        let save_states_layer = match (self.save_states, self.state_layer, num_layers) {
            (false, _, _) => None,
            (true, Some(l), _) => Some(l),
            (true, None, Some(n)) => Some((2 * n).div_ceil(3)),
            (true, None, None) => bail!("--save-states with --runtime needs --state-layer"),
        };
        Ok(DebateConfig {
            format: agents::debate::CONFIG_FORMAT,
            mode,
            dataset,
            grader,
            split,
            exclude: self.exclude.iter().map(|d| d.name().to_string()).collect(),
            limit: self.limit,
            agents,
            rounds,
            max_new_tokens: self.max_new_tokens,
            seed: self.seed,
            save_states_layer,
            thoughts,
            first_round_from: self.first_round_from.as_ref().map(|p| p.display().to_string()),
        })
    }

    fn problems(&self) -> anyhow::Result<Vec<dataset::Problem>> {
        let mut problems = match &self.jsonl {
            Some(path) => {
                let format: AnswerFormat = self.answer_format.parse()?;
                dataset::load_jsonl(path, &self.question_field, &self.answer_field, format)?
            }
            None => {
                let d: Dataset = self.dataset.parse()?;
                let split = self.split.clone().unwrap_or_else(|| d.default_split().to_string());
                dataset::load(self.data_dir.as_deref(), d, &split)?
            }
        };
        for &d in &self.exclude {
            let (kept, dropped) = dataset::without(problems, &dataset::load(self.data_dir.as_deref(), d, d.default_split())?);
            tracing::info!(dataset = d.name(), split = d.default_split(), dropped, "left out the problems that are also in an excluded dataset");
            problems = kept;
        }
        Ok(dataset::sample(problems, self.limit, None))
    }
}

/// The name a pipeline folder is loaded under: its path as given, so that the run's config.json
/// says which pipeline it used.
fn pipeline_name(dir: &std::path::Path) -> String {
    dir.display().to_string()
}

/// sha256 (first 16 hex digits) over the pipeline's manifest and its `part_files`. The manifest's
/// provenance is left out: `tcomm train` rewrites it when rerun on a finished pipeline, which
/// changes no weight.
pub(crate) fn pipeline_digest(dir: &std::path::Path) -> anyhow::Result<String> {
    let manifest = PipelineManifest::read(dir).with_context(|| format!("reading the thought pipeline in {}", dir.display()))?;
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(&PipelineManifest { provenance: serde_json::Value::Null, ..manifest.clone() })?);
    for path in manifest.part_files(dir) {
        models::hash_file(&mut hasher, &path)?;
    }
    Ok(models::hex(&hasher.finalize()[..8]))
}

/// `show_text`, after a warning when the pipeline's adapters were trained with the other way of
/// prompting (`train-adapter --adapter-context`): a deliberate ablation, but more often a
/// forgotten flag.
fn adapters_prompted_as(dir: &std::path::Path, show_text: bool) -> anyhow::Result<bool> {
    let manifest = PipelineManifest::read(dir).with_context(|| format!("reading the thought pipeline in {}", dir.display()))?;
    let trained = TrainingContext::trained(&manifest.provenance);
    if trained.shows_text() != show_text {
        let debate = if show_text { TrainingContext::Shown } else { TrainingContext::Hidden };
        tracing::warn!(
            "the adapters in {} were trained with the other agents' text {}, this debate has it {} (--hide-text)",
            dir.display(),
            trained.name(),
            debate.name()
        );
    }
    Ok(show_text)
}

fn grader_of(format: &str) -> anyhow::Result<Grader> {
    Ok(match format.parse::<AnswerFormat>()? {
        AnswerFormat::Math => Grader::Math,
        AnswerFormat::Gsm8k | AnswerFormat::Plain => Grader::Gsm8k,
    })
}

/// The first-round turns of `source` by problem id, after checking that its first round can stand
/// for `config`'s; `problems` keeps those `source` has (the others wait for a rerun).
fn first_rounds(
    source: &std::path::Path,
    config: &DebateConfig,
    problems: &mut Vec<dataset::Problem>,
) -> anyhow::Result<HashMap<String, Vec<agents::results::AgentTurn>>> {
    let source_config = agents::results::read_debate_config(source)?;
    let differ = config.first_round_mismatch(&source_config);
    if !differ.is_empty() {
        bail!("{}: its first round cannot stand for this run's (differs in: {})", source.display(), differ.join(", "));
    }
    let rounds: HashMap<_, _> = agents::results::read_results(source)?
        .into_iter()
        .filter_map(|r| r.rounds.into_iter().next().map(|first| (r.id, first)))
        .collect();
    let before = problems.len();
    problems.retain(|p| rounds.contains_key(&p.id));
    if problems.len() < before {
        tracing::warn!(
            "{} of {before} problems are not in {} yet: they are left for a rerun once it has them",
            before - problems.len(),
            source.display()
        );
    }
    Ok(rounds)
}

pub fn run(args: DebateArgs) -> anyhow::Result<()> {
    let mut problems = args.problems()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async {
        let mut models: Vec<String> = args.models.clone();
        models.sort();
        models.dedup();
        let (url, server) = match &args.runtime {
            Some(url) => (url.clone(), None),
            None => {
                let (url, server) = crate::inprocess::start(&models, &args.device, &args.dtype, &args.weights).await?;
                (url, Some(server))
            }
        };
        let mut client = proto::client::RuntimeClient::connect(&url, args.runtime_token.as_deref()).await?;
        let mut formats = HashMap::new();
        let mut num_layers = None;
        for (i, name) in models.iter().enumerate() {
            if let Some(info) = client.model_info(name).await? {
                if i == 0 {
                    num_layers = Some(info.num_layers.max(0) as u32);
                }
                formats.insert(name.clone(), (info.dtype, info.weights));
            }
        }
        let config = args.config(num_layers, &formats)?;
        let given_first_rounds = match &args.first_round_from {
            Some(source) => Some(first_rounds(source, &config, &mut problems)?),
            None => None,
        };
        if let (Some(dir), Some(t)) = (&args.thoughts, &config.thoughts) {
            if client.thought_pipeline(&t.pipeline).await?.is_none() {
                client.load_thought_pipeline(&t.pipeline, &dir.display().to_string()).await?;
            }
        }
        let config_json = serde_json::to_value(&config)?;
        let (mut writer, done) = RunWriter::open(&args.out, &config_json)?;
        let done_ids: HashSet<String> = done.iter().map(|r| r.id.clone()).collect();
        let mut correct = done.iter().filter(|r| r.correct).count();
        let mut finished = done.len();
        let bar = ProgressBar::new(problems.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg} (eta {eta})")
                .map_err(|e| anyhow!("progress bar: {e}"))?,
        );
        bar.set_position(problems.iter().filter(|p| done_ids.contains(&p.id)).count() as u64);
        if finished > 0 {
            tracing::info!(done = finished, "resuming run");
        }
        let mut debate = Debate::new(client, config).await?;
        if let Some(rounds) = given_first_rounds {
            debate = debate.with_first_rounds(rounds)?;
        }
        let out = args.out.clone();
        debate
            .run(&problems, &done_ids, args.parallel, |result, states| {
                if let Some(states) = states {
                    states.save(&out).map_err(agents::debate::DebateError::Io)?;
                }
                writer.append(&result).map_err(|e| agents::debate::DebateError::Io(e.to_string()))?;
                finished += 1;
                correct += usize::from(result.correct);
                bar.inc(1);
                if bar.is_hidden() {
                    // No terminal (nohup, a pipe): one line per problem instead of the bar.
                    let position = bar.position();
                    tracing::info!(id = %result.id, correct = result.correct, progress = format!("{position}/{}", problems.len()), "problem finished");
                }
                bar.set_message(format!("accuracy {correct}/{finished} ({:.1}%)", 100.0 * correct as f64 / finished as f64));
                Ok(())
            })
            .await?;
        bar.finish();
        println!(
            "{}: {correct}/{finished} correct ({:.1}%); results in {}",
            args.out.display(),
            100.0 * correct as f64 / finished.max(1) as f64,
            args.out.join(agents::results::RESULTS_FILE).display()
        );
        if let Some(server) = server {
            server.stop().await;
        }
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use thoughtcomm::pipeline::PipelineAgent;

    #[test]
    fn the_digest_follows_every_checkpoint_file_and_only_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = PipelineManifest::new(vec![PipelineAgent { model: "m".into(), hidden_size: 4 }], 1);
        manifest.adapters.insert("m".into(), PipelineManifest::adapter_file("m"));
        manifest.write(dir.path()).unwrap();
        let files = ["autoencoder.safetensors", "autoencoder.json", "structure.json", "adapter-m.safetensors", "adapter-m.json"];
        for f in files {
            std::fs::write(dir.path().join(f), f).unwrap();
        }
        let digest = pipeline_digest(dir.path()).unwrap();
        assert_eq!(digest.len(), 16);
        // Files the manifest does not name (the collected run, the autoencoder's training folder) do not count.
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        assert_eq!(pipeline_digest(dir.path()).unwrap(), digest);
        // Nor does the provenance (rewritten by a rerun of `tcomm train`), but the manifest's substance does.
        manifest.provenance = serde_json::json!({ "losses": null });
        manifest.write(dir.path()).unwrap();
        assert_eq!(pipeline_digest(dir.path()).unwrap(), digest);
        manifest.layer = 2;
        manifest.write(dir.path()).unwrap();
        assert_ne!(pipeline_digest(dir.path()).unwrap(), digest);
        manifest.layer = 1;
        manifest.write(dir.path()).unwrap();
        for f in files {
            std::fs::write(dir.path().join(f), format!("{f} trained further")).unwrap();
            let changed = pipeline_digest(dir.path()).unwrap();
            assert_ne!(changed, digest, "{f}");
            std::fs::write(dir.path().join(f), f).unwrap();
        }
        std::fs::remove_file(dir.path().join("adapter-m.safetensors")).unwrap();
        let err = pipeline_digest(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("adapter-m.safetensors"), "{err:#}");
    }
}

//! `tcomm bench serve`: what the gRPC runtime costs over calling the engine directly. The model
//! is loaded once; the same requests (prompts, seeds, max_new_tokens) first go straight into a
//! `runtime::engine::Engine` on a thread of its own, then the loaded model is handed to an in-process
//! gRPC runtime on a loopback port and the requests are issued concurrently from N agents,
//! round-robin, each agent on its own connection. Both paths use the runtime's engine limits
//! (`max_batch_size`, `max_batch_tokens`) and the runtime's own conversion of sampling settings.
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, ensure, Context};
use clap::Args;
use proto::client::{prompt_request, RuntimeClient};
use runtime::engine::{Engine, SequenceRequest};
use runtime::generate::SamplingParams;
use runtime::loader::Model;
use runtime::server::{convert, pb, ModelConfig};
use runtime::tokenizer::ChatMessage;
use serde::Serialize;

use super::worker::peak_rss_bytes;
use super::{kind_name, load_average, mib, spinner, ModelArgs};

/// The overhead the runtime should stay within (1 - gRPC tokens/s over direct tokens/s).
const OVERHEAD_TARGET: f64 = 0.05;

/// Every agent's system prompt.
const SYSTEM_PROMPT: &str = "You are a careful mathematician. Answer briefly.";

/// `--prompt-set math`: short math questions.
const MATH_PROMPTS: [&str; 12] = [
    "What is 17 + 25?",
    "What is 12 times 7?",
    "A book costs $8. How much do 5 books cost?",
    "What is 144 divided by 12?",
    "Tom has 23 apples and gives away 9. How many are left?",
    "What is 15% of 80?",
    "What is the square root of 81?",
    "A train travels 90 km in 1.5 hours. What is its average speed?",
    "What is 3/4 plus 1/8?",
    "If x + 7 = 19, what is x?",
    "How many minutes are there in 3.5 hours?",
    "What is the perimeter of a rectangle 6 cm long and 4 cm wide?",
];

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Agents created on the runtime; request i comes from agent i mod N.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=256))]
    agents: u32,
    /// Requests per measured run, all issued at once.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=4096))]
    requests: u32,
    /// max_new_tokens of every request (generation also stops at the model's end-of-turn tokens).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_new_tokens: u32,
    /// `math` (a dozen short built-in questions) or a text file with one prompt per line; request i
    /// gets prompt i mod the set's size.
    #[arg(long, default_value = "math")]
    prompt_set: String,
    /// Measured runs per path; the fastest (tokens/s) of each is reported.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    repeat: u32,
    /// libtorch intra-op threads (default: the available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Every request of the warm-up run that precedes each path's measured runs gets this
    /// max_new_tokens (0 = no warm-up).
    #[arg(long, default_value_t = 8)]
    warmup_tokens: u32,
    /// Sampling temperature (0 = greedy); request i is seeded with --seed + i.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Base seed: request i uses --seed + i.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most sequences decoded together, on both paths.
    #[arg(long, default_value_t = runtime::server::config::DEFAULT_MAX_BATCH_SIZE)]
    max_batch_size: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// One request of a run, as both paths issue it.
#[derive(Clone)]
struct Planned {
    agent: usize,
    question: String,
    sampling: pb::SamplingParams,
    /// What the runtime makes of it (chat template with the agent's system prompt).
    prompt: Vec<u32>,
    params: SamplingParams,
}

/// One measured run of one path; per request in request order.
struct Run {
    wall_s: f64,
    latencies_s: Vec<f64>,
    tokens: Vec<Vec<u32>>,
    prompts: Vec<Vec<u32>>,
}

#[derive(Serialize)]
struct PathReport {
    tokens_per_s: f64,
    requests_per_s: f64,
    latency_p50_s: f64,
    latency_p99_s: f64,
    latency_mean_s: f64,
    wall_s: f64,
    generated_tokens: usize,
    /// tokens/s of every measured run, in order.
    runs_tokens_per_s: Vec<f64>,
}

#[derive(Serialize)]
struct Report {
    model: String,
    architecture: String,
    device: String,
    dtype: String,
    threads: i32,
    agents: u32,
    requests: u32,
    max_new_tokens: u32,
    prompt_set: String,
    prompts: usize,
    temperature: f64,
    seed: u64,
    max_batch_size: usize,
    repeat: u32,
    warmup_tokens: u32,
    load_s: f64,
    /// The direct path runs first, then the same model is served over gRPC.
    order: &'static str,
    direct: PathReport,
    grpc: PathReport,
    /// 1 - grpc.tokens_per_s / direct.tokens_per_s.
    overhead: f64,
    overhead_target: f64,
    within_target: bool,
    /// Requests whose generated tokens (and prompt tokens) are the same on both paths.
    identical_tokens: usize,
    identical_prompts: usize,
    /// Request indices whose tokens differ (at most 20).
    differing_requests: Vec<usize>,
    /// VmHWM of this process after the direct path, and at the end.
    peak_rss_after_direct_bytes: u64,
    peak_rss_bytes: u64,
    load_average_start: Option<f64>,
    load_average_end: Option<f64>,
    cores: usize,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cores);
    ensure!(threads >= 1, "--threads must be at least 1");
    ensure!(args.max_batch_size >= 1, "--max-batch-size must be at least 1");
    tch::set_num_threads(i32::try_from(threads).context("--threads is too large")?);
    let questions = prompt_set(&args.prompt_set)?;
    let load_average_start = load_average();

    let config = ModelConfig {
        device: args.model.device.clone(),
        dtype: args.model.dtype.clone(),
        weights: args.model.weights.clone(),
        max_batch_size: args.max_batch_size,
        // Every request is in flight at once: none may be refused for a full queue.
        max_queue: (args.requests as usize).max(runtime::server::config::DEFAULT_MAX_QUEUE),
        ..ModelConfig::new(args.model.model.clone())
    };
    let bar = spinner(&format!("loading {}", config.name));
    let start = Instant::now();
    let model = config.load_model()?;
    let kind = model.network.kind();
    let load_s = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let architecture = model.network.spec().architecture.clone();
    let plan = plan(&args, &questions, &model)?;
    let warmup = with_max_new_tokens(&plan, args.warmup_tokens);

    let bar = spinner("direct engine");
    let warmup = (args.warmup_tokens > 0).then_some(warmup.as_slice());
    let (model, direct) = direct_runs(model, &config, &plan, warmup, args.repeat)?;
    bar.finish_and_clear();
    let peak_rss_after_direct_bytes = peak_rss_bytes();
    tracing::info!(runs = direct.len(), "direct path done; serving the same model over gRPC");

    let bar = spinner("gRPC runtime");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let grpc = rt.block_on(run_grpc(&args, model, config, &plan, warmup))?;
    bar.finish_and_clear();

    let (direct_best, direct) = summarize(&direct)?;
    let (grpc_best, grpc) = summarize(&grpc)?;
    let same = |a: &[Vec<u32>], b: &[Vec<u32>]| a.iter().zip(b).filter(|(x, y)| x == y).count();
    let differing: Vec<usize> =
        (0..plan.len()).filter(|&i| direct_best.tokens[i] != grpc_best.tokens[i]).take(20).collect();
    if !differing.is_empty() {
        tracing::warn!(?differing, "generated tokens differ between the direct and the gRPC path");
    }
    let overhead = 1.0 - grpc.tokens_per_s / direct.tokens_per_s;
    let report = Report {
        model: args.model.model.clone(),
        architecture,
        device: args.model.device.clone(),
        dtype: kind_name(kind),
        threads: tch::get_num_threads(),
        agents: args.agents,
        requests: args.requests,
        max_new_tokens: args.max_new_tokens,
        prompt_set: args.prompt_set.clone(),
        prompts: questions.len(),
        temperature: args.temperature,
        seed: args.seed,
        max_batch_size: args.max_batch_size,
        repeat: args.repeat,
        warmup_tokens: args.warmup_tokens,
        load_s,
        order: "direct, then grpc",
        identical_tokens: same(&direct_best.tokens, &grpc_best.tokens),
        identical_prompts: same(&direct_best.prompts, &grpc_best.prompts),
        differing_requests: differing,
        direct,
        grpc,
        overhead,
        overhead_target: OVERHEAD_TARGET,
        within_target: overhead <= OVERHEAD_TARGET,
        peak_rss_after_direct_bytes,
        peak_rss_bytes: peak_rss_bytes(),
        load_average_start,
        load_average_end: load_average(),
        cores,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// The prompts of `--prompt-set`.
fn prompt_set(name: &str) -> anyhow::Result<Vec<String>> {
    if name == "math" {
        return Ok(MATH_PROMPTS.iter().map(|q| q.to_string()).collect());
    }
    let path = Path::new(name);
    if !path.is_file() {
        bail!("--prompt-set: '{name}' is neither `math` nor a file");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let prompts: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    ensure!(!prompts.is_empty(), "{}: no prompts (one per line)", path.display());
    Ok(prompts)
}

/// The requests of one run: prompt, agent and seed of request i, and the engine's view of it.
fn plan(args: &ServeArgs, questions: &[String], model: &Model) -> anyhow::Result<Vec<Planned>> {
    let eos = model.tokenizer.eos_token_ids();
    let context = usize::try_from(model.network.spec().max_position_embeddings).unwrap_or(0);
    (0..args.requests as usize)
        .map(|i| {
            let question = questions[i % questions.len()].clone();
            let messages = [ChatMessage::new("system", SYSTEM_PROMPT), ChatMessage::new("user", question.clone())];
            let prompt = model.tokenizer.encode_chat(&messages).context("applying the chat template")?;
            let sampling = pb::SamplingParams {
                max_new_tokens: Some(args.max_new_tokens),
                temperature: Some(args.temperature),
                seed: Some(args.seed.wrapping_add(i as u64)),
                ..Default::default()
            };
            let params = convert::sampling_params(&sampling, &eos, context.saturating_sub(prompt.len()));
            params.validate().context("the sampling settings")?;
            Ok(Planned { agent: i % args.agents as usize, question, sampling, prompt, params })
        })
        .collect()
}

/// The same requests with another max_new_tokens (for the warm-up).
fn with_max_new_tokens(plan: &[Planned], n: u32) -> Vec<Planned> {
    let n = n.max(1);
    plan.iter()
        .cloned()
        .map(|mut p| {
            p.sampling.max_new_tokens = Some(n);
            p.params.max_new_tokens = n as usize;
            p
        })
        .collect()
}

/// The direct path's warm-up and measured runs on a thread of its own, as the runtime runs each
/// model's engine on one; the model goes there and comes back. (On the calling thread, CPU runs on
/// a busy machine were erratic and up to ten times slower than the same steps on the runtime's
/// engine thread, likely OpenMP spin-waiting; on a thread of their own they match.)
fn direct_runs(
    model: Model,
    config: &ModelConfig,
    plan: &[Planned],
    warmup: Option<&[Planned]>,
    repeat: u32,
) -> anyhow::Result<(Model, Vec<Run>)> {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("tcomm-direct".into())
            .spawn_scoped(scope, move || {
                let runs = (|| {
                    if let Some(warmup) = warmup {
                        run_direct(&model, config, warmup)?;
                    }
                    (0..repeat).map(|_| run_direct(&model, config, plan)).collect::<anyhow::Result<Vec<Run>>>()
                })();
                (model, runs)
            })
            .context("starting the direct engine's thread")?;
        let (model, runs) = worker.join().map_err(|_| anyhow!("the direct engine's thread panicked"))?;
        Ok((model, runs?))
    })
}

/// Every request into a fresh engine at once, run to completion. A request's latency is its
/// `SequenceOutput::total_time` (from `Engine::add` to its last token).
fn run_direct(model: &Model, config: &ModelConfig, plan: &[Planned]) -> anyhow::Result<Run> {
    let mut engine = Engine::new(&model.network, config.engine_config()).with_tokenizer(&model.tokenizer);
    let start = Instant::now();
    let mut ids = Vec::with_capacity(plan.len());
    for p in plan {
        ids.push(engine.add(SequenceRequest::new(p.prompt.clone(), p.params.clone()))?);
    }
    let mut done = engine.run_to_completion();
    let wall_s = start.elapsed().as_secs_f64();
    let mut run = Run { wall_s, latencies_s: Vec::new(), tokens: Vec::new(), prompts: Vec::new() };
    for (id, p) in ids.into_iter().zip(plan) {
        let i = done.iter().position(|(d, _)| *d == id).with_context(|| format!("sequence {id} did not finish"))?;
        let (_, output) = done.swap_remove(i);
        run.latencies_s.push(output.total_time.as_secs_f64());
        run.tokens.push(output.tokens);
        run.prompts.push(p.prompt.clone());
    }
    Ok(run)
}

/// Serves `model` in-process, creates the agents (one connection each), then the warm-up and
/// `--repeat` measured runs. A request's latency is from just before the call to its reply.
async fn run_grpc(
    args: &ServeArgs,
    model: Model,
    config: ModelConfig,
    plan: &[Planned],
    warmup: Option<&[Planned]>,
) -> anyhow::Result<Vec<Run>> {
    let name = config.name.clone();
    let (url, server) = crate::inprocess::start_loaded(vec![(config, model)]).await?;
    tracing::info!(%url, "in-process runtime up");
    let mut agents = Vec::new();
    for _ in 0..args.agents {
        let mut client = RuntimeClient::connect(&url, None).await?;
        let agent = client.create_agent(&name, SYSTEM_PROMPT, None).await.context("CreateAgent")?;
        agents.push((client, agent.id));
    }
    let result = async {
        if let Some(warmup) = warmup {
            grpc_once(&agents, warmup).await?;
        }
        let mut runs = Vec::new();
        for _ in 0..args.repeat {
            runs.push(grpc_once(&agents, plan).await?);
        }
        anyhow::Ok(runs)
    }
    .await;
    server.stop().await;
    result
}

async fn grpc_once(agents: &[(RuntimeClient, String)], plan: &[Planned]) -> anyhow::Result<Run> {
    let start = Instant::now();
    let calls: Vec<_> = plan
        .iter()
        .map(|p| {
            let (client, agent_id) = &agents[p.agent];
            let mut client = client.clone();
            let request = prompt_request(agent_id, &p.question, Some(p.sampling.clone()));
            tokio::spawn(async move {
                let sent = Instant::now();
                let reply = client.generate(request).await;
                (reply, sent.elapsed().as_secs_f64())
            })
        })
        .collect();
    let mut run = Run { wall_s: 0.0, latencies_s: Vec::new(), tokens: Vec::new(), prompts: Vec::new() };
    for (i, call) in calls.into_iter().enumerate() {
        let (reply, latency) = call.await.context("a call's task failed")?;
        let reply = reply.with_context(|| format!("Generate (request {i})"))?;
        run.latencies_s.push(latency);
        run.tokens.push(reply.token_ids);
        run.prompts.push(reply.prompt_token_ids);
    }
    run.wall_s = start.elapsed().as_secs_f64();
    Ok(run)
}

/// The fastest run (by tokens/s) and its figures.
fn summarize(runs: &[Run]) -> anyhow::Result<(&Run, PathReport)> {
    let tokens_per_s = |r: &Run| r.tokens.iter().map(Vec::len).sum::<usize>() as f64 / r.wall_s.max(1e-9);
    let best = runs.iter().max_by(|a, b| tokens_per_s(a).total_cmp(&tokens_per_s(b))).context("no measured run")?;
    let mut sorted = best.latencies_s.clone();
    sorted.sort_by(f64::total_cmp);
    let report = PathReport {
        tokens_per_s: tokens_per_s(best),
        requests_per_s: best.latencies_s.len() as f64 / best.wall_s.max(1e-9),
        latency_p50_s: percentile(&sorted, 0.50),
        latency_p99_s: percentile(&sorted, 0.99),
        latency_mean_s: sorted.iter().sum::<f64>() / sorted.len().max(1) as f64,
        wall_s: best.wall_s,
        generated_tokens: best.tokens.iter().map(Vec::len).sum(),
        runs_tokens_per_s: runs.iter().map(tokens_per_s).collect(),
    };
    Ok((best, report))
}

/// Nearest-rank percentile of ascending `sorted` (NaN when empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn print_table(r: &Report) {
    let sampling =
        if r.temperature == 0.0 { "greedy".to_string() } else { format!("temperature {}, seeds {}+i", r.temperature, r.seed) };
    println!(
        "model: {} ({}), device {}, {}, {} threads, load {:.1}s",
        r.model, r.architecture, r.device, r.dtype, r.threads, r.load_s
    );
    println!(
        "{} requests from {} agents (round-robin, all at once), {} prompts ({}), max {} new tokens, {sampling}, \
         max batch {}, warm-up {} tokens, best of {} run(s) per path ({})",
        r.requests, r.agents, r.prompts, r.prompt_set, r.max_new_tokens, r.max_batch_size, r.warmup_tokens, r.repeat, r.order
    );
    println!();
    println!(
        "{:<8} {:>10} {:>8} {:>12} {:>12} {:>13} {:>8} {:>8}",
        "path", "tok/s", "req/s", "p50 latency", "p99 latency", "mean latency", "wall", "tokens"
    );
    for (name, p) in [("direct", &r.direct), ("grpc", &r.grpc)] {
        println!(
            "{name:<8} {:>10.1} {:>8.2} {:>11.3}s {:>11.3}s {:>12.3}s {:>7.2}s {:>8}",
            p.tokens_per_s, p.requests_per_s, p.latency_p50_s, p.latency_p99_s, p.latency_mean_s, p.wall_s, p.generated_tokens
        );
    }
    println!();
    println!(
        "overhead: {:.1}% (1 - grpc/direct tokens/s; target <= {:.0}%: {})",
        r.overhead * 100.0,
        r.overhead_target * 100.0,
        if r.within_target { "met" } else { "NOT met" }
    );
    println!(
        "same tokens on both paths: {}/{} requests (prompt ids: {}/{}){}",
        r.identical_tokens,
        r.requests,
        r.identical_prompts,
        r.requests,
        if r.differing_requests.is_empty() { String::new() } else { format!("; differing: {:?}", r.differing_requests) }
    );
    println!("peak RSS: {} (after the direct path: {})", mib(r.peak_rss_bytes), mib(r.peak_rss_after_direct_bytes));
    let load = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    println!("load average: {} at start, {} at end ({} cores)", load(r.load_average_start), load(r.load_average_end), r.cores);
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=60).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), 30.0);
        assert_eq!(percentile(&v, 0.99), 60.0);
        assert_eq!(percentile(&v[..1], 0.99), 1.0);
        assert_eq!(percentile(&[1.0, 2.0], 0.0), 1.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}

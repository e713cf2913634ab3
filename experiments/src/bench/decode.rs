//! `tcomm bench decode`: greedy decode speed of this engine side by side with Hugging Face
//! transformers (and llama.cpp when its Python binding is installed) on the same GGUF, the same
//! prompts and the same thread count, next to the machine's memory-bandwidth roofline.
//!
//! Every measured run happens in a child process of its own (`tcomm bench decode-worker` for
//! this engine, `scripts/bench_transformers.py` for transformers), so that each run's peak RSS
//! is its own and no run warms caches for another.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use clap::Args;
use runtime::gguf::GgufFile;
use runtime::loader::{self, ModelLocation};
use runtime::tokenizer::TextTokenizer;
use serde::{Deserialize, Serialize};

mod roofline;
mod table;

use roofline::{checkpoint_architecture, checkpoint_weight_info, memory_bandwidth_gbs, weight_info, WeightInfo};
use table::print_table;
use super::{default_python, kind_name, load_average, run_json_worker, scripts_dir, set_omp_policy, spinner, ModelArgs};

pub const LONG_ABOUT: &str = "\
Decode speed of this engine against Hugging Face transformers (and llama.cpp), in one invocation.

For each batch size B: B sequences (prompts of exactly --prompt-tokens tokens, cut from a fixed
set of varied texts, identical token ids on both sides), greedy, exactly --new-tokens new tokens
each (no stop tokens; transformers gets max_new_tokens = min_new_tokens = N). Each side and batch
size runs in a process of its own: load, one warm-up run of --warmup-tokens new tokens, then the
measured run (--repeat N: N such processes per side, alternating, the fastest kept). Both sides use --threads intra-op threads and the same GGUF, whose weights both
dequantize to f32 (transformers' GGUF loader always does; this engine computes in --dtype).

Columns: tok/s = B*N / total time (prefill included, as users see it); decode tok/s =
B*(N-1) / (total - TTFT) (steady-state decode); TTFT = time until every sequence of the batch has
its first token (the batch's prefill); peak RSS = the worker process's high-water mark (VmHWM on
Linux; ru_maxrss for Python), load and warm-up included; same = sequences whose generated tokens
equal transformers' exactly; GPU mem (CUDA only) = the GPU memory each worker process holds at
the end of its run as nvidia-smi reports it (the CUDA context and the caching allocator's pool
included, the same measure on both sides).

Roofline: the memory bandwidth is measured on --device (libtorch sum over a 1 GiB f32 tensor, best
of 5, with --threads threads on the CPU); batch-1 decode must read every weight once per token (all
GGUF or safetensors tensors at the compute dtype, the token embedding only when it is tied to the
output head), so the roofline is bandwidth / bytes-per-token tokens/s.

On CUDA both sides run on the GPU in --dtype (bf16 by default there), transformers with
`.to(device)`; every timing waits for the GPU (torch.cuda.synchronize on its side; this engine
reads each step's sampled tokens on the host).

--json prints one object:
  model, gguf, architecture, device, dtype, threads, prompt_tokens, new_tokens, warmup_tokens,
  repeat (measured runs per side; the fastest is reported), omp_wait_policy
  weights: {format (compute dtype), dequantized_from ({ggml type: tensor count}; {\"safetensors\":
            tensor count} for a checkpoint folder), parameters,
            bytes_per_token}
  memory_bandwidth_gbs, roofline_batch1_tokens_per_s, roofline_fraction_batch1 (ours decode
            tok/s at batch 1 over the roofline; null without a batch-1 run)
  llamacpp: null when llama-cpp-python is not installed, else {tokens_per_s, ttft_s, ...} (batch 1)
  runs: [{batch, ours, transformers (null with --skip-transformers or on failure),
          transformers_error, ratio (ours tokens_per_s / transformers tokens_per_s),
          decode_ratio, same_tokens (sequences with identical output),
          load_average (1-minute load average when the batch size started)}]
  where ours / transformers = {tokens_per_s, decode_tokens_per_s, ttft_s, total_s, load_s,
          peak_rss_bytes, peak_device_bytes (CUDA only), threads, step_ms_median (ours only)}.
All times in seconds, bandwidth in GB/s (1e9 bytes).";

#[derive(Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,6,24")]
    batch: Vec<usize>,
    /// New tokens per sequence (exactly; stop tokens are ignored).
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    /// Tokens per prompt.
    #[arg(long, default_value_t = 32)]
    prompt_tokens: usize,
    /// Intra-op threads of both sides (default: the available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// New tokens of the warm-up run that precedes each measured run (0 = none).
    #[arg(long, default_value_t = 16)]
    warmup_tokens: usize,
    /// Measure this engine only.
    #[arg(long)]
    skip_transformers: bool,
    /// Measured runs per side and batch size, alternating sides; the fastest of each is kept
    /// (rejects interference from other processes on a shared machine).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    repeat: u32,
    /// transformers' attn_implementation: sdpa (its default) or eager.
    #[arg(long, default_value = "sdpa")]
    hf_attn: String,
    /// OMP_WAIT_POLICY for every worker (both sides share libgomp): passive keeps idle OpenMP
    /// threads from spinning, which on a machine busy with other work makes multi-threaded
    /// runs several times faster and far steadier; `inherit` leaves the environment as it is.
    #[arg(long, default_value = "inherit", value_parser = ["inherit", "active", "passive"])]
    omp_wait_policy: String,
    /// The Python with torch and transformers (default: $TCOMM_ROOT/.venv/bin/python, else python3).
    #[arg(long, env = "TCOMM_PYTHON")]
    python: Option<PathBuf>,
    /// Print one JSON object (fields in the long help) instead of the table.
    #[arg(long)]
    json: bool,
}

/// What one measured run reports (both sides print this as one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SideResult {
    pub side: String,
    pub batch: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub threads: i64,
    pub load_s: f64,
    pub ttft_s: f64,
    pub total_s: f64,
    pub tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub peak_rss_bytes: u64,
    /// GPU memory the process holds at the end of the run, as nvidia-smi reports it (CUDA only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_device_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_ms_median: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_implementation: Option<String>,
    /// Generated tokens per sequence; compared across sides, then dropped from the report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<Vec<u32>>,
}

#[derive(Serialize)]
struct RunReport {
    batch: usize,
    ours: SideResult,
    transformers: Option<SideResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transformers_error: Option<String>,
    ratio: Option<f64>,
    decode_ratio: Option<f64>,
    same_tokens: Option<usize>,
    /// 1-minute load average when this batch size started (other processes skew timings).
    load_average: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    model: String,
    gguf: Option<PathBuf>,
    architecture: String,
    device: String,
    dtype: String,
    threads: usize,
    prompt_tokens: usize,
    new_tokens: usize,
    warmup_tokens: usize,
    repeat: u32,
    omp_wait_policy: String,
    weights: WeightInfo,
    memory_bandwidth_gbs: f64,
    roofline_batch1_tokens_per_s: f64,
    roofline_fraction_batch1: Option<f64>,
    llamacpp: Option<serde_json::Value>,
    #[serde(skip)]
    llamacpp_note: String,
    runs: Vec<RunReport>,
}

pub fn run(args: DecodeArgs) -> anyhow::Result<()> {
    if args.batch.is_empty() || args.batch.contains(&0) {
        bail!("--batch needs positive sizes, got {:?}", args.batch);
    }
    if args.new_tokens < 2 || args.prompt_tokens == 0 {
        bail!("--new-tokens must be at least 2 and --prompt-tokens at least 1");
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let device = runtime::device::parse_device(&args.model.device)?;
    let kind = runtime::device::parse_kind(&args.model.dtype, device)?;
    let format = runtime::device::parse_weights(&args.model.weights)?;

    // Tokenizer and weight facts from the file header only; the workers load the network.
    let bar = spinner("reading the model header");
    let location = loader::resolve(&args.model.model)?;
    let (tokenizer, gguf_path, weights, architecture) = match &location {
        ModelLocation::Gguf(path) => {
            let file = GgufFile::open(path)?;
            let tokenizer = TextTokenizer::from_gguf(&file)?;
            let architecture = file.architecture().unwrap_or("?").to_string();
            let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            (
                tokenizer,
                Some(path),
                weight_info(&file, kind, format),
                architecture,
            )
        }
        ModelLocation::CheckpointDir(dir) => (
            TextTokenizer::from_hf_dir(dir)?,
            None,
            checkpoint_weight_info(dir, kind, format)?,
            checkpoint_architecture(dir),
        ),
    };
    let max_batch = args.batch.iter().copied().max().unwrap_or(1);
    let prompts = make_prompts(&tokenizer, max_batch, args.prompt_tokens)?;
    bar.finish_and_clear();

    let bar = spinner("measuring memory bandwidth (1 GiB sum, best of 5)");
    let bandwidth = memory_bandwidth_gbs(threads, device);
    bar.finish_with_message(format!("memory bandwidth: {bandwidth:.1} GB/s"));

    let python = args.python.clone().unwrap_or_else(default_python);
    let scripts = scripts_dir();
    let exe = std::env::current_exe().context("locating the tcomm binary")?;
    let tmp = std::env::temp_dir().join(format!("tcomm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    // transformers gets the same file (its loader takes a .gguf path or a HF folder).
    let model_for_python = match &location {
        ModelLocation::Gguf(p) | ModelLocation::CheckpointDir(p) => {
            std::fs::canonicalize(p).unwrap_or(p.clone())
        }
    };

    // transformers computes in the same dtype on the same device.
    let device_name = runtime::server::convert::device_name(device);
    let mut runs = Vec::new();
    for &b in &args.batch {
        let prompts_file = tmp.join(format!("prompts-{b}.json"));
        std::fs::write(&prompts_file, serde_json::to_string(&prompts[..b])?)?;
        let common = [
            "--prompts-file".to_string(),
            prompts_file.display().to_string(),
            "--new-tokens".into(),
            args.new_tokens.to_string(),
            "--threads".into(),
            threads.to_string(),
            "--warmup-tokens".into(),
            args.warmup_tokens.to_string(),
        ];

        let load_average = load_average();
        let mut ours: Option<SideResult> = None;
        let (mut transformers, mut transformers_error) = (None::<SideResult>, None);
        for attempt in 1..=args.repeat {
            let round = if args.repeat > 1 {
                format!(" (run {attempt}/{})", args.repeat)
            } else {
                String::new()
            };
            let bar = spinner(&format!("batch {b}: this engine{round}"));
            let mut cmd = Command::new(&exe);
            set_omp_policy(&mut cmd, &args.omp_wait_policy);
            cmd.args(["bench", "decode-worker", "--model", &args.model.model]);
            cmd.args(["--device", &args.model.device, "--dtype", &args.model.dtype, "--weights", &args.model.weights]);
            cmd.args(&common);
            let r: SideResult =
                run_json_worker(cmd).with_context(|| format!("this engine's run at batch {b}"))?;
            bar.finish_with_message(format!(
                "batch {b}: this engine{round} {:.1} tokens/s (TTFT {:.3}s)",
                r.tokens_per_s, r.ttft_s
            ));
            ours = Some(best_of(ours, r));

            if args.skip_transformers {
                continue;
            }
            let bar = spinner(&format!("batch {b}: transformers{round}"));
            let mut cmd = Command::new(&python);
            set_omp_policy(&mut cmd, &args.omp_wait_policy);
            cmd.arg(scripts.join("bench_transformers.py"));
            cmd.args([
                "--model".to_string(),
                model_for_python.display().to_string(),
                "--attn".into(),
                args.hf_attn.clone(),
                "--device".into(),
                device_name.clone(),
                "--dtype".into(),
                kind_name(kind),
            ]);
            cmd.args(&common);
            match run_json_worker::<SideResult>(cmd) {
                Ok(r) => {
                    bar.finish_with_message(format!(
                        "batch {b}: transformers{round} {:.1} tokens/s (TTFT {:.3}s)",
                        r.tokens_per_s, r.ttft_s
                    ));
                    transformers = Some(best_of(transformers, r));
                }
                Err(e) => {
                    bar.finish_with_message(format!("batch {b}: transformers{round} failed"));
                    transformers_error = Some(format!("{e:#}"));
                }
            }
        }
        let ours = ours.context("no measured run")?;
        if transformers.is_some() {
            transformers_error = None;
        }
        let ratio = transformers
            .as_ref()
            .map(|t| ours.tokens_per_s / t.tokens_per_s);
        let decode_ratio = transformers
            .as_ref()
            .map(|t| ours.decode_tokens_per_s / t.decode_tokens_per_s);
        let same_tokens = transformers.as_ref().map(|t| {
            ours.tokens
                .iter()
                .zip(&t.tokens)
                .filter(|(a, b)| a == b)
                .count()
        });
        let (mut ours, mut transformers) = (ours, transformers);
        ours.tokens.clear();
        if let Some(t) = transformers.as_mut() {
            t.tokens.clear();
        }
        runs.push(RunReport {
            batch: b,
            ours,
            transformers,
            transformers_error,
            ratio,
            decode_ratio,
            same_tokens,
            load_average,
        });
    }

    let (llamacpp, llamacpp_note) = if args.skip_transformers {
        (None, "llama.cpp: skipped (--skip-transformers)".to_string())
    } else {
        run_llamacpp(
            &args,
            &python,
            &scripts,
            &model_for_python,
            &tmp,
            &prompts[..1],
            threads,
        )
    };
    let _ = std::fs::remove_dir_all(&tmp);

    let roofline = bandwidth * 1e9 / weights.bytes_per_token as f64;
    let fraction = runs
        .iter()
        .find(|r| r.batch == 1)
        .map(|b1| b1.ours.decode_tokens_per_s / roofline);
    let report = Report {
        model: args.model.model.clone(),
        gguf: gguf_path,
        architecture,
        device: args.model.device.clone(),
        dtype: kind_name(kind),
        threads,
        prompt_tokens: args.prompt_tokens,
        new_tokens: args.new_tokens,
        warmup_tokens: args.warmup_tokens,
        repeat: args.repeat,
        omp_wait_policy: args.omp_wait_policy.clone(),
        weights,
        memory_bandwidth_gbs: bandwidth,
        roofline_batch1_tokens_per_s: roofline,
        roofline_fraction_batch1: fraction,
        llamacpp,
        llamacpp_note,
        runs,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// The faster of two runs (by tokens/s).
fn best_of(best: Option<SideResult>, new: SideResult) -> SideResult {
    match best {
        Some(b) if b.tokens_per_s >= new.tokens_per_s => b,
        _ => new,
    }
}

/// Prompts of exactly `len` tokens, one per sequence, cut from a token stream of varied texts
/// at different offsets so that no two sequences are the same.
fn make_prompts(
    tokenizer: &TextTokenizer,
    count: usize,
    len: usize,
) -> anyhow::Result<Vec<Vec<u32>>> {
    const TEXTS: &[&str] = &[
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?",
        "The history of the printing press begins in the fifteenth century, when movable type changed how knowledge spread across Europe and beyond.",
        "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\nprint([fibonacci(i) for i in range(10)])",
        "Photosynthesis converts light energy into chemical energy: plants take in carbon dioxide and water and release oxygen as a by-product.",
        "A train leaves the station at 3 pm travelling at 60 miles per hour; a second train leaves an hour later at 80 miles per hour. When does it catch up?",
        "Write a short poem about the sea at night, the sound of waves on the shore, and the lights of distant ships moving slowly along the horizon.",
    ];
    let mut stream = Vec::new();
    for text in TEXTS {
        stream.extend(tokenizer.encode(text, false)?);
        stream.extend(tokenizer.encode("\n\n", false)?);
    }
    if stream.is_empty() {
        bail!("the tokenizer produced no tokens for the benchmark texts");
    }
    let n = stream.len();
    Ok((0..count)
        .map(|i| (0..len).map(|j| stream[(i * 13 + j) % n]).collect())
        .collect())
}

/// llama.cpp at batch 1 through llama-cpp-python, when the Python has it.
fn run_llamacpp(
    args: &DecodeArgs,
    python: &Path,
    scripts: &Path,
    model: &Path,
    tmp: &Path,
    prompts: &[Vec<u32>],
    threads: usize,
) -> (Option<serde_json::Value>, String) {
    let (new_tokens, warmup_tokens, omp_wait_policy) =
        (args.new_tokens, args.warmup_tokens, &args.omp_wait_policy);
    let installed = Command::new(python)
        .args(["-c", "import llama_cpp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        return (
            None,
            "llama.cpp: not installed (pip install llama-cpp-python)".into(),
        );
    }
    if model.extension().is_none_or(|e| e != "gguf") {
        return (None, "llama.cpp: needs a .gguf model".into());
    }
    let bar = spinner("batch 1: llama.cpp");
    let file = tmp.join("prompts-llamacpp.json");
    if let Err(e) = std::fs::write(&file, serde_json::to_string(prompts).unwrap_or_default()) {
        return (None, format!("llama.cpp: failed: {e}"));
    }
    let mut cmd = Command::new(python);
    set_omp_policy(&mut cmd, omp_wait_policy);
    cmd.arg(scripts.join("bench_llamacpp.py"));
    cmd.args([
        "--model".to_string(),
        model.display().to_string(),
        "--prompts-file".into(),
        file.display().to_string(),
    ]);
    cmd.args([
        "--new-tokens".to_string(),
        new_tokens.to_string(),
        "--threads".into(),
        threads.to_string(),
    ]);
    cmd.args(["--warmup-tokens".to_string(), warmup_tokens.to_string()]);
    match run_json_worker::<serde_json::Value>(cmd) {
        Ok(v) => {
            let tps = v
                .get("tokens_per_s")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(f64::NAN);
            bar.finish_and_clear();
            (
                Some(v),
                format!("llama.cpp (batch 1, the GGUF as stored): {tps:.1} tokens/s"),
            )
        }
        Err(e) => {
            bar.finish_and_clear();
            (None, format!("llama.cpp: failed: {e:#}"))
        }
    }
}

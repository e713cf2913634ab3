//! `tcomm logits` and `tcomm generate`: single-prompt inference, for checking the engine against
//! transformers and for trying a model.
use anyhow::Context;
use clap::Args;
use runtime::engine::{Engine, EngineConfig, SequenceRequest};
use runtime::generate::{self, SamplingParams};
use runtime::loader::Model;
use runtime::server::ModelConfig;
use runtime::tokenizer::ChatMessage;

/// Which model to load and how (shared by `logits`, `generate` and the benchmarks, where it is
/// this engine's side: transformers always runs on the CPU in f32).
#[derive(Args)]
pub struct ModelArgs {
    /// A known model name (see `tcomm models`), a .gguf file or a Hugging Face checkpoint folder.
    #[arg(long, short, default_value = runtime::registry::DEFAULT_MODEL, env = "TCOMM_MODEL")]
    pub model: String,
    /// cpu, cuda, cuda:N or auto (CUDA when libtorch sees a GPU).
    #[arg(long, default_value = "cpu", env = "TCOMM_DEVICE")]
    pub device: String,
    /// Compute dtype: auto (f32 on CPU, bf16 on CUDA), f32, bf16, f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// How the projections' weights are stored: dense (in --dtype) or int8 (per-row scales,
    /// weight-only; CPU only).
    #[arg(long, default_value = "dense")]
    pub weights: String,
}

impl ModelArgs {
    pub fn load(&self) -> anyhow::Result<Model> {
        let config = ModelConfig { device: self.device.clone(), dtype: self.dtype.clone(), weights: self.weights.clone(), ..ModelConfig::new(self.model.clone()) };
        Ok(config.load_model()?)
    }
}

#[derive(Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to score; it is tokenized as transformers' `tokenizer(text)` does (special tokens added).
    #[arg(long)]
    text: String,
    /// How many of the highest logits of the last position to print.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Print one JSON object `{"token_ids": [...], "top": [{"id": N, "logit": X}, ...]}`.
    #[arg(long)]
    json: bool,
}

pub fn logits(args: LogitsArgs) -> anyhow::Result<()> {
    let model = args.model.load()?;
    let ids = model.tokenizer.encode(&args.text, true)?;
    let logits = generate::last_logits(&model.network, &ids)?;
    let k = (args.top_k as i64).clamp(1, logits.size()[0]);
    let (values, indices) = logits.topk(k, -1, true, true);
    let values = Vec::<f32>::try_from(&values).context("reading logits")?;
    let indices = Vec::<i64>::try_from(&indices).context("reading token ids")?;
    if args.json {
        let top: Vec<_> = indices.iter().zip(&values).map(|(i, v)| serde_json::json!({"id": i, "logit": v})).collect();
        println!("{}", serde_json::json!({"token_ids": ids, "top": top}));
    } else {
        println!("{} tokens: {:?}", ids.len(), ids);
        for (i, v) in indices.iter().zip(&values) {
            let piece = model.tokenizer.decode(&[*i as u32], false).unwrap_or_default();
            println!("{i:>8} {v:>12.5} {piece:?}");
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The user message.
    #[arg(long)]
    prompt: String,
    /// An optional system message.
    #[arg(long)]
    system: Option<String>,
    /// Use the prompt as raw text instead of applying the chat template.
    #[arg(long)]
    raw: bool,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop once the reply contains this text (repeatable); the text is cut before it.
    #[arg(long = "stop")]
    stop_strings: Vec<String>,
    /// Print `{"prompt_ids", "new_ids", "text", "finish_reason"}` as JSON.
    #[arg(long)]
    json: bool,
}

pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let model = args.model.load()?;
    let prompt_ids = if args.raw {
        model.tokenizer.encode(&args.prompt, true)?
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage { role: "system".into(), content: system.clone() });
        }
        messages.push(ChatMessage { role: "user".into(), content: args.prompt.clone() });
        model.tokenizer.encode_chat(&messages)?
    };
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        max_new_tokens: args.max_new_tokens,
        stop_token_ids: model.tokenizer.eos_token_ids(),
        stop_strings: args.stop_strings.clone(),
    };
    let start = std::time::Instant::now();
    let mut engine = Engine::new(&model.network, EngineConfig::default()).with_tokenizer(&model.tokenizer);
    engine.add(SequenceRequest::new(prompt_ids.clone(), params))?;
    let (_, out) = engine.run_to_completion().pop().context("the engine returned no result")?;
    let seconds = start.elapsed().as_secs_f64();
    let mut text = model.tokenizer.decode(&out.tokens, true)?;
    if let Some(cut) = args.stop_strings.iter().filter_map(|s| text.find(s.as_str())).min() {
        text.truncate(cut);
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"prompt_ids": prompt_ids, "new_ids": out.tokens, "text": text, "finish_reason": out.finish})
        );
    } else {
        println!("{text}");
        eprintln!("[{} tokens in {:.2}s, {:.1} tokens/s, {:?}]", out.tokens.len(), seconds, out.tokens.len() as f64 / seconds, out.finish);
    }
    Ok(())
}

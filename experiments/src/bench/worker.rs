//! `tcomm bench decode-worker`: one measured run of this engine in a process of its own. Prints
//! one JSON line (`SideResult`) on stdout. With `--profile`, it also prints on stderr where a
//! decode step's time goes: the engine loop against a bare model loop, and per-component
//! timings of one decoder layer rebuilt from the runtime's building blocks at the same shapes.
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use runtime::engine::{Engine, EngineConfig, EngineEvent, SequenceOutput, SequenceRequest};
use runtime::generate::SamplingParams;
use runtime::models::layers::{attention_mask, Linear, Mlp, RmsNorm, Rope};
use runtime::models::spec::NormStyle;
use runtime::models::Transformer;
use tch::{Kind, Tensor};

use super::decode::SideResult;
use super::ModelArgs;

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON list of token-id lists, one per sequence.
    #[arg(long)]
    prompts_file: std::path::PathBuf,
    #[arg(long)]
    new_tokens: usize,
    #[arg(long)]
    threads: usize,
    #[arg(long, default_value_t = 16)]
    warmup_tokens: usize,
    /// Also print a breakdown of the decode step's time on stderr.
    #[arg(long)]
    profile: bool,
}

pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    tch::set_num_threads(args.threads as i32);
    let text = std::fs::read_to_string(&args.prompts_file)
        .with_context(|| format!("reading {}", args.prompts_file.display()))?;
    let prompts: Vec<Vec<u32>> = serde_json::from_str(&text).context("parsing the prompts file")?;
    anyhow::ensure!(!prompts.is_empty(), "no prompts");
    let start = Instant::now();
    let model = args.model.load()?;
    let load_s = start.elapsed().as_secs_f64();
    let net = &model.network;

    if args.warmup_tokens > 0 {
        run_engine(net, &prompts, args.warmup_tokens)?;
    }
    let run = run_engine(net, &prompts, args.new_tokens)?;
    let b = prompts.len();
    let decode_s = (run.total - run.ttft).as_secs_f64().max(1e-9);
    let mut steps: Vec<f64> = run
        .steps
        .iter()
        .skip(1)
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    steps.sort_by(f64::total_cmp);
    let result = SideResult {
        side: "ours".into(),
        batch: b,
        prompt_tokens: prompts[0].len(),
        new_tokens: args.new_tokens,
        threads: i64::from(tch::get_num_threads()),
        load_s,
        ttft_s: run.ttft.as_secs_f64(),
        total_s: run.total.as_secs_f64(),
        tokens_per_s: run.outputs.iter().map(|o| o.tokens.len()).sum::<usize>() as f64
            / run.total.as_secs_f64(),
        decode_tokens_per_s: (b * (args.new_tokens - 1)) as f64 / decode_s,
        peak_rss_bytes: peak_rss_bytes(),
        peak_device_bytes: match net.device() {
            tch::Device::Cuda(_) => gpu_memory_bytes(),
            _ => None,
        },
        step_ms_median: steps.get(steps.len() / 2).copied(),
        attn_implementation: None,
        tokens: run.outputs.into_iter().map(|o| o.tokens).collect(),
    };
    if args.profile {
        profile(net, &prompts, args.new_tokens, &steps);
    }
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

struct EngineRun {
    /// In prompt order.
    outputs: Vec<SequenceOutput>,
    ttft: Duration,
    total: Duration,
    steps: Vec<Duration>,
}

/// All prompts through one engine, greedy, exactly `new_tokens` tokens each.
fn run_engine(
    net: &Transformer,
    prompts: &[Vec<u32>],
    new_tokens: usize,
) -> anyhow::Result<EngineRun> {
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: new_tokens,
        stop_token_ids: Vec::new(),
        ..Default::default()
    };
    let mut engine = Engine::new(
        net,
        EngineConfig {
            max_batch_size: prompts.len(),
            max_batch_tokens: 1 << 40,
        },
    );
    let start = Instant::now();
    let mut ids = Vec::new();
    for p in prompts {
        ids.push(engine.add(SequenceRequest::new(p.clone(), params.clone()))?);
    }
    let mut steps = Vec::new();
    let mut done = Vec::new();
    while engine.has_work() {
        let t = Instant::now();
        let events = engine.step();
        steps.push(t.elapsed());
        for event in events {
            if let EngineEvent::Finished { id, output } = event {
                done.push((id, output));
            }
        }
    }
    let total = start.elapsed();
    done.sort_by_key(|(id, _)| *id);
    anyhow::ensure!(
        done.len() == prompts.len(),
        "{} of {} sequences finished",
        done.len(),
        prompts.len()
    );
    let ttft = done
        .iter()
        .map(|(_, o)| o.time_to_first_token)
        .max()
        .unwrap_or_default();
    Ok(EngineRun {
        outputs: done.into_iter().map(|(_, o)| o).collect(),
        ttft,
        total,
        steps,
    })
}

/// The process's peak resident set (VmHWM), 0 where /proc is missing.
pub(super) fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// GPU memory this process holds, as `nvidia-smi --query-compute-apps` reports it (the CUDA
/// context and the caching allocator's pool included); None where nvidia-smi does not list it.
fn gpu_memory_bytes() -> Option<u64> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    let me = std::process::id().to_string();
    String::from_utf8_lossy(&out.stdout).lines().find_map(|line| {
        let (pid, mib) = line.split_once(',')?;
        (pid.trim() == me).then(|| mib.trim().parse::<u64>().ok().map(|m| m << 20))?
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Times `f` over `iters` runs after one untimed run; returns the mean in milliseconds.
fn time_ms(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    ms(start.elapsed()) / iters as f64
}

/// Where a decode step's time goes, on stderr.
fn profile(net: &Transformer, prompts: &[Vec<u32>], new_tokens: usize, engine_steps_ms: &[f64]) {
    let _guard = tch::no_grad_guard();
    let device = net.device();
    let b = prompts.len() as i64;
    let p = prompts[0].len() as i64;
    eprintln!(
        "--- profile: batch {b}, prompt {p}, {new_tokens} new tokens, {} threads ---",
        tch::get_num_threads()
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    eprintln!(
        "engine decode step (median):            {:8.2} ms",
        median(&mut engine_steps_ms.to_vec())
    );

    // A bare loop over the model API: batched prefill, then greedy steps with the argmax kept
    // on the device and one host read per step.
    let ids: Vec<i64> = prompts.iter().flatten().map(|&t| i64::from(t)).collect();
    let ids = Tensor::from_slice(&ids).view([b, p]).to_device(device);
    let mut cache = net.new_cache();
    let t0 = Instant::now();
    let positions = Tensor::arange(p, (Kind::Int64, device))
        .unsqueeze(0)
        .repeat([b, 1]);
    let (hidden, _) = net.forward_embeds(&net.embed(&ids), &positions, &mut cache, &[]);
    let mut next = net
        .logits(&hidden.select(1, -1))
        .argmax(-1, false)
        .view([b, 1]);
    let _ = next.int64_value(&[0, 0]);
    let prefill = t0.elapsed();
    let (mut fwd, mut head, mut pick) = (Vec::new(), Vec::new(), Vec::new());
    let mut steps = Vec::new();
    for i in 0..new_tokens as i64 - 1 {
        let t = Instant::now();
        let pos = Tensor::full([b, 1], p + i, (Kind::Int64, device));
        let (hidden, _) = net.forward_embeds(&net.embed(&next), &pos, &mut cache, &[]);
        let t1 = Instant::now();
        let logits = net.logits(&hidden.squeeze_dim(1));
        let t2 = Instant::now();
        next = logits.argmax(-1, false).view([b, 1]);
        let _ = next.int64_value(&[0, 0]);
        let t3 = Instant::now();
        fwd.push(ms(t1 - t));
        head.push(ms(t2 - t1));
        pick.push(ms(t3 - t2));
        steps.push(ms(t3 - t));
    }
    eprintln!(
        "bare model loop, batched prefill:       {:8.2} ms",
        ms(prefill)
    );
    eprintln!(
        "bare model step (median):               {:8.2} ms",
        median(&mut steps)
    );
    eprintln!(
        "  decoder layers + final norm:          {:8.2} ms",
        median(&mut fwd)
    );
    eprintln!(
        "  lm_head (logits):                     {:8.2} ms",
        median(&mut head)
    );
    eprintln!(
        "  argmax + host read:                   {:8.2} ms",
        median(&mut pick)
    );

    synthetic_profile(net, b, p + new_tokens as i64 / 2);
}

/// One decoder layer of the model's shapes, rebuilt from the runtime's blocks with random
/// weights (each layer its own, so weights stream from memory as in the real model).
struct SynthLayer {
    q: Linear,
    k: Linear,
    v: Linear,
    qkv: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    mlp: Mlp,
    /// Cached keys and values `[B, kv_heads, T, head_dim]`, and the same with room for one more.
    kc: Tensor,
    kc_room: Tensor,
}

/// Variants of a decode step over synthetic layers: what the engine does now, and what
/// candidate changes would give. Printed on stderr.
fn synthetic_profile(net: &Transformer, b: i64, t_cache: i64) {
    let s = net.spec().clone();
    let (device, kind) = (net.device(), net.kind());
    let (h, nh, nkv, hd, inter, l) = (
        s.hidden_size,
        s.num_heads,
        s.num_kv_heads,
        s.head_dim,
        s.intermediate_size,
        s.num_layers,
    );
    let opts = (kind, device);
    let lin = |o: i64, i: i64, k: Kind| Linear::dense((Tensor::randn([o, i], (Kind::Float, device)) * 0.02).to_kind(k), None);
    let layers_of = |k: Kind| -> Vec<SynthLayer> {
        (0..l)
            .map(|_| SynthLayer {
                q: lin(nh * hd, h, k),
                k: lin(nkv * hd, h, k),
                v: lin(nkv * hd, h, k),
                qkv: lin((nh + 2 * nkv) * hd, h, k),
                o: lin(h, nh * hd, k),
                gate: lin(inter, h, k),
                up: lin(inter, h, k),
                mlp: Mlp {
                    gate_up: lin(2 * inter, h, k),
                    down: lin(h, inter, k),
                    activation: s.activation,
                },
                kc: Tensor::randn([b, nkv, t_cache, hd], (k, device)),
                kc_room: Tensor::randn([b, nkv, t_cache + 1, hd], (k, device)),
            })
            .collect()
    };
    let layers = layers_of(kind);
    let norm = RmsNorm::new(Tensor::ones([h], opts), s.rms_eps, NormStyle::Plain);
    let rope = Rope::new(&s.rope, device);
    let pos = Tensor::full([b, 1], t_cache, (Kind::Int64, device));
    let (cos, sin) = rope.cos_sin(&pos, t_cache, kind);
    let k_pos = Tensor::arange(t_cache + 1, (Kind::Int64, device))
        .unsqueeze(0)
        .repeat([b, 1]);
    let mask = attention_mask(&pos, &k_pos, None);
    let lm_head = (Tensor::randn([s.vocab_size, h], (Kind::Float, device)) * 0.02).to_kind(kind);
    let x0 = Tensor::randn([b, 1, h], opts);
    let heads = |t: Tensor, n: i64| t.view([b, 1, n, hd]).transpose(1, 2);

    #[derive(Clone, Copy)]
    struct V {
        fused: bool,
        mask: bool,
        static_cache: bool,
    }
    let step = |layers: &[SynthLayer],
                norm: &RmsNorm,
                head: &Tensor,
                x0: &Tensor,
                cos: &Tensor,
                sin: &Tensor,
                v: V|
     -> i64 {
        let mut x = x0.shallow_clone();
        for ly in layers {
            let hn = norm.forward(&x);
            let (q, k, vv) = if v.fused {
                let parts = ly
                    .qkv
                    .forward(&hn)
                    .split_with_sizes([nh * hd, nkv * hd, nkv * hd], -1);
                (
                    parts[0].shallow_clone(),
                    parts[1].shallow_clone(),
                    parts[2].shallow_clone(),
                )
            } else {
                (ly.q.forward(&hn), ly.k.forward(&hn), ly.v.forward(&hn))
            };
            let q = rope.apply(&heads(q, nh), cos, sin);
            let k = rope.apply(&heads(k, nkv), cos, sin);
            let vv = heads(vv, nkv);
            let (kf, vf) = if v.static_cache {
                let mut slot = ly.kc_room.narrow(2, t_cache, 1);
                slot.copy_(&k);
                let mut slot = ly.kc_room.narrow(2, t_cache, 1);
                slot.copy_(&vv);
                (ly.kc_room.shallow_clone(), ly.kc_room.shallow_clone())
            } else {
                (
                    Tensor::cat(&[&ly.kc, &k], 2),
                    Tensor::cat(&[&ly.kc, &vv], 2),
                )
            };
            let m = if v.mask { Some(&mask) } else { None };
            let a = Tensor::scaled_dot_product_attention(
                &q,
                &kf,
                &vf,
                m,
                0.0,
                false,
                Some(s.attn_scale),
                true,
            );
            let a = ly.o.forward(&a.transpose(1, 2).reshape([b, 1, nh * hd]));
            x = &x + a;
            let hn = norm.forward(&x);
            x = if v.fused {
                &x + ly.mlp.forward(&hn)
            } else {
                &x + ly.mlp.down.forward(&(ly.gate.forward(&hn).silu() * ly.up.forward(&hn)))
            };
        }
        let logits = norm.forward(&x).linear::<Tensor>(head, None);
        logits.argmax(-1, false).int64_value(&[0, 0])
    };
    let n = 10;
    let separate = V {
        fused: false,
        mask: true,
        static_cache: false,
    };
    let fused = V {
        fused: true,
        ..separate
    };
    let nomask = V {
        mask: false,
        ..fused
    };
    let stat = V {
        static_cache: true,
        ..nomask
    };
    eprintln!("synthetic decode step, batch {b}, cache length {t_cache}, {l} layers (random weights, same shapes):");
    let mut rows = vec![
        (
            "separate q/k/v and gate/up matmuls",
            time_ms(n, || {
                step(&layers, &norm, &lm_head, &x0, &cos, &sin, separate);
            }),
        ),
        (
            "fused qkv and gate_up (the engine now)",
            time_ms(n, || {
                step(&layers, &norm, &lm_head, &x0, &cos, &sin, fused);
            }),
        ),
        (
            "+ no attention mask (no padding)",
            time_ms(n, || {
                step(&layers, &norm, &lm_head, &x0, &cos, &sin, nomask);
            }),
        ),
        (
            "+ preallocated cache (copy, no cat)",
            time_ms(n, || {
                step(&layers, &norm, &lm_head, &x0, &cos, &sin, stat);
            }),
        ),
    ];
    let matmuls = time_ms(n, || {
        let xi = Tensor::randn([b, 1, inter], opts);
        for ly in &layers {
            drop((
                x0.linear::<Tensor>(&ly.qkv.weight, None),
                x0.linear::<Tensor>(&ly.o.weight, None),
            ));
            drop((
                x0.linear::<Tensor>(&ly.mlp.gate_up.weight, None),
                xi.linear::<Tensor>(&ly.mlp.down.weight, None),
            ));
        }
        drop(x0.linear::<Tensor>(&lm_head, None));
    });
    rows.push(("the fused matmuls alone", matmuls));
    rows.push((
        "lm_head alone",
        time_ms(n, || drop(x0.linear::<Tensor>(&lm_head, None))),
    ));
    rows.push((
        "tiny op (add of [B,1,H]) x1000",
        time_ms(n, || (0..1000).for_each(|_| drop(&x0 + &x0))),
    ));
    if kind == Kind::Float {
        drop(layers);
        let layers = layers_of(Kind::BFloat16);
        let bf = |t: &Tensor| t.to_kind(Kind::BFloat16);
        let (head, x, c, si) = (bf(&lm_head), bf(&x0), bf(&cos), bf(&sin));
        let norm_bf = RmsNorm::new(
            Tensor::ones([h], (Kind::BFloat16, device)),
            s.rms_eps,
            NormStyle::Plain,
        );
        rows.push((
            "fused, no mask, in bf16",
            time_ms(n, || {
                step(&layers, &norm_bf, &head, &x, &c, &si, nomask);
            }),
        ));
    }
    for (name, t) in rows {
        eprintln!("  {name:<40} {t:8.2} ms");
    }
}

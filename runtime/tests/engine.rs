//! Engine tests: continuous batching gives every sequence exactly the tokens it gets alone,
//! batched (left-padded) logits equal single-sequence logits, seeded sampling, request
//! validation, hidden-state capture, prefix injection (embeddings and key/values), gradients
//! through an embedding prefix, and cancellation.
//!
//! The tiny random-weight fixtures (`tests/fixtures/tiny`) keep most tests fast; the real
//! `smollm2-135m` runs the 8-sequence batching test.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use runtime::engine::{Engine, EngineConfig, EngineEvent, SeqId, SequenceOutput, SequenceRequest};
use runtime::generate::SamplingParams;
use runtime::loader::load_network_from_dir;
use runtime::models::Transformer;
use tch::{Device, Kind, Tensor};

#[path = "engine/autograd.rs"]
mod autograd;
#[path = "engine/batching.rs"]
mod batching;
#[path = "engine/capture.rs"]
mod capture;
#[path = "engine/logits.rs"]
mod logits;
#[path = "engine/prefix.rs"]
mod prefix;
#[path = "engine/sampling.rs"]
mod sampling;
#[path = "engine/weights.rs"]
mod weights;

/// Largest absolute difference allowed between batched and single-sequence floats.
pub const TOLERANCE: f64 = 1e-4;

pub fn fixture_dir(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(arch)
}

/// One intra-op thread per test: the test harness already runs tests in parallel, and on a
/// small shared machine two OpenMP threads per test are several times slower than one.
/// (OpenMP's thread count is per calling thread, so every test sets it.)
pub fn one_thread() {
    tch::set_num_threads(1);
}

pub fn tiny(arch: &str) -> Transformer {
    one_thread();
    load_network_from_dir(&fixture_dir(arch), Device::Cpu, Kind::Float).unwrap_or_else(|e| panic!("{arch}: {e}"))
}

pub fn tiny_reference(arch: &str) -> HashMap<String, Tensor> {
    let path = fixture_dir(arch).join("reference.safetensors");
    Tensor::read_safetensors(path).expect("reference.safetensors").into_iter().collect()
}

/// The real SmolLM2-135M (Q4_1 GGUF dequantized to f32), loaded once and shared: the tests that
/// use it take turns.
pub fn smol() -> MutexGuard<'static, runtime::loader::Model> {
    one_thread();
    static MODEL: OnceLock<Mutex<runtime::loader::Model>> = OnceLock::new();
    let model = MODEL.get_or_init(|| {
        let start = std::time::Instant::now();
        let m = runtime::loader::load("smollm2-135m", Device::Cpu, Kind::Float).expect("smollm2-135m (run scripts/setup)");
        eprintln!("smollm2-135m loaded in {:.1}s", start.elapsed().as_secs_f64());
        Mutex::new(m)
    });
    model.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Deterministic pseudo-random token ids in `3..vocab`.
pub fn tokens(seed: u64, len: usize, vocab: i64) -> Vec<u32> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (3 + (x >> 33) % (vocab as u64 - 3)) as u32
        })
        .collect()
}

pub fn greedy(max_new_tokens: usize) -> SamplingParams {
    SamplingParams { max_new_tokens, ..Default::default() }
}

pub fn sampled(seed: u64, max_new_tokens: usize) -> SamplingParams {
    SamplingParams { temperature: 0.8, top_k: 20, top_p: 0.9, seed, max_new_tokens, ..Default::default() }
}

pub fn unlimited(max_batch_size: usize) -> EngineConfig {
    EngineConfig { max_batch_size, max_batch_tokens: usize::MAX }
}

/// Runs one request alone in a fresh engine.
pub fn solo(net: &Transformer, req: SequenceRequest) -> SequenceOutput {
    let mut engine = Engine::new(net, unlimited(1));
    engine.add(req).expect("valid request");
    let mut done = engine.run_to_completion();
    assert_eq!(done.len(), 1);
    assert!(!engine.has_work());
    done.pop().expect("one output").1
}

/// Adds all requests to `engine`, then steps it to completion. Checks on the way that every
/// `Token` event belongs to a known sequence, that the events of each sequence spell its output,
/// and that no more than `max_batch_size` sequences ever run at once. Outputs in request order.
pub fn run_batch(engine: &mut Engine, reqs: Vec<SequenceRequest>, max_batch_size: usize) -> Vec<SequenceOutput> {
    let ids: Vec<SeqId> = reqs.into_iter().map(|r| engine.add(r).expect("valid request")).collect();
    let mut streamed: HashMap<SeqId, Vec<u32>> = HashMap::new();
    let mut outputs: HashMap<SeqId, SequenceOutput> = HashMap::new();
    let mut steps = 0;
    while engine.has_work() {
        for event in engine.step() {
            match event {
                EngineEvent::Token { id, token } => {
                    assert!(ids.contains(&id) && !outputs.contains_key(&id), "token for unknown or finished sequence {id}");
                    streamed.entry(id).or_default().push(token);
                }
                EngineEvent::Finished { id, output } => {
                    assert!(outputs.insert(id, output).is_none(), "sequence {id} finished twice");
                }
            }
        }
        assert!(engine.num_active() <= max_batch_size, "{} sequences running", engine.num_active());
        steps += 1;
        assert!(steps < 10_000, "engine does not terminate");
    }
    ids.iter()
        .map(|id| {
            let out = outputs.remove(id).unwrap_or_else(|| panic!("sequence {id} never finished"));
            assert_eq!(streamed.get(id), Some(&out.tokens), "streamed tokens of {id} differ from its output");
            out
        })
        .collect()
}

pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

pub fn ids_tensor(ids: &[u32]) -> Tensor {
    let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    Tensor::from_slice(&ids).unsqueeze(0)
}

/// One plain forward of `ids` from position 0 with no cache reuse: the final-normed states
/// `[T, H]`, the logits `[T, vocab]` and the requested hidden states, each `[T, H]`.
pub fn full_forward(net: &Transformer, ids: &[u32], layers: &[usize]) -> (Tensor, Tensor, Vec<Tensor>) {
    let _guard = tch::no_grad_guard();
    let positions = Tensor::arange(ids.len() as i64, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let mut cache = net.new_cache();
    let (hidden, states) = net.forward_embeds(&net.embed(&ids_tensor(ids)), &positions, &mut cache, layers);
    let logits = net.logits(&hidden).squeeze_dim(0);
    (hidden.squeeze_dim(0), logits, states.into_iter().map(|s| s.squeeze_dim(0)).collect())
}


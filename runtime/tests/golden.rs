//! Golden tests: tiny random-weight checkpoints of every architecture, made by transformers
//! (`scripts/make_tiny_fixtures.py`), must give transformers' logits, every layer's hidden state
//! and greedy tokens, within 1e-4.
use std::collections::HashMap;
use std::path::PathBuf;

use runtime::generate::{generate, SamplingParams};
use runtime::loader::load_network_from_dir;
use runtime::models::Transformer;
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-4;

fn fixture(arch: &str) -> (Transformer, HashMap<String, Tensor>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(arch);
    let net = load_network_from_dir(&dir, Device::Cpu, Kind::Float).unwrap_or_else(|e| panic!("{arch}: {e}"));
    let reference = Tensor::read_safetensors(dir.join("reference.safetensors")).expect("reference.safetensors");
    (net, reference.into_iter().collect())
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}

/// Full-sequence forward of the whole batch: logits and all hidden states.
fn check_forward(arch: &str) {
    let _guard = tch::no_grad_guard();
    let (net, r) = fixture(arch);
    let ids = &r["input_ids"];
    let (b, t) = (ids.size()[0], ids.size()[1]);
    let positions = Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0).repeat([b, 1]);
    let layers = net.spec().num_layers as usize;
    let capture: Vec<usize> = (0..=layers).collect();
    let mut cache = net.new_cache();
    let (hidden, states) = net.forward_embeds(&net.embed(ids), &positions, &mut cache, &capture);
    let logits = net.logits(&hidden);
    let d = max_diff(&logits, &r["logits"]);
    assert!(d < TOLERANCE, "{arch}: logits differ by {d}");
    let expected = &r["hidden_states"];
    assert_eq!(states.len() as i64, expected.size()[0], "{arch}: number of hidden states");
    for (l, state) in states.iter().enumerate() {
        let d = max_diff(state, &expected.get(l as i64));
        assert!(d < TOLERANCE, "{arch}: hidden state {l} differs by {d}");
    }
}

/// Prefill of 6 tokens then one token at a time through the KV cache gives the same logits.
/// (Not for `phi3_long`: there transformers itself recomputes the cache when the sequence passes
/// the original context, which the greedy test covers.)
fn check_incremental(arch: &str) {
    let _guard = tch::no_grad_guard();
    let (net, r) = fixture(arch);
    let ids = r["input_ids"].narrow(0, 0, 1);
    let t = ids.size()[1];
    let mut cache = net.new_cache();
    let prefill = 6;
    let positions = Tensor::arange(prefill, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let (hidden, _) = net.forward_embeds(&net.embed(&ids.narrow(1, 0, prefill)), &positions, &mut cache, &[]);
    let mut pieces = vec![net.logits(&hidden)];
    for p in prefill..t {
        let positions = Tensor::from_slice(&[p]).unsqueeze(0);
        let (hidden, _) = net.forward_embeds(&net.embed(&ids.narrow(1, p, 1)), &positions, &mut cache, &[]);
        pieces.push(net.logits(&hidden));
    }
    let logits = Tensor::cat(&pieces, 1);
    let d = max_diff(&logits, &r["logits"].narrow(0, 0, 1));
    assert!(d < TOLERANCE, "{arch}: incremental logits differ by {d}");
}

fn check_greedy(arch: &str) {
    let (net, r) = fixture(arch);
    let expected = Vec::<i64>::try_from(r["greedy_ids"].flatten(0, -1)).expect("greedy_ids");
    let prompt = Vec::<i64>::try_from(r["input_ids"].get(0).narrow(0, 0, 6)).expect("input_ids");
    let prompt: Vec<u32> = prompt.iter().map(|&i| i as u32).collect();
    let params = SamplingParams { max_new_tokens: expected.len(), ..Default::default() };
    let out = generate(&net, &prompt, &params).expect("generate");
    let got: Vec<i64> = out.tokens.iter().map(|&i| i64::from(i)).collect();
    assert_eq!(got, expected, "{arch}: greedy tokens");
}

macro_rules! golden {
    ($($name:ident => $arch:literal),* $(,)?) => {$(
        mod $name {
            #[test]
            fn forward_matches_transformers() { super::check_forward($arch) }
            #[test]
            fn greedy_matches_transformers() { super::check_greedy($arch) }
        }
    )*};
}

golden! {
    llama => "llama",
    llama_tied => "llama_tied",
    qwen2 => "qwen2",
    qwen3 => "qwen3",
    gemma3 => "gemma3",
    phi3 => "phi3",
    phi3_long => "phi3_long",
}

#[test]
fn kv_cache_matches_full_forward() {
    for arch in ["llama", "llama_tied", "qwen2", "qwen3", "gemma3", "phi3"] {
        check_incremental(arch);
    }
}

//! int8 weight-only projections (`--weights int8`): the logits follow the dense model's in f32
//! and in bf16, and the engine generates with them.
use runtime::device::WeightFormat;
use runtime::engine::{Engine, SequenceRequest};
use runtime::generate::last_logits;
use tch::{Device, Kind};

use super::{greedy, one_thread, run_batch, solo, unlimited};

#[test]
fn int8_weights_follow_dense_logits_smollm2() {
    for kind in [Kind::Float, Kind::BFloat16] {
        int8_follows_dense(kind);
    }
}

fn int8_follows_dense(kind: Kind) {
    one_thread();
    let mut model = runtime::loader::load("smollm2-135m", Device::Cpu, kind).expect("smollm2-135m (run scripts/setup)");
    let net = &mut model.network;
    assert_eq!(net.weight_format(), WeightFormat::Dense);
    let prompts: Vec<Vec<u32>> = ["The capital of France is", "def add(a, b):\n    return", "12 + 30 ="]
        .iter()
        .map(|t| model.tokenizer.encode(t, true).expect("tokenize"))
        .collect();
    let dense: Vec<_> = prompts.iter().map(|p| last_logits(net, p).expect("dense logits")).collect();
    net.store_weights(WeightFormat::Int8).expect("int8 on the CPU");
    assert_eq!(net.weight_format(), WeightFormat::Int8);
    net.store_weights(WeightFormat::Int8).expect("storing the current format again is a no-op");
    assert!(net.store_weights(WeightFormat::Dense).is_err(), "int8 cannot be made dense again");
    for (p, d) in prompts.iter().zip(&dense) {
        let q = last_logits(net, p).expect("int8 logits");
        let spread = d.max().double_value(&[]) - d.min().double_value(&[]);
        let worst = (&q - d).abs().max().double_value(&[]);
        // Measured: 1.6-3.2% of the logit range over 30 layers of per-row int8 rounding. A wrong
        // scale or row order is off by the range.
        assert!(worst < 0.06 * spread, "{kind:?}: int8 logits off by {worst} (range {spread})");
        assert_eq!(q.argmax(-1, false).int64_value(&[]), d.argmax(-1, false).int64_value(&[]), "{kind:?}: top token changed");
    }

    // The engine generates with int8 weights in a batch. The kernel's bf16 inputs round
    // differently for different batch shapes (dense bf16 does too), so batched and solo tokens may
    // part at a near-tie ("12 + 30 =" goes " 42" alone and " 40" batched in f32); the first token
    // of each prompt has a clear margin and must agree.
    let request = |i: usize| SequenceRequest::new(prompts[i].clone(), greedy(8));
    let alone: Vec<_> = (0..prompts.len()).map(|i| solo(net, request(i)).tokens).collect();
    let mut engine = Engine::new(net, unlimited(prompts.len()));
    let together = run_batch(&mut engine, (0..prompts.len()).map(request).collect(), prompts.len());
    for (i, (out, solo_tokens)) in together.iter().zip(&alone).enumerate() {
        assert_eq!(out.tokens.len(), 8);
        assert_eq!(out.tokens[0], solo_tokens[0], "{kind:?} prompt {i}: batched int8 first token differs from solo");
    }
}

#[test]
fn weight_formats_parse() {
    assert!(runtime::device::parse_weights("int4").is_err());
    assert_eq!(runtime::device::parse_weights(" INT8 ").ok(), Some(WeightFormat::Int8));
    assert_eq!(runtime::device::parse_weights("dense").ok(), Some(WeightFormat::Dense));
}

//! Continuous batching: sequences run together give exactly their solo tokens, whether they all
//! run the full length, leave mid-batch on a stop token, join as others leave (a batch smaller
//! than the queue), or are cancelled.
use runtime::engine::{Engine, EngineEvent, SequenceOutput, SequenceRequest};
use runtime::generate::{FinishReason, SamplingParams};
use runtime::models::Transformer;

use super::{greedy, run_batch, sampled, smol, solo, tiny, tokens, unlimited};

const TEXTS: [&str; 8] = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea, there lived",
    "def fibonacci(n):",
    "Water boils at a temperature of one hundred degrees Celsius at sea level, but on top of a high mountain",
    "Hi",
    "List three primary colors:",
    "In 1969, astronauts landed on the Moon for the first time. The mission was called Apollo 11, and the first person to step onto the surface was",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
];

/// Prompt lengths from 3 to 40 tokens.
fn smol_prompts(model: &runtime::loader::Model) -> Vec<Vec<u32>> {
    let mut prompts: Vec<Vec<u32>> = TEXTS.iter().map(|t| model.tokenizer.encode(t, false).expect("encode")).collect();
    // "Hi" is a single token: make it 3 (beginning of a chat turn).
    prompts[4] = model.tokenizer.encode("Hi there!", false).expect("encode");
    let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    assert!(lens.iter().all(|&l| (3..=40).contains(&l)), "prompt lengths {lens:?}");
    let mut distinct = lens.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 7, "prompt lengths should differ: {lens:?}");
    prompts
}

fn assert_same(got: &[SequenceOutput], want: &[(Vec<u32>, FinishReason)], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (out, (tokens, finish))) in got.iter().zip(want).enumerate() {
        assert_eq!(&out.tokens, tokens, "{what}: sequence {i} tokens differ from its solo run");
        assert_eq!(out.finish, *finish, "{what}: sequence {i} finish reason");
    }
}

#[test]
fn batched_greedy_equals_solo_smollm2() {
    let model = smol();
    let net = &model.network;
    let prompts = smol_prompts(&model);
    let new = 24;
    let alone: Vec<SequenceOutput> = prompts.iter().map(|p| solo(net, SequenceRequest::new(p.clone(), greedy(new)))).collect();
    for out in &alone {
        assert_eq!(out.tokens.len(), new, "no stop ids: every solo run is full length");
        assert_eq!(out.finish, FinishReason::Length);
    }
    let full: Vec<(Vec<u32>, FinishReason)> = alone.iter().map(|o| (o.tokens.clone(), FinishReason::Length)).collect();

    // Stop ids that occur: even sequences stop at a token of their own solo output (each at a
    // different step), odd ones run the full length. The expected output is the solo output cut
    // after the first occurrence of the stop token (greedy is deterministic, so a solo run with
    // the stop id yields exactly that prefix).
    let mut stops: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let mut early = full.clone();
    for i in (0..prompts.len()).step_by(2) {
        let tokens = &alone[i].tokens;
        let stop = tokens[3 + 2 * i];
        let cut = tokens.iter().position(|&t| t == stop).expect("occurs") + 1;
        assert!(cut < new, "sequence {i} must stop early");
        stops[i] = vec![stop];
        early[i] = (tokens[..cut].to_vec(), FinishReason::Stop);
    }
    let early_lens: Vec<usize> = early.iter().map(|(t, _)| t.len()).collect();
    let with_stops = |i: usize| SamplingParams { stop_token_ids: stops[i].clone(), ..greedy(new) };
    // One solo run with a stop id, through the engine, to back up the truncation argument.
    assert_same(&[solo(net, SequenceRequest::new(prompts[2].clone(), with_stops(2)))], &early[2..3], "solo with stop id");

    // All 8 at once, full length; all 8 at once, rows leaving mid-batch; and a batch of 3, where
    // sequences join as others leave (at different steps, thanks to the early stops).
    for (max_batch_size, stop_early) in [(8, false), (8, true), (3, true)] {
        let mut engine = Engine::new(net, unlimited(max_batch_size));
        let params = |i: usize| if stop_early { with_stops(i) } else { greedy(new) };
        let reqs = (0..prompts.len()).map(|i| SequenceRequest::new(prompts[i].clone(), params(i))).collect();
        let got = run_batch(&mut engine, reqs, max_batch_size);
        let (want, what) = if stop_early { (&early, format!("early stops {early_lens:?}")) } else { (&full, "full length".into()) };
        assert_same(&got, want, &format!("batch of {max_batch_size}, {what}"));
    }
}

/// Joins as others leave: a batch of 3 over 8 sequences, with the batch also bounded by
/// `max_batch_tokens`, on a tiny model with sampling (seeded per sequence).
#[test]
fn continuous_batching_sampled_equals_solo_tiny() {
    for arch in ["llama_tied", "gemma3"] {
        let net = tiny(arch);
        let vocab = net.spec().vocab_size;
        let make = |i: usize| {
            let prompt = tokens(100 + i as u64, 2 + 5 * i, vocab);
            SequenceRequest::new(prompt, sampled(7 + i as u64, 6 + 3 * i))
        };
        let alone: Vec<Vec<u32>> = (0..8).map(|i| solo(&net, make(i)).tokens).collect();
        for (i, t) in alone.iter().enumerate() {
            assert_eq!(t.len(), 6 + 3 * i);
        }
        for config in [unlimited(8), unlimited(3), runtime::engine::EngineConfig { max_batch_size: 8, max_batch_tokens: 100 }] {
            let mut engine = Engine::new(&net, config.clone());
            let got = run_batch(&mut engine, (0..8).map(make).collect(), config.max_batch_size);
            for (i, out) in got.iter().enumerate() {
                assert_eq!(out.tokens, alone[i], "{arch} {config:?}: sequence {i}");
            }
        }
    }
}

/// Sequences that are added while others are running (not all queued up front).
#[test]
fn late_arrivals_equal_solo() {
    let net = tiny("qwen3");
    let vocab = net.spec().vocab_size;
    let make = |i: u64| SequenceRequest::new(tokens(i, 3 + 4 * i as usize, vocab), greedy(12));
    let alone: Vec<Vec<u32>> = (0..4).map(|i| solo(&net, make(i)).tokens).collect();
    let mut engine = Engine::new(&net, unlimited(8));
    let mut outputs = std::collections::HashMap::new();
    let mut ids = Vec::new();
    for step in 0..100 {
        if step % 3 == 0 && ids.len() < 4 {
            ids.push(engine.add(make(ids.len() as u64)).expect("valid"));
        }
        if !engine.has_work() && ids.len() == 4 {
            break;
        }
        for event in engine.step() {
            if let EngineEvent::Finished { id, output } = event {
                outputs.insert(id, output.tokens);
            }
        }
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(outputs.get(id), Some(&alone[i]), "late arrival {i}");
    }
}

/// Phi3 with long-context rope (original context 8): rows before and past the switch share a
/// batch, and rows cross it (and are recomputed) at different steps.
#[test]
fn batched_equals_solo_across_longrope_switch() {
    let net = tiny("phi3_long");
    let vocab = net.spec().vocab_size;
    let lens = [2usize, 4, 6, 11];
    let make = |i: usize| SequenceRequest::new(tokens(50 + i as u64, lens[i], vocab), greedy(9));
    let alone: Vec<Vec<u32>> = (0..lens.len()).map(|i| solo(&net, make(i)).tokens).collect();
    for max_batch_size in [4, 2] {
        let mut engine = Engine::new(&net, unlimited(max_batch_size));
        let got = run_batch(&mut engine, (0..lens.len()).map(make).collect(), max_batch_size);
        for (i, out) in got.iter().enumerate() {
            assert_eq!(out.tokens, alone[i], "phi3_long batch {max_batch_size}: sequence {i} (prompt {})", lens[i]);
        }
    }
}

fn cancel_case(net: &Transformer) {
    let vocab = net.spec().vocab_size;
    let make = |i: u64| SequenceRequest::new(tokens(900 + i, 3 + 3 * i as usize, vocab), greedy(16));
    let alone: Vec<Vec<u32>> = (0..5).map(|i| solo(net, make(i)).tokens).collect();
    let mut engine = Engine::new(net, unlimited(3));
    let ids: Vec<_> = (0..5).map(|i| engine.add(make(i)).expect("valid")).collect();
    let mut streamed: Seen = Default::default();
    let mut outputs: Seen = Default::default();
    type Seen = std::collections::HashMap<u64, Vec<u32>>;
    fn record(events: Vec<EngineEvent>, streamed: &mut Seen, outputs: &mut Seen) {
        for event in events {
            match event {
                EngineEvent::Token { id, token } => streamed.entry(id).or_default().push(token),
                EngineEvent::Finished { id, output } => {
                    outputs.insert(id, output.tokens);
                }
            }
        }
    }
    record(engine.step(), &mut streamed, &mut outputs);
    assert_eq!((engine.num_active(), engine.num_waiting()), (3, 2));
    // A waiting sequence.
    assert!(engine.cancel(ids[4]));
    assert_eq!(engine.num_waiting(), 1);
    for _ in 0..4 {
        record(engine.step(), &mut streamed, &mut outputs);
    }
    // A running one, mid-generation (the middle row of the batch).
    assert_eq!(engine.num_active(), 3);
    assert!(engine.cancel(ids[1]));
    assert_eq!(engine.num_active(), 2);
    assert!(!engine.cancel(ids[1]), "cancelling twice");
    assert!(!engine.cancel(12345), "unknown id");
    let cancelled_tokens = streamed[&ids[1]].len();
    assert!(cancelled_tokens > 1 && cancelled_tokens < 16);
    assert_eq!(streamed[&ids[1]][..], alone[1][..cancelled_tokens]);
    while engine.has_work() {
        record(engine.step(), &mut streamed, &mut outputs);
    }
    assert!(!engine.has_work());
    assert_eq!((engine.num_active(), engine.num_waiting()), (0, 0));
    assert_eq!(streamed[&ids[1]].len(), cancelled_tokens, "no tokens after cancel");
    assert!(!streamed.contains_key(&ids[4]) && !outputs.contains_key(&ids[4]) && !outputs.contains_key(&ids[1]));
    for i in [0, 2, 3] {
        assert_eq!(outputs.get(&ids[i]), Some(&alone[i]), "sequence {i} after a cancel");
    }
    assert!(!engine.cancel(ids[0]), "finished sequences cannot be cancelled");
    // The engine is still usable.
    let id = engine.add(make(2)).expect("valid");
    let done = engine.run_to_completion();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].0, &done[0].1.tokens), (id, &alone[2]));
}

#[test]
fn cancel_mid_generation() {
    cancel_case(&tiny("llama_tied"));
    cancel_case(&tiny("gemma3"));
}

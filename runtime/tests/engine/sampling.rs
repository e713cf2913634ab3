//! Seeded sampling and request validation.
use rand::SeedableRng;
use runtime::engine::{CapturePoint, CaptureSpec, Engine, EngineConfig, SequenceRequest};
use runtime::generate::{pick_token, GenerateError, SamplingParams};
use tch::Tensor;

use super::{greedy, run_batch, sampled, smol, solo, tiny, tokens, unlimited};

#[test]
fn same_seed_same_tokens_alone_and_batched() {
    let net = tiny("llama_tied");
    let vocab = net.spec().vocab_size;
    let prompt = tokens(1, 7, vocab);
    let run = |seed: u64| solo(&net, SequenceRequest::new(prompt.clone(), sampled(seed, 24))).tokens;
    let first = run(42);
    assert_eq!(first.len(), 24);
    assert_eq!(run(42), first, "same seed twice");
    // Batched with other sampled sequences (other seeds, other lengths), and twice the same
    // request in one batch.
    let mut engine = Engine::new(&net, unlimited(8));
    let mut reqs = vec![SequenceRequest::new(tokens(2, 12, vocab), sampled(1, 30))];
    reqs.push(SequenceRequest::new(prompt.clone(), sampled(42, 24)));
    reqs.push(SequenceRequest::new(tokens(3, 2, vocab), sampled(2, 10)));
    reqs.push(SequenceRequest::new(prompt.clone(), sampled(42, 24)));
    let got = run_batch(&mut engine, reqs, 8);
    assert_eq!(got[1].tokens, first, "batched vs alone");
    assert_eq!(got[3].tokens, first, "second copy in the same batch");

    // Different seeds: for this prompt and these seeds the sampled continuations all differ
    // (checked; with 24 tokens at temperature 0.8 over top-20/top-0.9 a collision would need
    // every one of 24 draws to agree).
    let others: Vec<Vec<u32>> = [43u64, 44, 1000].iter().map(|&s| run(s)).collect();
    for (s, o) in others.iter().enumerate() {
        assert_ne!(o, &first, "seed #{s} repeats seed 42");
    }
    assert_ne!(others[0], others[1]);
    // Sampling is not greedy here.
    let g = solo(&net, SequenceRequest::new(prompt.clone(), greedy(24))).tokens;
    assert_ne!(first, g);
}

#[test]
fn sampled_batched_equals_solo_smollm2() {
    let model = smol();
    let net = &model.network;
    let prompts: Vec<Vec<u32>> = ["Tell me a story about a dragon.", "Roses are red,", "Question: what is 2 + 2? Answer:"]
        .iter()
        .map(|t| model.tokenizer.encode(t, false).expect("encode"))
        .collect();
    let n = prompts.len();
    let params = |i: usize| sampled(10 + i as u64, 12);
    let alone: Vec<Vec<u32>> = (0..n).map(|i| solo(net, SequenceRequest::new(prompts[i].clone(), params(i))).tokens).collect();
    let mut engine = Engine::new(net, unlimited(n));
    let got = run_batch(&mut engine, (0..n).map(|i| SequenceRequest::new(prompts[i].clone(), params(i))).collect(), n);
    for i in 0..n {
        assert_eq!(got[i].tokens, alone[i], "sampled sequence {i}");
    }
    // Sampling, not greedy (for this seed the story leaves the greedy path).
    assert_ne!(alone[0], solo(net, SequenceRequest::new(prompts[0].clone(), greedy(12))).tokens);
}

#[test]
fn top_k_1_and_tiny_top_p_are_greedy() {
    for arch in ["llama", "gemma3"] {
        let net = tiny(arch);
        let prompt = tokens(5, 6, net.spec().vocab_size);
        let g = solo(&net, SequenceRequest::new(prompt.clone(), greedy(20))).tokens;
        for seed in [0, 1, 2] {
            let k1 = SamplingParams { temperature: 0.8, top_k: 1, seed, max_new_tokens: 20, ..Default::default() };
            assert_eq!(solo(&net, SequenceRequest::new(prompt.clone(), k1)).tokens, g, "{arch}: top_k=1");
            let p = SamplingParams { temperature: 1.5, top_p: 1e-6, seed, max_new_tokens: 20, ..Default::default() };
            assert_eq!(solo(&net, SequenceRequest::new(prompt.clone(), p)).tokens, g, "{arch}: top_p=1e-6");
        }
    }
}

/// `pick_token` draws from the renormalized top-k / top-p distribution.
#[test]
fn pick_token_distribution() {
    super::one_thread();
    let logits = Tensor::from_slice(&[2.0f32, 1.0, 0.5, 0.0, -1.0]);
    let softmax = |xs: &[f64]| {
        let z: f64 = xs.iter().map(|x| x.exp()).sum();
        xs.iter().map(|x| x.exp() / z).collect::<Vec<_>>()
    };
    let draws = 20_000;
    let freq = |params: &SamplingParams| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut counts = [0usize; 5];
        for _ in 0..draws {
            counts[pick_token(&logits, params, &mut rng) as usize] += 1;
        }
        counts.map(|c| c as f64 / draws as f64)
    };
    let all = freq(&SamplingParams { temperature: 1.0, ..Default::default() });
    for (f, p) in all.iter().zip(softmax(&[2.0, 1.0, 0.5, 0.0, -1.0])) {
        assert!((f - p).abs() < 0.015, "full softmax: {all:?}");
    }
    let hot = freq(&SamplingParams { temperature: 0.5, top_k: 2, ..Default::default() });
    let want = softmax(&[4.0, 2.0]);
    assert!((hot[0] - want[0]).abs() < 0.015 && (hot[1] - want[1]).abs() < 0.015 && hot[2..].iter().all(|&f| f == 0.0), "top_k 2: {hot:?}");
    // Probabilities 0.56, 0.21, 0.13, ...: top_p 0.7 keeps the first two (0.77 >= 0.7).
    let p = freq(&SamplingParams { temperature: 1.0, top_p: 0.7, ..Default::default() });
    let want = softmax(&[2.0, 1.0]);
    assert!((p[0] - want[0]).abs() < 0.015 && p[2..].iter().all(|&f| f == 0.0), "top_p 0.7: {p:?}");
}

/// Top-p over a large vocabulary (the partial-sort path when the nucleus is small, the full sort
/// when it is not) draws exactly the token that the definition gives for the same random number:
/// softmax over the whole vocabulary, sorted descending, the shortest prefix reaching top p,
/// renormalized, inverse CDF.
#[test]
fn top_p_over_a_large_vocabulary_follows_the_definition() {
    use rand::Rng;
    super::one_thread();
    // (token, nucleus size) by the definition, in f64.
    let reference = |logits: &[f64], top_p: f64, u: f64| -> (u32, usize) {
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let probs: Vec<f64> = order.iter().map(|&i| (logits[i] - max).exp() / z).collect();
        let mut mass = 0.0;
        let keep = probs.iter().position(|p| { mass += p; mass >= top_p }).map_or(probs.len(), |i| i + 1);
        let mut target = u * probs[..keep].iter().sum::<f64>();
        for (p, &i) in probs[..keep].iter().zip(&order) {
            target -= p;
            if target <= 0.0 {
                return (i as u32, keep);
            }
        }
        (order[keep - 1] as u32, keep)
    };
    let mut gen = rand::rngs::StdRng::seed_from_u64(7);
    // Peaked logits (a nucleus of a few tokens: the probe) and nearly flat ones (thousands: the
    // full sort); random values, so that no two tie.
    for (spread, top_p, small_nucleus) in [(40.0f64, 0.95, true), (40.0, 0.5, true), (12.0, 0.95, false), (0.15, 0.9, false)] {
        for seed in 0..40u64 {
            let logits: Vec<f32> = (0..5000).map(|_| (gen.random::<f64>() * spread) as f32).collect();
            let params = SamplingParams { temperature: 1.0, top_p, seed, ..Default::default() };
            let got = pick_token(&Tensor::from_slice(&logits), &params, &mut rand::rngs::StdRng::seed_from_u64(seed));
            let u = rand::rngs::StdRng::seed_from_u64(seed).random::<f64>();
            let wide: Vec<f64> = logits.iter().map(|&l| f64::from(l)).collect();
            let (want, keep) = reference(&wide, top_p, u);
            assert_eq!(got, want, "spread {spread}, top_p {top_p}, seed {seed}");
            assert_eq!(keep <= 512, small_nucleus, "spread {spread}: nucleus of {keep} tokens");
        }
    }
}

#[test]
fn invalid_requests_are_refused() {
    let net = tiny("llama_tied");
    let spec = net.spec().clone();
    let ok = tokens(9, 5, spec.vocab_size);
    let mut engine = Engine::new(&net, EngineConfig { max_batch_size: 4, max_batch_tokens: 40 });
    let bad_param = |p: SamplingParams| SequenceRequest::new(ok.clone(), p);
    let cases: Vec<(&str, SequenceRequest)> = vec![
        ("temperature < 0", bad_param(SamplingParams { temperature: -0.1, ..greedy(4) })),
        ("temperature NaN", bad_param(SamplingParams { temperature: f64::NAN, ..greedy(4) })),
        ("top_p = 0", bad_param(SamplingParams { temperature: 1.0, top_p: 0.0, ..greedy(4) })),
        ("top_p > 1", bad_param(SamplingParams { temperature: 1.0, top_p: 1.5, ..greedy(4) })),
        ("top_p NaN", bad_param(SamplingParams { top_p: f64::NAN, ..greedy(4) })),
        ("max_new_tokens 0", bad_param(greedy(0))),
    ];
    for (what, req) in cases {
        match engine.add(req) {
            Err(GenerateError::BadParameter(_)) => {}
            other => panic!("{what}: expected BadParameter, got {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(engine.add(SequenceRequest::new(Vec::new(), greedy(4))).err(), Some(GenerateError::EmptyPrompt));
    let mut oov = ok.clone();
    oov[2] = spec.vocab_size as u32;
    assert_eq!(engine.add(SequenceRequest::new(oov, greedy(4))).err(), Some(GenerateError::TokenOutOfVocab { id: 512, vocab: 512 }));
    let huge = SequenceRequest::new(vec![u32::MAX], greedy(4));
    assert!(matches!(engine.add(huge), Err(GenerateError::TokenOutOfVocab { id: u32::MAX, .. })));
    // The context is max_position_embeddings = 128 positions: 5 + 123 fits the model (but not
    // the batch budget), 5 + 124 does not.
    assert_eq!(spec.max_position_embeddings, 128);
    assert_eq!(
        engine.add(SequenceRequest::new(ok.clone(), greedy(124))).err(),
        Some(GenerateError::ContextOverflow { prompt: 5, max_new: 124, context: 128 })
    );
    assert_eq!(
        engine.add(SequenceRequest::new(ok.clone(), greedy(123))).err(),
        Some(GenerateError::OverBatchBudget { needed: 128, limit: 40 })
    );
    assert_eq!(engine.add(SequenceRequest::new(ok.clone(), greedy(36))).err(), Some(GenerateError::OverBatchBudget { needed: 41, limit: 40 }));
    // Capture of a layer that does not exist (0..=L valid).
    let mut req = SequenceRequest::new(ok.clone(), greedy(4));
    req.capture = Some(CaptureSpec { layers: vec![0, spec.num_layers as usize + 1], points: vec![CapturePoint::LastPromptToken] });
    assert!(matches!(engine.add(req), Err(GenerateError::BadCapture(_))));
    let mut req = SequenceRequest::new(ok.clone(), greedy(4));
    req.capture = Some(CaptureSpec { layers: vec![], points: vec![CapturePoint::LastPromptToken] });
    assert!(matches!(engine.add(req), Err(GenerateError::BadCapture(_))));

    // Nothing was queued, and the engine still runs a valid request (exactly at the budget).
    assert!(!engine.has_work());
    assert_eq!(engine.num_waiting(), 0);
    let id = engine.add(SequenceRequest::new(ok.clone(), greedy(35))).expect("fits exactly");
    let done = engine.run_to_completion();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].0, done[0].1.tokens.len()), (id, 35));

    // The budget also bounds what runs at once: two requests of 25 positions never share a
    // 40-position batch, but both complete, with their solo tokens.
    let a = SequenceRequest::new(tokens(10, 5, spec.vocab_size), greedy(20));
    let b = SequenceRequest::new(tokens(11, 5, spec.vocab_size), greedy(20));
    let (sa, sb) = (
        solo(&net, SequenceRequest::new(a.prompt.clone(), greedy(20))).tokens,
        solo(&net, SequenceRequest::new(b.prompt.clone(), greedy(20))).tokens,
    );
    let got = run_batch(&mut engine, vec![a, b], 1);
    assert_eq!((&got[0].tokens, &got[1].tokens), (&sa, &sb));
}

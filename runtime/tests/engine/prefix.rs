//! Prefix injection: a prefix of the model's own input embeddings, or of the keys and values a
//! forward of some tokens leaves in the cache, behaves exactly like those tokens in the prompt.
use runtime::engine::{CapturePoint, CaptureSpec, Engine, Prefix, SequenceOutput, SequenceRequest};
use runtime::generate::GenerateError;
use runtime::models::Transformer;
use tch::{Device, Kind, Tensor};

use super::{greedy, ids_tensor, max_diff, run_batch, solo, tiny, tokens, unlimited, TOLERANCE};

fn all_layers(net: &Transformer) -> CaptureSpec {
    CaptureSpec { layers: (0..=net.spec().num_layers as usize).collect(), points: vec![CapturePoint::LastPromptToken, CapturePoint::MeanGenerated] }
}

fn request(prompt: Vec<u32>, prefix: Option<Prefix>, capture: CaptureSpec) -> SequenceRequest {
    SequenceRequest { prefix, capture: Some(capture), ..SequenceRequest::new(prompt, greedy(10)) }
}

/// `[m, hidden]`: the input embeddings (scaled as the model does) of `ids`.
fn embeddings(net: &Transformer, ids: &[u32]) -> Tensor {
    let _guard = tch::no_grad_guard();
    net.embed(&ids_tensor(ids)).squeeze_dim(0)
}

/// Per layer `[kv_heads, m, head_dim]`: the keys and values a forward of `ids` caches.
fn key_values(net: &Transformer, ids: &[u32]) -> Vec<(Tensor, Tensor)> {
    let _guard = tch::no_grad_guard();
    let mut cache = net.new_cache();
    let positions = Tensor::arange(ids.len() as i64, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let _ = net.forward_embeds(&net.embed(&ids_tensor(ids)), &positions, &mut cache, &[]);
    (0..net.spec().num_layers as usize)
        .map(|l| {
            let (k, v) = cache.layer(l).expect("layer cached");
            (k.squeeze_dim(0), v.squeeze_dim(0))
        })
        .collect()
}

/// Same tokens, same states at the last prompt token (hence the same first-step logits), and
/// the same mean state over the generated tokens.
fn assert_equivalent(net: &Transformer, what: &str, got: &SequenceOutput, want: &SequenceOutput) {
    assert_eq!(got.tokens, want.tokens, "{what}: tokens");
    for ((p, g), (_, w)) in got.hidden_states.iter().zip(&want.hidden_states) {
        let d = max_diff(g, w);
        assert!(d < TOLERANCE, "{what}: {p:?} states differ by {d}");
    }
    assert_eq!(got.hidden_states.len(), 2);
    let last = |o: &SequenceOutput| net.logits(&o.hidden_states[0].1.get(-1));
    let d = max_diff(&last(got), &last(want));
    assert!(d < TOLERANCE, "{what}: first-step logits differ by {d}");
}

fn prefix_case(arch: &str) {
    let net = tiny(arch);
    let vocab = net.spec().vocab_size;
    let head = tokens(31, 4, vocab);
    let prompt = tokens(32, 5, vocab);
    let whole: Vec<u32> = head.iter().chain(&prompt).copied().collect();
    let spec = all_layers(&net);
    let plain = solo(&net, request(whole.clone(), None, spec.clone()));
    // The plain run's last-prompt states differ from a run of the prompt alone: the prefix matters.
    let bare = solo(&net, request(prompt.clone(), None, spec.clone()));
    assert!(max_diff(&plain.hidden_states[0].1.get(-1), &bare.hidden_states[0].1.get(-1)) > 1e-2);

    let emb = || Some(Prefix::Embeddings(embeddings(&net, &head)));
    let kv = || Some(Prefix::KeyValues(key_values(&net, &head)));
    assert_equivalent(&net, &format!("{arch}: embedding prefix"), &solo(&net, request(prompt.clone(), emb(), spec.clone())), &plain);
    assert_equivalent(&net, &format!("{arch}: key/value prefix"), &solo(&net, request(prompt.clone(), kv(), spec.clone())), &plain);
    // A prefix given in another dtype (f64) and one that requires grad work the same.
    let grad = embeddings(&net, &head).to_kind(Kind::Double).set_requires_grad(true);
    let out = solo(&net, request(prompt.clone(), Some(Prefix::Embeddings(grad)), spec.clone()));
    assert_equivalent(&net, &format!("{arch}: f64 prefix requiring grad"), &out, &plain);
    assert_eq!(out.prompt_tokens, prompt.len());

    // Batched: both kinds of prefix next to plain sequences of other lengths.
    let reqs = vec![
        request(tokens(40, 9, vocab), None, spec.clone()),
        request(prompt.clone(), emb(), spec.clone()),
        request(whole.clone(), None, spec.clone()),
        request(prompt.clone(), kv(), spec.clone()),
        request(tokens(41, 2, vocab), None, spec.clone()),
    ];
    for max_batch_size in [5, 2] {
        let mut engine = Engine::new(&net, unlimited(max_batch_size));
        let outs = run_batch(&mut engine, reqs_clone(&reqs), max_batch_size);
        for (i, what) in [(1, "embedding"), (2, "plain"), (3, "key/value")] {
            assert_equivalent(&net, &format!("{arch}: {what} prefix in a batch of {max_batch_size}"), &outs[i], &plain);
        }
        assert_eq!(outs[0].tokens, solo(&net, reqs_clone(&reqs[..1]).pop().expect("one")).tokens);
    }
}

/// Requests are not `Clone` (prefix tensors); this copies them, tensors shallowly.
fn reqs_clone(reqs: &[SequenceRequest]) -> Vec<SequenceRequest> {
    reqs.iter()
        .map(|r| SequenceRequest {
            prefix: r.prefix.as_ref().map(|p| match p {
                Prefix::Embeddings(e) => Prefix::Embeddings(e.shallow_clone()),
                Prefix::KeyValues(kv) => Prefix::KeyValues(kv.iter().map(|(k, v)| (k.shallow_clone(), v.shallow_clone())).collect()),
            }),
            capture: r.capture.clone(),
            ..SequenceRequest::new(r.prompt.clone(), r.params.clone())
        })
        .collect()
}

/// llama_tied has no embedding scaling.
#[test]
fn prefix_equals_tokens_llama() {
    prefix_case("llama_tied");
}

/// gemma3 scales embeddings by sqrt(hidden) (`net.embed` includes it) and has sliding windows.
#[test]
fn prefix_equals_tokens_gemma3() {
    prefix_case("gemma3");
}

#[test]
fn prefix_equals_tokens_qwen3() {
    prefix_case("qwen3");
}

#[test]
fn bad_prefixes_are_refused() {
    let net = tiny("qwen3");
    let spec = net.spec().clone();
    let (h, kvh, hd, layers) = (spec.hidden_size, spec.num_kv_heads, spec.head_dim, spec.num_layers);
    let f = (Kind::Float, Device::Cpu);
    let good_kv = |m: i64| -> Vec<(Tensor, Tensor)> { (0..layers).map(|_| (Tensor::zeros([kvh, m, hd], f), Tensor::zeros([kvh, m, hd], f))).collect() };
    let mut nan_kv = good_kv(3);
    nan_kv[1].1 = Tensor::full([kvh, 3, hd], f64::NAN, f);
    let mut wrong_heads = good_kv(3);
    wrong_heads[0].0 = Tensor::zeros([kvh + 1, 3, hd], f);
    let mut mismatched = good_kv(3);
    mismatched[1].1 = Tensor::zeros([kvh, 2, hd], f);
    let mut flat = good_kv(3);
    flat[0].0 = Tensor::zeros([3], f);
    let inf = Tensor::zeros([2, h], f);
    let _ = inf.get(1).get(5).fill_(f64::INFINITY);
    let cases: Vec<(&str, Prefix)> = vec![
        ("embeddings [m, h+1]", Prefix::Embeddings(Tensor::zeros([3, h + 1], f))),
        ("embeddings [1, m, h]", Prefix::Embeddings(Tensor::zeros([1, 3, h], f))),
        ("embeddings [h]", Prefix::Embeddings(Tensor::zeros([h], f))),
        ("embeddings scalar", Prefix::Embeddings(Tensor::from(1.0f32))),
        ("embeddings [0, h]", Prefix::Embeddings(Tensor::zeros([0, h], f))),
        ("embeddings NaN", Prefix::Embeddings(Tensor::full([3, h], f64::NAN, f))),
        ("embeddings Inf", Prefix::Embeddings(inf)),
        ("embeddings int", Prefix::Embeddings(Tensor::zeros([3, h], (Kind::Int64, Device::Cpu)))),
        ("key/values: no layers", Prefix::KeyValues(Vec::new())),
        ("key/values: one layer too few", Prefix::KeyValues(good_kv(3)[1..].to_vec_shallow())),
        ("key/values: one layer too many", Prefix::KeyValues({
            let mut kv = good_kv(3);
            kv.push((Tensor::zeros([kvh, 3, hd], f), Tensor::zeros([kvh, 3, hd], f)));
            kv
        })),
        ("key/values: wrong heads", Prefix::KeyValues(wrong_heads)),
        ("key/values: k and v lengths differ", Prefix::KeyValues(mismatched)),
        ("key/values: 1-d keys", Prefix::KeyValues(flat)),
        ("key/values: batch dim", Prefix::KeyValues((0..layers).map(|_| (Tensor::zeros([1, kvh, 3, hd], f), Tensor::zeros([1, kvh, 3, hd], f))).collect())),
        ("key/values: empty", Prefix::KeyValues(good_kv(0))),
        ("key/values: NaN values", Prefix::KeyValues(nan_kv)),
    ];
    let mut engine = Engine::new(&net, unlimited(4));
    let prompt = tokens(3, 4, spec.vocab_size);
    for (what, prefix) in cases {
        let req = SequenceRequest { prefix: Some(prefix), ..SequenceRequest::new(prompt.clone(), greedy(4)) };
        match engine.add(req) {
            Err(GenerateError::BadPrefix(_)) => {}
            other => panic!("{what}: expected BadPrefix, got {:?}", other.map(|_| ())),
        }
    }
    assert!(!engine.has_work());
    // The prefix counts against the context: 100 prefix + 4 prompt + 24 new = 128 fits, 25 not.
    let long = || Some(Prefix::Embeddings(Tensor::zeros([100, h], f)));
    let over = SequenceRequest { prefix: long(), ..SequenceRequest::new(prompt.clone(), greedy(25)) };
    assert!(matches!(engine.add(over), Err(GenerateError::ContextOverflow { .. })));
    let fits = SequenceRequest { prefix: long(), ..SequenceRequest::new(prompt.clone(), greedy(24)) };
    engine.add(fits).expect("fits the context exactly");
    let done = engine.run_to_completion();
    assert_eq!(done[0].1.tokens.len(), 24);
}

trait ShallowVec {
    fn to_vec_shallow(&self) -> Vec<(Tensor, Tensor)>;
}

impl ShallowVec for [(Tensor, Tensor)] {
    fn to_vec_shallow(&self) -> Vec<(Tensor, Tensor)> {
        self.iter().map(|(k, v)| (k.shallow_clone(), v.shallow_clone())).collect()
    }
}

/// The frozen model that prefix adapters train through samples what the engine generates: a
/// prefix of the embeddings of some tokens continues like those tokens in the prompt, its
/// teacher-forced logits pick the same tokens, and an end-of-sequence id ends the continuation.
#[test]
fn the_frozen_model_samples_and_scores_continuations_like_the_engine() {
    use runtime::thought_model::FrozenModel;
    use thoughtcomm::{ContinuationSampling, LanguageModel};
    let net = tiny("llama");
    let vocab = net.spec().vocab_size;
    let (head, prompt) = (tokens(41, 3, vocab), tokens(42, 6, vocab));
    let whole: Vec<u32> = head.iter().chain(&prompt).copied().collect();
    let want = solo(&net, SequenceRequest::new(whole, greedy(6))).tokens;
    let greedy6 = ContinuationSampling { max_new_tokens: 6, temperature: 0.0, seed: 0 };
    let lm = FrozenModel::new(&net, vec![]);
    let prefix = embeddings(&net, &head);
    let got = lm.sample_continuation(Some(&prefix), &prompt, &greedy6).unwrap();
    assert_eq!(got, want, "prefix of embeddings vs the same tokens in the prompt");
    let forced: Vec<u32> = prompt.iter().chain(&got[..5]).copied().collect();
    let picks = Vec::<i64>::try_from(lm.forward_with_prefix(&prefix, &forced, 6).argmax(-1, false)).unwrap();
    assert_eq!(picks.iter().map(|&t| t as u32).collect::<Vec<_>>(), got, "teacher-forced argmax");
    let stopped = FrozenModel::new(&net, vec![got[1]]).sample_continuation(Some(&prefix), &prompt, &greedy6).unwrap();
    let end = got.iter().position(|&t| t == got[1]).map_or(got.len(), |i| i + 1);
    assert_eq!(stopped, got[..end], "ends at the first stop token, keeping it");
    // Sampling is seeded; a bad prefix is an error, not a panic.
    let warm = |seed| lm.sample_continuation(None, &prompt, &ContinuationSampling { temperature: 1.0, seed, ..greedy6 }).unwrap();
    assert_eq!(warm(3), warm(3));
    let err = lm.sample_continuation(Some(&Tensor::zeros([1, 3], (Kind::Float, Device::Cpu))), &prompt, &greedy6).unwrap_err();
    assert!(err.to_string().contains("prefix embeddings must have shape"), "{err}");
}

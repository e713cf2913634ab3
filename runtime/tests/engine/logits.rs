//! Batched logits: sequences prefilled separately, merged into one left-padded cache and decoded
//! together give the logits each gets alone, at every step, also after a row leaves.
use runtime::models::{KvCache, Transformer};
use tch::{Device, Kind, Tensor};

use runtime::loader::load_network_from_dir;

use super::{fixture_dir, full_forward, ids_tensor, max_diff, one_thread, tiny, tokens, TOLERANCE};

/// Prefill of `prompt` alone: its cache and last-position logits `[vocab]`.
fn prefill(net: &Transformer, prompt: &[u32]) -> (KvCache, Tensor) {
    let mut cache = net.new_cache();
    let positions = Tensor::arange(prompt.len() as i64, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let (hidden, _) = net.forward_embeds(&net.embed(&ids_tensor(prompt)), &positions, &mut cache, &[]);
    (cache, net.logits(&hidden.select(1, -1).squeeze_dim(0)))
}

/// Feeds one token per row at the given positions; logits `[B, vocab]`.
fn step(net: &Transformer, cache: &mut KvCache, ids: &[i64], positions: &[i64]) -> Tensor {
    let b = ids.len() as i64;
    let ids = Tensor::from_slice(ids).view([b, 1]);
    let positions = Tensor::from_slice(positions).view([b, 1]);
    let (hidden, _) = net.forward_embeds(&net.embed(&ids), &positions, cache, &[]);
    net.logits(&hidden.squeeze_dim(1))
}

/// Greedy decoding of one sequence alone: the logits before each of `steps + 1` tokens and the
/// tokens fed.
fn alone(net: &Transformer, prompt: &[u32], steps: usize) -> (Vec<Tensor>, Vec<i64>) {
    let (mut cache, mut logits) = prefill(net, prompt);
    let mut all = vec![logits.shallow_clone()];
    let mut fed = Vec::new();
    for s in 0..steps {
        let token = logits.argmax(-1, false).int64_value(&[]);
        fed.push(token);
        logits = step(net, &mut cache, &[token], &[(prompt.len() + s) as i64]).get(0);
        all.push(logits.shallow_clone());
    }
    (all, fed)
}

fn check_batched_logits(arch: &str, lens: &[usize], steps: usize) {
    let _guard = tch::no_grad_guard();
    let net = tiny(arch);
    let vocab = net.spec().vocab_size;
    let prompts: Vec<Vec<u32>> = lens.iter().enumerate().map(|(i, &l)| tokens(300 + i as u64, l, vocab)).collect();
    let solo: Vec<(Vec<Tensor>, Vec<i64>)> = prompts.iter().map(|p| alone(&net, p, steps)).collect();

    // The solo decode itself agrees with a plain full forward of prompt + fed tokens.
    for (p, (logits, fed)) in prompts.iter().zip(&solo) {
        let all: Vec<u32> = p.iter().copied().chain(fed.iter().map(|&t| t as u32)).collect();
        let (_, full, _) = full_forward(&net, &all, &[]);
        let tail = full.narrow(0, p.len() as i64 - 1, steps as i64 + 1);
        let d = max_diff(&Tensor::stack(logits, 0), &tail);
        assert!(d < TOLERANCE, "{arch}: incremental vs full forward differ by {d}");
    }

    // Separately prefilled caches merged into one left-padded batch.
    let (caches, first): (Vec<KvCache>, Vec<Tensor>) = prompts.iter().map(|p| prefill(&net, p)).unzip();
    let mut cache = KvCache::merge(caches);
    let longest = *lens.iter().max().expect("rows") as i64;
    assert_eq!((cache.batch_size(), cache.len()), (lens.len() as i64, longest), "{arch}: merged cache shape");
    let max_pos = Vec::<i64>::try_from(cache.max_positions().expect("positions")).expect("i64");
    assert_eq!(max_pos, lens.iter().map(|&l| l as i64 - 1).collect::<Vec<_>>());
    for (i, f) in first.iter().enumerate() {
        assert!(max_diff(f, &solo[i].0[0]) < TOLERANCE);
    }
    let mut rows: Vec<usize> = (0..lens.len()).collect();
    let mut worst = 0f64;
    for s in 0..steps {
        // Halfway, the longest row leaves (the rest keep their padding, trimmed where common).
        if s == steps / 2 {
            let longest_row = (0..rows.len()).max_by_key(|&r| lens[rows[r]]).expect("rows");
            let keep: Vec<i64> = (0..rows.len() as i64).filter(|&r| r != longest_row as i64).collect();
            cache = cache.select(&keep);
            rows.remove(longest_row);
            let remaining = rows.iter().map(|&r| lens[r]).max().expect("rows") + s;
            assert_eq!(cache.len(), remaining as i64, "{arch}: padding trimmed after the longest row left");
        }
        let ids: Vec<i64> = rows.iter().map(|&r| solo[r].1[s]).collect();
        let positions: Vec<i64> = rows.iter().map(|&r| (lens[r] + s) as i64).collect();
        let logits = step(&net, &mut cache, &ids, &positions);
        for (j, &r) in rows.iter().enumerate() {
            let d = max_diff(&logits.get(j as i64), &solo[r].0[s + 1]);
            worst = worst.max(d);
            assert!(d < TOLERANCE, "{arch}: row {r} (prompt {}) step {s}: batched logits differ by {d}", lens[r]);
        }
    }
    // The comparison is not vacuous: logits of different rows do differ.
    assert!(max_diff(&solo[0].0[steps], &solo[1].0[steps]) > 0.1);
    eprintln!("{arch}: worst batched-vs-solo logit difference {worst:e}");
}

/// One padded prefill of several prompts (padding at position -1) equals the solo prefills.
fn check_padded_prefill(arch: &str, lens: &[usize]) {
    let _guard = tch::no_grad_guard();
    let net = tiny(arch);
    let vocab = net.spec().vocab_size;
    let longest = *lens.iter().max().expect("rows");
    let mut ids = Vec::new();
    let mut positions = Vec::new();
    let prompts: Vec<Vec<u32>> = lens.iter().enumerate().map(|(i, &l)| tokens(700 + i as u64, l, vocab)).collect();
    for p in &prompts {
        let pad = longest - p.len();
        ids.extend(std::iter::repeat_n(0i64, pad).chain(p.iter().map(|&t| i64::from(t))));
        positions.extend((0..pad).map(|_| -1i64).chain(0..p.len() as i64));
    }
    let shape = [lens.len() as i64, longest as i64];
    let mut cache = net.new_cache();
    let (hidden, _) = net.forward_embeds(&net.embed(&Tensor::from_slice(&ids).view(shape)), &Tensor::from_slice(&positions).view(shape), &mut cache, &[]);
    let logits = net.logits(&hidden.select(1, -1));
    assert!(bool::try_from(logits.isfinite().all()).expect("bool"), "{arch}: padded prefill logits not finite");
    for (i, p) in prompts.iter().enumerate() {
        let d = max_diff(&logits.get(i as i64), &prefill(&net, p).1);
        assert!(d < TOLERANCE, "{arch}: padded prefill row {i} differs by {d}");
    }
    // And decoding on from that padded cache continues to agree.
    let fed: Vec<Vec<i64>> = prompts.iter().map(|p| alone(&net, p, 3).1).collect();
    for s in 0..3 {
        let ids: Vec<i64> = fed.iter().map(|f| f[s]).collect();
        let pos: Vec<i64> = lens.iter().map(|&l| (l + s) as i64).collect();
        let logits = step(&net, &mut cache, &ids, &pos);
        for (i, p) in prompts.iter().enumerate() {
            let (want, _) = alone(&net, p, s + 1);
            let d = max_diff(&logits.get(i as i64), &want[s + 1]);
            assert!(d < TOLERANCE, "{arch}: padded-prefill batch row {i} step {s} differs by {d}");
        }
    }
}

#[test]
fn batched_logits_equal_solo_llama() {
    check_batched_logits("llama", &[3, 11, 6, 1], 10);
    check_batched_logits("qwen3", &[5, 13, 2], 8);
}

/// Sliding window 4 on five of six gemma3 layers: padding (up to 8 columns) longer than the
/// window, and windows that slide past the left padding during decoding.
#[test]
fn batched_logits_equal_solo_gemma3_sliding_window() {
    check_batched_logits("gemma3", &[2, 5, 10, 3], 10);
}

#[test]
fn padded_prefill_equals_solo() {
    check_padded_prefill("llama", &[2, 9, 5]);
    check_padded_prefill("gemma3", &[1, 9, 6]);
}

/// A model loaded with 2 intra-op threads splits a batch-1 step's projections (biases included:
/// qwen2; fused checkpoints: phi3; tied heads: llama_tied) by output rows over 2 threads: every
/// logit of a greedy decode equals the unsplit model's, and the batched path is unchanged.
#[test]
fn row_split_decode_equals_unsplit() {
    let _guard = tch::no_grad_guard();
    for arch in ["llama", "llama_tied", "qwen2", "qwen3", "gemma3", "phi3"] {
        let plain = tiny(arch);
        tch::set_num_threads(2);
        let split = load_network_from_dir(&fixture_dir(arch), Device::Cpu, Kind::Float).unwrap();
        one_thread();
        assert_eq!((plain.row_split_threads(), split.row_split_threads()), (1, 2), "{arch}");
        let prompt = tokens(77, 9, plain.spec().vocab_size);
        let (want, want_fed) = alone(&plain, &prompt, 6);
        let (got, got_fed) = alone(&split, &prompt, 6);
        assert_eq!(got_fed, want_fed, "{arch}: greedy tokens");
        for (s, (g, w)) in got.iter().zip(&want).enumerate() {
            let d = max_diff(g, w);
            assert!(d < 1e-5, "{arch}: step {s} logits differ by {d}");
        }
        // Three rows decoded together (split too), after a batched prefill (not split).
        let rows: Vec<Vec<u32>> = (0..3).map(|i| tokens(80 + i, 9, plain.spec().vocab_size)).collect();
        let decode = |net: &Transformer| {
            let ids: Vec<u32> = rows.concat();
            let mut cache = net.new_cache();
            let positions = Tensor::arange(9, (Kind::Int64, Device::Cpu)).unsqueeze(0).repeat([3, 1]);
            let (hidden, _) = net.forward_embeds(&net.embed(&ids_tensor(&ids).view([3, 9])), &positions, &mut cache, &[]);
            let next: Vec<i64> = Vec::try_from(net.logits(&hidden.select(1, -1)).argmax(-1, false)).unwrap();
            step(net, &mut cache, &next, &[9, 9, 9])
        };
        let d = max_diff(&decode(&split), &decode(&plain));
        assert!(d < 1e-5, "{arch}: 3-row step logits differ by {d}");
    }
}

//! Hidden-state capture: the engine's states equal those of a plain full forward (and
//! transformers' `hidden_states`), alone and batched with sequences that capture nothing.
use runtime::engine::{CapturePoint, CaptureSpec, Engine, SequenceOutput, SequenceRequest};
use runtime::generate::SamplingParams;
use runtime::models::Transformer;
use tch::{Device, Kind, Tensor};

use super::{full_forward, greedy, max_diff, run_batch, solo, tiny, tiny_reference, tokens, unlimited, TOLERANCE};

use CapturePoint::{LastGeneratedToken, LastPromptToken, MeanGenerated};

fn state(out: &SequenceOutput, point: CapturePoint) -> &Tensor {
    let found: Vec<&Tensor> = out.hidden_states.iter().filter(|(p, _)| *p == point).map(|(_, t)| t).collect();
    assert_eq!(found.len(), 1, "{point:?} captured {} times", found.len());
    found[0]
}

/// Checks every captured point of `out` against a full forward of prompt + generated tokens.
fn check_against_full_forward(net: &Transformer, what: &str, prompt: &[u32], spec: &CaptureSpec, out: &SequenceOutput) {
    assert_eq!(out.hidden_states.len(), spec.points.len(), "{what}: number of captured points");
    let points: Vec<CapturePoint> = out.hidden_states.iter().map(|(p, _)| *p).collect();
    assert_eq!(points, spec.points, "{what}: points in request order");
    let all: Vec<u32> = prompt.iter().chain(&out.tokens).copied().collect();
    let (k, n) = (prompt.len() as i64, out.tokens.len() as i64);
    let (_, _, states) = full_forward(net, &all, &spec.layers);
    let at = |pos: i64| Tensor::stack(&states.iter().map(|s| s.get(pos)).collect::<Vec<_>>(), 0);
    let mean = Tensor::stack(&states.iter().map(|s| s.narrow(0, k, n).mean_dim(0, false, Kind::Float)).collect::<Vec<_>>(), 0);
    let hidden = net.spec().hidden_size;
    for (point, got) in &out.hidden_states {
        assert_eq!(got.size(), [spec.layers.len() as i64, hidden], "{what}: {point:?} shape");
        assert_eq!((got.kind(), got.device()), (Kind::Float, Device::Cpu), "{what}: {point:?} dtype/device");
        let want = match point {
            LastPromptToken => at(k - 1),
            LastGeneratedToken => at(k + n - 1),
            MeanGenerated => mean.shallow_clone(),
        };
        let d = max_diff(got, &want);
        assert!(d < TOLERANCE, "{what}: {point:?} of layers {:?} differs from the full forward by {d}", spec.layers);
        // Not vacuous: the point is distinguishable from the neighbouring position.
        let other = if *point == LastPromptToken { at(k) } else { at(k - 1) };
        assert!(max_diff(got, &other) > 1e-2, "{what}: {point:?} looks like another position");
    }
}

fn capture_case(arch: &str) {
    let net = tiny(arch);
    let r = tiny_reference(arch);
    let big_l = net.spec().num_layers as usize;
    let mid = big_l / 2;
    let vocab = net.spec().vocab_size;
    let row = |b: i64, k: i64| -> Vec<u32> {
        Vec::<i64>::try_from(r["input_ids"].get(b).narrow(0, 0, k)).expect("ids").iter().map(|&t| t as u32).collect()
    };
    let spec_a = CaptureSpec { layers: vec![0, mid, big_l], points: vec![LastPromptToken, LastGeneratedToken, MeanGenerated] };
    let spec_b = CaptureSpec { layers: vec![big_l, 1], points: vec![MeanGenerated, LastPromptToken] };
    let spec_e = CaptureSpec { layers: vec![mid], points: vec![LastGeneratedToken, LastPromptToken] };
    let spec_f = CaptureSpec { layers: vec![0, big_l], points: vec![LastGeneratedToken, MeanGenerated] };
    let prompt_a = row(0, 7);
    let prompt_b = row(1, 10);
    let prompt_e = row(1, 4);
    let prompt_f = tokens(77, 5, vocab);
    // F stops on a token of its own greedy output (in the middle of the batch's life).
    let f_solo = solo(&net, SequenceRequest::new(prompt_f.clone(), greedy(12))).tokens;
    let f_params = SamplingParams { stop_token_ids: vec![f_solo[4]], ..greedy(12) };
    let make = |which: char| -> SequenceRequest {
        let (prompt, params, spec) = match which {
            'a' => (prompt_a.clone(), greedy(6), Some(spec_a.clone())),
            'b' => (prompt_b.clone(), greedy(8), Some(spec_b.clone())),
            'c' => (tokens(5, 11, vocab), greedy(9), None),
            'd' => (tokens(6, 2, vocab), greedy(3), None),
            'e' => (prompt_e.clone(), greedy(1), Some(spec_e.clone())),
            'f' => (prompt_f.clone(), f_params.clone(), Some(spec_f.clone())),
            _ => unreachable!(),
        };
        SequenceRequest { capture: spec, ..SequenceRequest::new(prompt, params) }
    };

    // Against transformers: the state at the last prompt token of a k-token prompt is the
    // state at position k-1 of the reference's full forward (causal attention).
    let reference = &r["hidden_states"];
    let alone_a = solo(&net, make('a'));
    for (j, &l) in spec_a.layers.iter().enumerate() {
        let d = max_diff(&state(&alone_a, LastPromptToken).get(j as i64), &reference.get(l as i64).get(0).get(6));
        assert!(d < TOLERANCE, "{arch}: layer {l} at the last prompt token differs from transformers by {d}");
    }
    let alone_b = solo(&net, make('b'));
    for (j, &l) in spec_b.layers.iter().enumerate() {
        let d = max_diff(&state(&alone_b, LastPromptToken).get(j as i64), &reference.get(l as i64).get(1).get(9));
        assert!(d < TOLERANCE, "{arch}: row 1 layer {l} differs from transformers by {d}");
    }
    check_against_full_forward(&net, &format!("{arch} a alone"), &prompt_a, &spec_a, &alone_a);
    check_against_full_forward(&net, &format!("{arch} b alone"), &prompt_b, &spec_b, &alone_b);
    let alone_e = solo(&net, make('e'));
    assert_eq!(alone_e.tokens.len(), 1);
    check_against_full_forward(&net, &format!("{arch} e alone (one token)"), &prompt_e, &spec_e, &alone_e);
    let alone_f = solo(&net, make('f'));
    assert_eq!(alone_f.tokens, f_solo[..f_solo.iter().position(|&t| t == f_solo[4]).expect("occurs") + 1]);
    check_against_full_forward(&net, &format!("{arch} f alone (stop id)"), &prompt_f, &spec_f, &alone_f);

    // Batched: with sequences that capture nothing and with each other (different layers).
    for max_batch_size in [6, 2] {
        let order = ['c', 'a', 'd', 'b', 'e', 'f'];
        let mut engine = Engine::new(&net, unlimited(max_batch_size));
        let outs = run_batch(&mut engine, order.iter().map(|&w| make(w)).collect(), max_batch_size);
        let what = |w: char| format!("{arch} {w} in a batch of {max_batch_size}");
        for (w, out) in order.iter().zip(&outs) {
            match w {
                'c' | 'd' => assert!(out.hidden_states.is_empty(), "{}: captured without asking", what(*w)),
                'a' => check_against_full_forward(&net, &what('a'), &prompt_a, &spec_a, out),
                'b' => check_against_full_forward(&net, &what('b'), &prompt_b, &spec_b, out),
                'e' => check_against_full_forward(&net, &what('e'), &prompt_e, &spec_e, out),
                'f' => check_against_full_forward(&net, &what('f'), &prompt_f, &spec_f, out),
                _ => unreachable!(),
            }
        }
        assert_eq!(outs[1].tokens, alone_a.tokens);
        assert_eq!(outs[5].tokens, alone_f.tokens);
        for p in [LastPromptToken, LastGeneratedToken, MeanGenerated] {
            let d = max_diff(state(&outs[1], p), state(&alone_a, p));
            assert!(d < TOLERANCE, "{}: {p:?} batched vs alone differ by {d}", what('a'));
        }
    }
}

#[test]
fn capture_matches_full_forward_and_transformers_llama() {
    capture_case("llama");
}

#[test]
fn capture_matches_full_forward_and_transformers_gemma3() {
    capture_case("gemma3");
}

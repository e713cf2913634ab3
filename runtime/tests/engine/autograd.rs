//! Gradients flow from a language-modelling loss into a learned embedding prefix (and not into
//! the frozen weights), agree with finite differences, and SGD on the prefix lowers the loss.
use runtime::loader::load_network_from_dir;
use runtime::models::Transformer;
use tch::{Device, Kind, Tensor};

use super::{fixture_dir, ids_tensor, one_thread, tokens};

const M: i64 = 3;

/// Mean cross-entropy of predicting each prompt token from the positions before it, with the
/// prefix `p` `[M, hidden]` in front. Computed in f64 end to end: llama_tied's output layer is
/// its (unscaled) input embedding, so the logits are `hidden · Eᵀ` (`Transformer::logits` would
/// round to f32).
fn loss(net: &Transformer, p: &Tensor, prompt: &[u32], head: &Tensor) -> Tensor {
    let k = prompt.len() as i64;
    let x = Tensor::cat(&[p.unsqueeze(0), net.embed(&ids_tensor(prompt))], 1);
    let positions = Tensor::arange(M + k, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let mut cache = net.new_cache();
    let (hidden, _) = net.forward_embeds(&x, &positions, &mut cache, &[]);
    let logits = hidden.squeeze_dim(0).narrow(0, M - 1, k).matmul(&head.tr());
    let targets = ids_tensor(prompt).squeeze_dim(0);
    logits.log_softmax(-1, Kind::Double).nll_loss(&targets)
}

#[test]
fn prefix_gradients_match_finite_differences() {
    one_thread();
    let net = load_network_from_dir(&fixture_dir("llama_tied"), Device::Cpu, Kind::Double).expect("llama_tied in f64");
    assert_eq!(net.kind(), Kind::Double);
    assert!(net.spec().tie_embeddings && net.spec().embed_scale.is_none());
    let (vocab, h) = (net.spec().vocab_size, net.spec().hidden_size);
    let prompt = tokens(61, 8, vocab);
    let head = net.embed(&Tensor::arange(vocab, (Kind::Int64, Device::Cpu)));

    // Frozen weights: outside no_grad, a forward that starts from no trainable tensor builds no
    // graph (any weight requiring grad would make the output require it).
    assert!(!head.requires_grad());
    let frozen = loss(&net, &net.embed(&ids_tensor(&tokens(62, M as usize, vocab))).squeeze_dim(0), &prompt, &head);
    assert!(!frozen.requires_grad(), "model weights require grad");
    // The f64 loss is the one `Transformer::logits` gives (up to its f32 rounding).
    {
        let x = Tensor::cat(&[net.embed(&ids_tensor(&tokens(62, M as usize, vocab))), net.embed(&ids_tensor(&prompt))], 1);
        let positions = Tensor::arange(M + prompt.len() as i64, (Kind::Int64, Device::Cpu)).unsqueeze(0);
        let (hidden, _) = net.forward_embeds(&x, &positions, &mut net.new_cache(), &[]);
        let logits = net.logits(&hidden.squeeze_dim(0).narrow(0, M - 1, prompt.len() as i64));
        let ce = logits.to_kind(Kind::Double).log_softmax(-1, Kind::Double).nll_loss(&ids_tensor(&prompt).squeeze_dim(0));
        let d = (ce - &frozen).abs().double_value(&[]);
        assert!(d < 1e-5, "f64 loss differs from the model's logits' loss by {d}");
    }

    // A deterministic starting prefix in embedding space.
    let init = (net.embed(&ids_tensor(&tokens(63, M as usize, vocab))).squeeze_dim(0) * 0.5
        + (Tensor::arange(M * h, (Kind::Double, Device::Cpu)).view([M, h]) * 0.37).sin() * 0.1)
        .detach();
    let p = init.copy().set_requires_grad(true);
    let l0 = loss(&net, &p, &prompt, &head);
    assert!(l0.requires_grad());
    l0.backward();
    let grad = p.grad();
    assert_eq!(grad.size(), [M, h]);
    assert!(bool::try_from(grad.isfinite().all()).expect("bool"), "gradient not finite");
    // Every prefix position influences the loss.
    let row_norms = Vec::<f64>::try_from(grad.norm_scalaropt_dim(2, [1], false)).expect("f64");
    assert!(row_norms.iter().all(|&n| n > 1e-6), "prefix rows without gradient: {row_norms:?}");

    // Central differences at the two largest gradient coordinates and at the largest one of
    // the first prefix row (the one farthest from the predictions) if that is another one.
    let flat = grad.flatten(0, -1);
    let mut coords = Vec::<i64>::try_from(flat.abs().topk(2, 0, true, true).1).expect("indices");
    let first_row = grad.get(0).abs().argmax(0, false).int64_value(&[]);
    if !coords.contains(&first_row) {
        coords.push(first_row);
    }
    let eps = 1e-3;
    let _guard = tch::no_grad_guard();
    for &i in &coords {
        let at = |delta: f64| {
            let q = init.copy();
            let _ = q.view([-1]).get(i).g_add_scalar_(delta);
            loss(&net, &q, &prompt, &head).double_value(&[])
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        let analytic = flat.double_value(&[i]);
        let rel = (numeric - analytic).abs() / analytic.abs().max(1e-6);
        eprintln!("coordinate {i}: analytic {analytic:.8e}, finite difference {numeric:.8e}, relative error {rel:.2e}");
        assert!(rel < 1e-3, "coordinate {i}: analytic {analytic} vs finite difference {numeric}");
    }
    drop(_guard);

    // Plain SGD on the prefix lowers the loss at every step.
    let p = init.copy().set_requires_grad(true);
    let lr = 0.5;
    let mut losses = Vec::new();
    for _ in 0..6 {
        let l = loss(&net, &p, &prompt, &head);
        losses.push(l.double_value(&[]));
        l.backward();
        tch::no_grad(|| {
            let mut p = p.shallow_clone();
            let _ = p.g_sub_(&(p.grad() * lr));
            let _ = p.grad().zero_();
        });
    }
    eprintln!("SGD losses {losses:?}");
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "loss did not decrease: {losses:?}");
    assert!(losses[5] < losses[0] - 0.05, "loss barely moved: {losses:?}");
}

//! The decoder-only transformer shared by every architecture, built from a `ModelSpec` and a
//! checkpoint's `Weights`. Weights are immutable; all per-sequence state lives in `KvCache`, so
//! many agents share one set of weights.
use tch::{Kind, Tensor};

use super::kv_cache::KvCache;
use super::layers::{attention_mask, Linear, Mlp, RmsNorm, Rope};
use super::row_split::RowSplit;
use super::spec::{ModelSpec, NormPlacement, NormStyle};
use crate::device::{self, WeightFormat};
use crate::error::LoadError;
use crate::weights::Weights;

struct Attention {
    /// q, k and v as one projection (phi3's `qkv_proj`; the others' three are concatenated).
    qkv: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
}

struct DecoderLayer {
    attn: Attention,
    mlp: Mlp,
    input_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    /// Gemma's extra norms (pre- and post-feedforward); None for the pre-norm architectures.
    ffw_norms: Option<(RmsNorm, RmsNorm)>,
    window: Option<i64>,
    rope_index: usize,
}

pub struct Transformer {
    spec: ModelSpec,
    embed: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    ropes: Vec<Rope>,
    /// Small-batch projections split over the CPU threads (None on CUDA or with one thread).
    row_split: Option<RowSplit>,
}

impl Transformer {
    pub fn load(spec: ModelSpec, w: &Weights) -> Result<Self, LoadError> {
        spec.validate().map_err(|message| LoadError::Config { path: w.path().to_path_buf(), message })?;
        let (h, hd) = (spec.hidden_size, spec.head_dim);
        let (nh, nkv) = (spec.num_heads, spec.num_kv_heads);
        let norm = |name: &str, dim: i64| -> Result<RmsNorm, LoadError> {
            let raw = w.get_raw(name, &[dim])?;
            // llama.cpp's converter stores 1 + w; transformers subtracts 1 again on load.
            let weight = if spec.norm_style == NormStyle::GemmaOffset && w.is_gguf() { raw - 1.0 } else { raw };
            Ok(RmsNorm::new(w.place(weight), spec.rms_eps, spec.norm_style))
        };
        let linear = |name: &str, out: i64, inp: i64, bias: bool| -> Result<Linear, LoadError> {
            Ok(Linear::dense(
                w.get(&format!("{name}.weight"), &[out, inp])?,
                if bias { Some(w.get(&format!("{name}.bias"), &[out])?) } else { None },
            ))
        };
        let embed = w.get("model.embed_tokens.weight", &[spec.vocab_size, h])?;
        let mut layers = Vec::with_capacity(spec.num_layers as usize);
        for i in 0..spec.num_layers {
            let p = format!("model.layers.{i}");
            let o = linear(&format!("{p}.self_attn.o_proj"), h, nh * hd, false)?;
            let attn = if spec.fused_projections {
                let qkv = linear(&format!("{p}.self_attn.qkv_proj"), (nh + 2 * nkv) * hd, h, spec.qkv_bias)?;
                Attention { qkv, o, q_norm: None, k_norm: None }
            } else {
                let mut q = linear(&format!("{p}.self_attn.q_proj"), nh * hd, h, spec.qkv_bias)?;
                let mut k = linear(&format!("{p}.self_attn.k_proj"), nkv * hd, h, spec.qkv_bias)?;
                if spec.gguf_permuted_qk && w.is_gguf() {
                    q.weight = unpermute_rows(&q.weight, nh);
                    k.weight = unpermute_rows(&k.weight, nkv);
                }
                let (q_norm, k_norm) = if spec.qk_norm {
                    (Some(norm(&format!("{p}.self_attn.q_norm.weight"), hd)?), Some(norm(&format!("{p}.self_attn.k_norm.weight"), hd)?))
                } else {
                    (None, None)
                };
                let v = linear(&format!("{p}.self_attn.v_proj"), nkv * hd, h, spec.qkv_bias)?;
                Attention { qkv: Linear::concat(vec![q, k, v]), o, q_norm, k_norm }
            };
            let inter = spec.intermediate_size;
            let gate_up = if spec.fused_projections {
                linear(&format!("{p}.mlp.gate_up_proj"), 2 * inter, h, false)?
            } else {
                let gate = linear(&format!("{p}.mlp.gate_proj"), inter, h, false)?;
                Linear::concat(vec![gate, linear(&format!("{p}.mlp.up_proj"), inter, h, false)?])
            };
            let mlp = Mlp { gate_up, down: linear(&format!("{p}.mlp.down_proj"), h, inter, false)?, activation: spec.activation };
            let ffw_norms = match spec.norm_placement {
                NormPlacement::Pre => None,
                NormPlacement::Sandwich => Some((
                    norm(&format!("{p}.pre_feedforward_layernorm.weight"), h)?,
                    norm(&format!("{p}.post_feedforward_layernorm.weight"), h)?,
                )),
            };
            let window = spec.sliding_windows[i as usize];
            layers.push(DecoderLayer {
                attn,
                mlp,
                input_norm: norm(&format!("{p}.input_layernorm.weight"), h)?,
                post_attn_norm: norm(&format!("{p}.post_attention_layernorm.weight"), h)?,
                ffw_norms,
                window,
                rope_index: usize::from(window.is_some() && spec.local_rope.is_some()),
            });
        }
        let lm_head = match w.get_opt("lm_head.weight", &[spec.vocab_size, h])? {
            Some(head) if !spec.tie_embeddings => head,
            _ => embed.shallow_clone(),
        };
        let mut ropes = vec![Rope::new(&spec.rope, w.device())];
        if let Some(local) = &spec.local_rope {
            ropes.push(Rope::new(local, w.device()));
        }
        let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1);
        let row_split = if w.device() == tch::Device::Cpu { RowSplit::new(threads) } else { None };
        let lm_head = Linear::dense(lm_head, None);
        let mut model = Transformer { norm: norm("model.norm.weight", h)?, spec, embed, layers, lm_head, ropes, row_split };
        if device::bf16_in_f32(model.device(), model.kind()) {
            // See `device::cpu_has_native_bf16`: the projections multiply in f32 (the token
            // embedding stays a bf16 lookup table; the head gets its own f32 copy when tied).
            tracing::info!("this CPU has no native bf16: bf16 projections and attention compute in f32 and round to bf16");
            model.map_projections(Linear::widened);
        }
        Ok(model)
    }

    /// Replaces every projection (the layers' and the output head's) by `f` of it.
    fn map_projections(&mut self, f: impl Fn(&Linear) -> Linear) {
        for layer in &mut self.layers {
            let (attn, mlp) = (&mut layer.attn, &mut layer.mlp);
            for linear in [&mut attn.qkv, &mut attn.o, &mut mlp.gate_up, &mut mlp.down] {
                *linear = f(linear);
            }
        }
        self.lm_head = f(&self.lm_head);
    }

    /// Stores every projection (the layers' and the output head; the token embedding stays a
    /// dense lookup table) in `format`. int8 runs on the CPU only (libtorch's weight-only kernel;
    /// its inputs are bf16, so f32 activations are converted around each projection).
    /// Storing the format the model already has is a no-op (quantizing twice would lose the
    /// scales); int8 weights cannot go back to dense.
    pub fn store_weights(&mut self, format: WeightFormat) -> Result<(), LoadError> {
        if format == self.weight_format() {
            return Ok(());
        }
        if format == WeightFormat::Dense {
            return Err(LoadError::Device("int8 weights cannot be made dense again; reload the model".into()));
        }
        if self.device() != tch::Device::Cpu {
            return Err(LoadError::Device(format!("--weights int8 runs on the CPU only (this model is on {:?})", self.device())));
        }
        let _no_grad = tch::no_grad_guard();
        self.map_projections(Linear::to_int8);
        Ok(())
    }

    /// How the projections are stored now.
    pub fn weight_format(&self) -> WeightFormat {
        if self.lm_head.scales.is_some() {
            WeightFormat::Int8
        } else {
            WeightFormat::Dense
        }
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn device(&self) -> tch::Device {
        self.embed.device()
    }

    pub fn kind(&self) -> Kind {
        self.embed.kind()
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// True when positions up to `new_max` cannot reuse keys cached up to `cached_max` (a rope
    /// with long-context frequencies switches on in between): the caller re-runs the sequence.
    pub fn cache_invalidated(&self, cached_max: i64, new_max: i64) -> bool {
        self.ropes.iter().any(|r| r.switches_regime(cached_max, new_max))
    }

    /// Input embeddings of token ids `[B, T]`, scaled as the architecture requires. Prefix
    /// embeddings are concatenated to these (in this space) before `forward_embeds`.
    pub fn embed(&self, ids: &Tensor) -> Tensor {
        let e = Tensor::embedding(&self.embed, ids, -1, false, false);
        match self.spec.embed_scale {
            // transformers multiplies by the scale cast to the weight dtype.
            Some(scale) => e * Tensor::from(scale).to_kind(self.kind()).to_device(self.device()),
            None => e,
        }
    }

    /// Runs the decoder over `embeds` `[B, T, H]` at `positions` `[B, T]` (-1 = padding),
    /// appending to `cache`. Returns the final-normed hidden states `[B, T, H]` and the hidden
    /// states listed in `capture`, in transformers' `output_hidden_states` numbering: 0 is the
    /// embedding output, l (1..L-1) the output of layer l, L the final-normed output.
    pub fn forward_embeds(&self, embeds: &Tensor, positions: &Tensor, cache: &mut KvCache, capture: &[usize]) -> (Tensor, Vec<Tensor>) {
        let rows = embeds.size()[..2].iter().product::<i64>();
        match &self.row_split {
            Some(split) if RowSplit::applies(rows, embeds) => split.scope(|| self.forward_layers(embeds, positions, cache, capture)),
            _ => self.forward_layers(embeds, positions, cache, capture),
        }
    }

    fn forward_layers(&self, embeds: &Tensor, positions: &Tensor, cache: &mut KvCache, capture: &[usize]) -> (Tensor, Vec<Tensor>) {
        let k_pos = cache.extend_positions(positions);
        // Per row, not over the whole batch: longrope's short/long switch is per sequence.
        let max_positions = k_pos.amax(1, false);
        let rope_pos = positions.clamp_min(0);
        let cos_sin: Vec<(Tensor, Tensor)> = self.ropes.iter().map(|r| r.cos_sin_rows(&rope_pos, &max_positions, embeds.kind())).collect();
        let full_mask = attention_mask(positions, &k_pos, None);
        let num_layers = self.layers.len();
        let mut captured = Vec::with_capacity(capture.len());
        let mut x = embeds.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            if capture.contains(&i) {
                captured.push((i, x.shallow_clone()));
            }
            let windowed;
            let mask = match layer.window {
                Some(w) => {
                    windowed = attention_mask(positions, &k_pos, Some(w));
                    &windowed
                }
                None => &full_mask,
            };
            let (cos, sin) = &cos_sin[layer.rope_index];
            x = self.layer_forward(layer, &x, cos, sin, mask, &self.ropes[layer.rope_index], cache.layer_mut(i));
        }
        let out = self.norm.forward(&x);
        if capture.contains(&num_layers) {
            captured.push((num_layers, out.shallow_clone()));
        }
        cache.set_positions(k_pos);
        // Return captures in the order requested.
        let ordered = capture
            .iter()
            .filter_map(|c| captured.iter().find(|(i, _)| i == c).map(|(_, t)| t.shallow_clone()))
            .collect();
        (out, ordered)
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        layer: &DecoderLayer,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        rope: &Rope,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Tensor {
        let s = &self.spec;
        let (b, t) = (x.size()[0], x.size()[1]);
        let h = layer.input_norm.forward(x);
        let a = &layer.attn;
        let sizes = [s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim, s.num_kv_heads * s.head_dim];
        let parts = self.project(&a.qkv, &h).split_with_sizes(sizes, -1);
        let (q, k, v) = (parts[0].shallow_clone(), parts[1].shallow_clone(), parts[2].shallow_clone());
        let heads = |t_: Tensor, n: i64| t_.view([b, t, n, s.head_dim]).transpose(1, 2);
        let mut q = heads(q, s.num_heads);
        let mut k = heads(k, s.num_kv_heads);
        let v = heads(v, s.num_kv_heads);
        if let (Some(qn), Some(kn)) = (&a.q_norm, &a.k_norm) {
            q = qn.forward(&q);
            k = kn.forward(&k);
        }
        let q = rope.apply(&q, cos, sin);
        let k = rope.apply(&k, cos, sin);
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2), Tensor::cat(&[pv, v], 2)),
            None => (k, v),
        };
        let attn = grouped_attention(&q, &k, &v, mask, s.attn_scale);
        *cache = Some((k, v));
        let attn = self.project(&a.o, &attn.transpose(1, 2).reshape([b, t, s.num_heads * s.head_dim]));
        let project = |l: &Linear, x: &Tensor| self.project(l, x);
        match &layer.ffw_norms {
            None => {
                let x = x + attn;
                let m = layer.mlp.forward_with(&layer.post_attn_norm.forward(&x), &project);
                x + m
            }
            Some((pre_ffw, post_ffw)) => {
                let x = x + layer.post_attn_norm.forward(&attn);
                let m = layer.mlp.forward_with(&pre_ffw.forward(&x), &project);
                &x + post_ffw.forward(&m)
            }
        }
    }

    /// Threads that share a small-batch decode step's projections (1: none split; see `row_split`).
    pub fn row_split_threads(&self) -> usize {
        self.row_split.as_ref().map_or(1, RowSplit::threads)
    }

    /// `layer.forward(x)`, split over the CPU threads for a few rows.
    fn project(&self, layer: &Linear, x: &Tensor) -> Tensor {
        match &self.row_split {
            Some(split) => split.forward(layer, x),
            None => layer.forward(x),
        }
    }

    /// Logits `[.., vocab]` in f32 from final-normed hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        let logits = if self.lm_head.scales.is_none() && transposed_head(hidden) {
            let head = &self.lm_head.weight;
            head.matmul(&hidden.to_kind(head.kind()).tr()).tr().to_kind(hidden.kind())
        } else {
            self.project(&self.lm_head, hidden)
        };
        let logits = logits.to_kind(Kind::Float);
        match self.spec.final_logit_softcap {
            Some(cap) => (logits / cap).tanh() * cap,
            None => logits,
        }
    }
}

/// Whether the output head's `x Wᵀ` is computed as `(W xᵀ)ᵀ`: for a few dozen rows (the decode
/// step of a batch) MKL's sgemm is faster on a CPU in that form with a vocabulary-sized W
/// (2 threads, 49152 x 576: 2.8x at 6 rows, 1.4x at 16, 1.3x at 24, 1.6x at 48, 1.1x at 64;
/// 151936 x 896: 1.2x at 16 and 24, 1.5x at 48, 1.3x at 64; one row is a matrix-vector product,
/// split over the threads instead). The layers' own projections gain nothing from it.
fn transposed_head(x: &Tensor) -> bool {
    let rows = if x.dim() == 2 { x.size()[0] } else { 0 };
    (2..=64).contains(&rows) && x.device() == tch::Device::Cpu
}

/// Attention of q `[B, H, T, D]` over k, v `[B, KV, S, D]` with a boolean mask `[B, 1, T, S]`.
/// On CUDA the query heads that share a key/value head are folded into the query length
/// (head `j * g + r` at step `t` becomes row `r * T + t` of head `j`), so SDPA sees as many query
/// heads as key heads: with an explicit mask flash attention is out and the memory-efficient
/// kernel refuses grouped heads, so `enable_gqa` would run the math kernel, which expands keys
/// and values to every query head and upcasts bf16 to f32, in every layer at every step. The CPU
/// keeps the call whose results match transformers; in f32 for bf16 inputs on a CPU without
/// native bf16 (see `device::cpu_has_native_bf16`; the kernel accumulates bf16 in f32 anyway).
fn grouped_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Tensor {
    if device::bf16_in_f32(q.device(), q.kind()) {
        let wide = |t: &Tensor| t.to_kind(Kind::Float);
        return Tensor::scaled_dot_product_attention(&wide(q), &wide(k), &wide(v), Some(mask), 0.0, false, Some(scale), true).to_kind(q.kind());
    }
    if q.device() == tch::Device::Cpu || q.size()[1] == k.size()[1] {
        return Tensor::scaled_dot_product_attention(q, k, v, Some(mask), 0.0, false, Some(scale), true);
    }
    folded_attention(q, k, v, mask, scale)
}

/// `grouped_attention`'s CUDA path: the query heads of each key/value head folded into rows.
fn folded_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Tensor {
    let (qs, kv_heads) = (q.size(), k.size()[1]);
    let (b, heads, t, d) = (qs[0], qs[1], qs[2], qs[3]);
    let group = heads / kv_heads;
    let folded = q.reshape([b, kv_heads, group * t, d]);
    let mask = mask.repeat([1, 1, group, 1]);
    Tensor::scaled_dot_product_attention(&folded, k, v, Some(&mask), 0.0, false, Some(scale), false).reshape([b, heads, t, d])
}

/// Undoes llama.cpp's q/k row permutation (transformers' `reverse_permute_weights`).
fn unpermute_rows(w: &Tensor, heads: i64) -> Tensor {
    let size = w.size();
    let dim = size[0] / heads / 2;
    w.reshape([heads, dim, 2, size[1]]).transpose(1, 2).reshape([size[0], size[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The folded form equals grouped-query SDPA (query head h reads key/value head h / group),
    /// with a mask that hides some positions per row, so the CUDA path computes the same thing.
    #[test]
    fn folded_attention_equals_grouped_sdpa() {
        tch::manual_seed(3);
        let (b, heads, kv, t, s, d) = (2, 14, 2, 3, 5, 8);
        let q = Tensor::randn([b, heads, t, d], (Kind::Float, tch::Device::Cpu));
        let k = Tensor::randn([b, kv, s, d], (Kind::Float, tch::Device::Cpu));
        let v = Tensor::randn([b, kv, s, d], (Kind::Float, tch::Device::Cpu));
        let mask = Tensor::rand([b, 1, t, s], (Kind::Float, tch::Device::Cpu)).gt(0.3);
        let mask = mask.logical_or(&Tensor::eye_m(t, s, (Kind::Bool, tch::Device::Cpu)).view([1, 1, t, s]));
        let want = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&mask), 0.0, false, Some(0.3), true);
        let got = folded_attention(&q, &k, &v, &mask, 0.3);
        assert_eq!(got.size(), want.size());
        let diff = (got - want).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "max difference {diff}");
    }

    /// Share of elements of bf16 `got` equal to `want`, and the largest difference of the others
    /// relative to the value (one bf16 rounding step is 2^-8..2^-7).
    fn bf16_agreement(got: &Tensor, want: &Tensor) -> (f64, f64) {
        assert_eq!((got.kind(), got.size()), (Kind::BFloat16, want.size()));
        let (g, w) = (got.to_kind(Kind::Float), want.to_kind(Kind::Float));
        let equal = g.eq_tensor(&w).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        let relative = ((&g - &w).abs() / w.abs().clamp_min(1e-3)).max().double_value(&[]);
        (equal, relative)
    }

    /// A bf16 projection computed in f32 over widened weights (the route of CPUs without native
    /// bf16) equals libtorch's bf16 GEMM up to one rounding step on the rare element whose sum
    /// lands near a tie (the order of the f32 sums differs). Holds on either kind of CPU.
    #[test]
    fn widened_projection_rounds_like_a_bf16_gemm() {
        tch::manual_seed(5);
        let opts = (Kind::BFloat16, tch::Device::Cpu);
        let dense = Linear::dense(Tensor::randn([384, 256], opts), Some(Tensor::randn([384], opts)));
        let x = Tensor::randn([2, 7, 256], opts);
        let want = dense.forward(&x);
        let wide = dense.widened();
        assert_eq!(wide.weight.kind(), Kind::Float);
        let (equal, relative) = bf16_agreement(&wide.forward(&x), &want);
        assert!(equal > 0.98 && relative <= 2f64.powi(-7), "{equal} equal, worst relative {relative}");
    }

    /// bf16 attention, whichever route this CPU takes, follows f32 attention on the same values
    /// within a few bf16 rounding steps (a native kernel may round the softmax weights to bf16
    /// before multiplying by v; a wrong mask, scale or head grouping is off by tenths).
    #[test]
    fn bf16_attention_follows_f32_attention() {
        tch::manual_seed(6);
        let (b, heads, kv, t, s, d) = (2, 6, 2, 3, 40, 16);
        let opts = (Kind::BFloat16, tch::Device::Cpu);
        let (q, k, v) = (Tensor::randn([b, heads, t, d], opts), Tensor::randn([b, kv, s, d], opts), Tensor::randn([b, kv, s, d], opts));
        let mask = Tensor::rand([b, 1, t, s], (Kind::Float, tch::Device::Cpu)).gt(0.2);
        let wide = |x: &Tensor| x.to_kind(Kind::Float);
        let want = Tensor::scaled_dot_product_attention(&wide(&q), &wide(&k), &wide(&v), Some(&mask), 0.0, false, Some(0.25), true);
        let got = grouped_attention(&q, &k, &v, &mask, 0.25);
        assert_eq!((got.kind(), got.size()), (Kind::BFloat16, want.size()));
        let worst = (wide(&got) - &want).abs().max().double_value(&[]);
        assert!(worst < 0.02, "bf16 attention off by {worst}");
    }
}

//! Building blocks shared by every architecture: RMSNorm, rotary embeddings, grouped-query
//! attention with an optional sliding window, gated MLPs, and the attention mask over padded
//! batches. Each follows the float operation order of the matching transformers module, so that
//! f32 results agree to rounding.
use tch::{Kind, Tensor};

use super::spec::{Activation, NormStyle, RopeScaling, RopeSpec};

pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
    style: NormStyle,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64, style: NormStyle) -> Self {
        RmsNorm { weight, eps, style }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let xf = x.to_kind(Kind::Float);
        let variance = xf.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = &xf * (variance + self.eps).rsqrt();
        match self.style {
            NormStyle::Plain => &self.weight * normed.to_kind(kind),
            NormStyle::GemmaOffset => (normed * (self.weight.to_kind(Kind::Float) + 1.0)).to_kind(kind),
        }
    }
}

/// Precomputed inverse frequencies of one rotary embedding.
pub struct Rope {
    inv_freq: Tensor,
    /// Phi's long-context frequencies and the context length past which they apply.
    long: Option<(Tensor, i64)>,
    attention_scaling: f64,
    rotary_dim: i64,
}

impl Rope {
    pub fn new(spec: &RopeSpec, device: tch::Device) -> Self {
        let dim = spec.rotary_dim;
        // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), all in f32.
        let exponent = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, device)).to_kind(Kind::Float) / dim as f64;
        let powers = Tensor::pow_scalar(spec.theta, &exponent);
        let base_inv = powers.reciprocal();
        let factors = |f: &[f64]| Tensor::from_slice(f).to_kind(Kind::Float).to_device(device);
        let (inv_freq, long, attention_scaling) = match &spec.scaling {
            RopeScaling::None => (base_inv, None, 1.0),
            RopeScaling::Linear { factor } => (base_inv / *factor, None, 1.0),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let old = *original_max_position_embeddings;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                let wavelen = (base_inv.reciprocal()) * (2.0 * std::f64::consts::PI);
                let scaled = base_inv.where_self(&wavelen.le(low_wavelen), &(&base_inv / *factor));
                let smooth = ((wavelen.reciprocal() * old) - *low_freq_factor) / (high_freq_factor - low_freq_factor);
                let smoothed = (smooth.ones_like() - &smooth) * &scaled / *factor + &smooth * &scaled;
                let medium = wavelen.ge(high_wavelen).logical_and(&wavelen.le(low_wavelen));
                (smoothed.where_self(&medium, &scaled), None, 1.0)
            }
            RopeScaling::LongRope { short_factor, long_factor, original_max_position_embeddings, attention_factor } => {
                let short = (factors(short_factor) * &powers).reciprocal();
                let long = (factors(long_factor) * &powers).reciprocal();
                (short, Some((long, *original_max_position_embeddings)), *attention_factor)
            }
        };
        Rope { inv_freq, long, attention_scaling, rotary_dim: dim }
    }

    /// Whether extending a sequence whose largest position is `cached_max` to `new_max` switches
    /// from short to long frequencies, which invalidates cached keys (transformers' phi3
    /// recomputes the whole cache at that point, and so do we).
    pub fn switches_regime(&self, cached_max: i64, new_max: i64) -> bool {
        matches!(&self.long, Some((_, original)) if cached_max < *original && new_max >= *original)
    }

    /// cos and sin for positions `[B, T]`, shaped `[B, 1, T, rotary_dim]` in `kind`.
    /// `max_position` is the largest position of the sequence so far (longrope switches on it).
    pub fn cos_sin(&self, positions: &Tensor, max_position: i64, kind: Kind) -> (Tensor, Tensor) {
        let inv_freq = match &self.long {
            Some((long, original)) if max_position + 1 > *original => long,
            _ => &self.inv_freq,
        };
        self.cos_sin_with(positions, inv_freq, kind)
    }

    /// As `cos_sin`, but each row of a batch picks short or long frequencies from its own
    /// largest position, `max_positions` `[B]`: in a continuous batch, a row that has not reached
    /// the original context must not get long frequencies because another row has (its solo run
    /// would not, and its cached keys were rotated with short ones).
    pub fn cos_sin_rows(&self, positions: &Tensor, max_positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        match &self.long {
            Some((long, original)) => {
                let use_long = max_positions.ge(*original).view([-1, 1, 1]);
                self.cos_sin_with(positions, &long.where_self(&use_long, &self.inv_freq), kind)
            }
            None => self.cos_sin_with(positions, &self.inv_freq, kind),
        }
    }

    /// `inv_freq`: `[rotary_dim / 2]`, or `[B, 1, rotary_dim / 2]` per row.
    fn cos_sin_with(&self, positions: &Tensor, inv_freq: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv_freq;
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        let scale = |t: Tensor| if self.attention_scaling != 1.0 { t * self.attention_scaling } else { t };
        let (cos, sin) = (scale(emb.cos()), scale(emb.sin()));
        (cos.unsqueeze(1).to_kind(kind), sin.unsqueeze(1).to_kind(kind))
    }

    /// Rotates the first `rotary_dim` dimensions of `x` `[B, H, T, D]`.
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let head_dim = x.size()[3];
        let rotate = |t: &Tensor| {
            let half = self.rotary_dim / 2;
            let x1 = t.narrow(-1, 0, half);
            let x2 = t.narrow(-1, half, half);
            Tensor::cat(&[x2.neg(), x1], -1)
        };
        if self.rotary_dim == head_dim {
            x * cos + rotate(x) * sin
        } else {
            let rot = x.narrow(-1, 0, self.rotary_dim);
            let pass = x.narrow(-1, self.rotary_dim, head_dim - self.rotary_dim);
            Tensor::cat(&[&rot * cos + rotate(&rot) * sin, pass], -1)
        }
    }
}

/// A projection `x Wᵀ + b`. `W` is dense in the compute dtype, or int8 with one scale per output
/// row (`scales`, bf16 for f32 models, else the compute dtype): weight-only quantization,
/// `W[r] = q[r] * scales[r]`, which halves (bf16) or quarters (f32) the bytes a decode step reads.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub scales: Option<Tensor>,
}

impl Linear {
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear { weight, bias, scales: None }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        match &self.scales {
            None if self.weight.kind() == x.kind() => x.linear(&self.weight, self.bias.as_ref()),
            // Weights held wider than the activations (`widened`): one f32 GEMM, one rounding.
            None => x.to_kind(self.weight.kind()).linear(&self.weight, self.bias.as_ref()).to_kind(x.kind()),
            Some(scales) => {
                // libtorch's weight-only int8 kernel takes [rows, in] and dequantizes on the fly.
                let mut shape = x.size();
                let inp = shape.last().copied().unwrap_or(1);
                // The kernel is vectorized for bf16/f16 inputs only (f32 inputs run ~10x slower),
                // so f32 activations cross to bf16 and back around it (cheap at decode sizes).
                // (`to_kind` to the tensor's own kind is a no-op.)
                let y = x.reshape([-1, inp]).to_kind(scales.kind()).internal_weight_int8pack_mm(&self.weight, scales).to_kind(x.kind());
                if let Some(last) = shape.last_mut() {
                    *last = self.weight.size()[0];
                }
                let y = y.reshape(shape.as_slice());
                match &self.bias {
                    Some(b) => y + b,
                    None => y,
                }
            }
        }
    }

    /// Output rows `start..start + len` (one thread's share of a split projection).
    pub fn rows(&self, start: i64, len: i64) -> Linear {
        Linear {
            weight: self.weight.narrow(0, start, len),
            bias: self.bias.as_ref().map(|b| b.narrow(0, start, len)),
            scales: self.scales.as_ref().map(|s| s.narrow(0, start, len)),
        }
    }

    /// The same projection with its weights (and bias) held in f32, values unchanged: `forward`
    /// then multiplies bf16 activations in f32 and rounds the result to bf16 once, which is what a
    /// bf16 GEMM accumulating in f32 computes (products of bf16 values are exact in f32), up to the
    /// order of the sums. For CPUs whose libtorch bf16 kernels are slow (see
    /// `device::cpu_has_native_bf16`); the projections then take twice the memory.
    pub fn widened(&self) -> Linear {
        let wide = |t: &Tensor| t.to_kind(Kind::Float);
        Linear { weight: wide(&self.weight), bias: self.bias.as_ref().map(wide), scales: None }
    }

    /// The same projection with int8 weights: symmetric, one scale per output row (absmax / 127),
    /// as torchao's int8 weight-only scheme (on random matrices the outputs moved by under 1% of the largest).
    pub fn to_int8(&self) -> Linear {
        let w = self.weight.to_kind(Kind::Float);
        let scales = (w.abs().amax([1i64].as_slice(), false) / 127.0).clamp_min(1e-12);
        let q = (w / scales.unsqueeze(1)).round().clamp(-127.0, 127.0).to_kind(Kind::Int8);
        let kind = match self.weight.kind() {
            Kind::Float | Kind::Double => Kind::BFloat16,
            other => other,
        };
        Linear { weight: q, bias: self.bias.as_ref().map(Tensor::shallow_clone), scales: Some(scales.to_kind(kind)) }
    }

    /// One projection whose outputs are those of `parts` side by side: a decode step then makes
    /// one matrix-vector product instead of several, each a round of thread synchronization.
    /// The parts are dense (quantization comes after loading).
    pub fn concat(parts: Vec<Linear>) -> Linear {
        let weights: Vec<&Tensor> = parts.iter().map(|p| &p.weight).collect();
        let biases: Option<Vec<&Tensor>> = parts.iter().map(|p| p.bias.as_ref()).collect();
        Linear::dense(Tensor::cat(&weights, 0), biases.map(|b| Tensor::cat(&b, 0)))
    }
}

/// Gated MLP: `down(act(gate(x)) * up(x))`, with gate and up as one projection (`gate_up`, gate
/// first, as phi3 stores it).
pub struct Mlp {
    pub gate_up: Linear,
    pub down: Linear,
    pub activation: Activation,
}

impl Mlp {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_with(x, &Linear::forward)
    }

    /// `forward` with the projections computed by `project` (the row-split decode path).
    pub fn forward_with(&self, x: &Tensor, project: &dyn Fn(&Linear, &Tensor) -> Tensor) -> Tensor {
        let parts = project(&self.gate_up, x).chunk(2, -1);
        let act = match self.activation {
            Activation::Silu => parts[0].silu(),
            Activation::GeluTanh => parts[0].gelu("tanh"),
        };
        project(&self.down, &(act * &parts[1]))
    }
}

/// Boolean attention mask `[B, 1, T, S]` (true = attend) for queries at `q_pos` `[B, T]` over
/// keys at `k_pos` `[B, S]`. Position -1 marks padding: padded keys are never attended; padded
/// queries attend everywhere so that their (discarded) rows stay finite.
pub fn attention_mask(q_pos: &Tensor, k_pos: &Tensor, window: Option<i64>) -> Tensor {
    let diff = q_pos.unsqueeze(2) - k_pos.unsqueeze(1);
    let mut allowed = k_pos.ge(0).unsqueeze(1).logical_and(&diff.ge(0));
    if let Some(w) = window {
        // transformers' sliding window: key visible iff q - k < window.
        allowed = allowed.logical_and(&diff.lt(w));
    }
    allowed.logical_or(&q_pos.lt(0).unsqueeze(2)).unsqueeze(1)
}

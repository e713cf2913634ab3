//! The state of one running sequence: its tokens, generator, position and the hidden states it
//! asked for.
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use tch::{Kind, Tensor};

use super::request::{CapturePoint, CaptureSpec, SequenceOutput, SequenceRequest};
use crate::generate::FinishReason;
use crate::models::{KvCache, Transformer};
use crate::tokenizer::TextTokenizer;

pub(super) struct Active {
    pub id: u64,
    pub request: SequenceRequest,
    pub reserved: usize,
    pub rng: StdRng,
    /// Position of the next token to feed (the last generated one).
    pub next_position: i64,
    pub prompt_len: usize,
    pub tokens: Vec<u32>,
    /// Set when the decoded text reached one of the request's stop strings.
    pub stop_string_hit: bool,
    pub captures: Captures,
    pub started: Instant,
    pub first_token: Option<Duration>,
}

impl Active {
    pub fn accept(&mut self, token: u32) {
        self.tokens.push(token);
        if self.first_token.is_none() {
            self.first_token = Some(self.started.elapsed());
        }
    }

    pub fn pending_token(&self) -> i64 {
        self.tokens.last().map_or(0, |&t| i64::from(t))
    }

    pub fn is_finished(&self) -> bool {
        self.stop_string_hit || FinishReason::of(&self.tokens, &self.request.params).is_some()
    }

    /// Whether the last token completed one of the stop strings. Only the tail of the text is
    /// decoded, and a match must end inside the last token's piece, so each check is O(1).
    pub fn check_stop_strings(&mut self, tokenizer: &TextTokenizer) {
        let stops = &self.request.params.stop_strings;
        if stops.is_empty() || self.tokens.is_empty() {
            return;
        }
        let longest = stops.iter().map(|s| s.len()).max().unwrap_or(0);
        let tail = &self.tokens[self.tokens.len().saturating_sub(longest + 8)..];
        let (Ok(before), Ok(now)) = (tokenizer.decode(&tail[..tail.len() - 1], false), tokenizer.decode(tail, false)) else {
            return;
        };
        // Bytes of `now` that the last token added (decoding can merge across token edges).
        let common = before.bytes().zip(now.bytes()).take_while(|(a, b)| a == b).count();
        self.stop_string_hit = stops.iter().any(|stop| {
            now.match_indices(stop.as_str()).any(|(at, m)| at + m.len() > common)
        });
    }

    pub fn into_output(self) -> SequenceOutput {
        SequenceOutput {
            finish: if self.stop_string_hit {
                FinishReason::Stop
            } else {
                FinishReason::of(&self.tokens, &self.request.params).unwrap_or(FinishReason::Length)
            },
            prompt_tokens: self.prompt_len,
            hidden_states: self.captures.finish(),
            time_to_first_token: self.first_token.unwrap_or_default(),
            total_time: self.started.elapsed(),
            tokens: self.tokens,
        }
    }
}

/// Accumulates the states a sequence asked for, each `[layers, hidden]` in f32 on the CPU.
pub(super) struct Captures {
    spec: Option<CaptureSpec>,
    last_prompt: Option<Tensor>,
    generated_sum: Option<Tensor>,
    generated_count: i64,
    last_generated: Option<Tensor>,
}

impl Captures {
    pub fn new(spec: Option<CaptureSpec>) -> Self {
        Captures { spec, last_prompt: None, generated_sum: None, generated_count: 0, last_generated: None }
    }

    fn wants(&self, point: CapturePoint) -> bool {
        self.spec.as_ref().is_some_and(|s| s.points.contains(&point))
    }

    /// Layers needed at the prompt's last position.
    pub fn layers(&self) -> Vec<usize> {
        if self.wants(CapturePoint::LastPromptToken) {
            self.spec.as_ref().map(|s| s.layers.clone()).unwrap_or_default()
        } else {
            Vec::new()
        }
    }

    /// Layers needed at every generated token.
    pub fn generated_layers(&self) -> Vec<usize> {
        if self.wants_final_state() {
            self.spec.as_ref().map(|s| s.layers.clone()).unwrap_or_default()
        } else {
            Vec::new()
        }
    }

    pub fn wants_final_state(&self) -> bool {
        self.wants(CapturePoint::LastGeneratedToken) || self.wants(CapturePoint::MeanGenerated)
    }

    /// `states`: one `[hidden]` tensor per requested layer, at the last prompt token.
    pub fn record_prompt(&mut self, states: &[Tensor]) {
        if !states.is_empty() {
            self.last_prompt = Some(stack(states));
        }
    }

    /// `states`: one `[hidden]` tensor per requested layer, at a generated token.
    pub fn record_generated(&mut self, states: &[Tensor]) {
        if states.is_empty() {
            return;
        }
        let row = stack(states);
        self.generated_sum = Some(match self.generated_sum.take() {
            Some(sum) => sum + &row,
            None => row.copy(),
        });
        self.generated_count += 1;
        self.last_generated = Some(row);
    }

    /// Records row `row` of a batched forward whose captured `states` are of layers `computed`.
    pub fn record_generated_row(&mut self, computed: &[usize], states: &[Tensor], row: i64) {
        let mine: Vec<Tensor> = self
            .generated_layers()
            .iter()
            .filter_map(|l| computed.iter().position(|x| x == l).map(|j| states[j].get(row).squeeze_dim(0)))
            .collect();
        self.record_generated(&mine);
    }

    fn finish(self) -> Vec<(CapturePoint, Tensor)> {
        let Some(spec) = &self.spec else { return Vec::new() };
        spec.points
            .iter()
            .filter_map(|p| {
                let t = match p {
                    CapturePoint::LastPromptToken => self.last_prompt.as_ref().map(Tensor::shallow_clone),
                    CapturePoint::LastGeneratedToken => self.last_generated.as_ref().map(Tensor::shallow_clone),
                    CapturePoint::MeanGenerated => {
                        self.generated_sum.as_ref().map(|s| s / self.generated_count.max(1) as f64)
                    }
                };
                t.map(|t| (*p, t))
            })
            .collect()
    }
}

fn stack(states: &[Tensor]) -> Tensor {
    Tensor::stack(states, 0).to_kind(Kind::Float).to_device(tch::Device::Cpu)
}

/// Feeds each sequence's final token (rows of `cache` in the order of `seqs`) so that its state
/// is captured; the logits are not needed.
pub(super) fn feed_final_tokens(net: &Transformer, cache: &mut KvCache, seqs: &mut [&mut Active]) {
    let all = union_of_generated_layers(seqs.iter().map(|a| &**a));
    let (ids, positions) = step_inputs(net, seqs.iter().map(|a| &**a));
    let (_, states) = net.forward_embeds(&net.embed(&ids), &positions, cache, &all);
    for (i, a) in seqs.iter_mut().enumerate() {
        a.captures.record_generated_row(&all, &states, i as i64);
    }
}

/// The inputs of one decode step for `seqs` (one row each): their pending tokens and positions,
/// both `[B, 1]` on the network's device.
pub(super) fn step_inputs<'s>(net: &Transformer, seqs: impl Iterator<Item = &'s Active>) -> (Tensor, Tensor) {
    let (ids, pos): (Vec<i64>, Vec<i64>) = seqs.map(|a| (a.pending_token(), a.next_position)).unzip();
    let b = ids.len() as i64;
    let device = net.device();
    (Tensor::from_slice(&ids).to_device(device).view([b, 1]), Tensor::from_slice(&pos).to_device(device).view([b, 1]))
}

/// The sorted union of the layers that `seqs` capture at generated tokens.
pub(super) fn union_of_generated_layers<'s>(seqs: impl Iterator<Item = &'s Active>) -> Vec<usize> {
    union_of_layers(seqs, Captures::generated_layers)
}

/// The sorted union of the layers that `seqs` capture at the last prompt token.
pub(super) fn union_of_prompt_layers<'s>(seqs: impl Iterator<Item = &'s Active>) -> Vec<usize> {
    union_of_layers(seqs, Captures::layers)
}

fn union_of_layers<'s>(seqs: impl Iterator<Item = &'s Active>, layers_of: fn(&Captures) -> Vec<usize>) -> Vec<usize> {
    let mut layers: Vec<usize> = seqs.flat_map(|a| layers_of(&a.captures)).collect();
    layers.sort_unstable();
    layers.dedup();
    layers
}

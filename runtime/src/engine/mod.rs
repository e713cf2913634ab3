//! Continuous batching: many sequences of different lengths decode together, one token each
//! per step, sharing one padded KV cache. Sequences join between steps (those that join
//! together after one batched prefill, see `prefill`) and leave as soon as they finish or are
//! cancelled. Every sequence samples with its own seeded generator, so its tokens do not depend
//! on what else is in the batch.
mod prefill;
mod request;
mod state;

use std::collections::VecDeque;
use std::time::Instant;

use rand::SeedableRng;
use tch::Tensor;

pub use request::{CapturePoint, CaptureSpec, CapturedStates, Prefix, SequenceOutput, SequenceRequest};
use state::Active;

use crate::generate::{pick_token, validate_prompt, FinishReason, GenerateError};
use crate::models::{KvCache, Transformer};
use crate::tokenizer::TextTokenizer;

pub type SeqId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Most sequences decoded in one step.
    pub max_batch_size: usize,
    /// Most positions (prefix + prompt + max new tokens, summed over running sequences) the
    /// batch may hold; bounds KV-cache memory. A single larger request is refused.
    pub max_batch_tokens: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { max_batch_size: 32, max_batch_tokens: 65_536 }
    }
}

pub enum EngineEvent {
    Token { id: SeqId, token: u32 },
    Finished { id: SeqId, output: SequenceOutput },
}

pub struct Engine<'a> {
    net: &'a Transformer,
    /// Needed only for stop strings.
    tokenizer: Option<&'a TextTokenizer>,
    config: EngineConfig,
    waiting: VecDeque<(SeqId, SequenceRequest, Instant)>,
    active: Vec<Active>,
    /// Rows in the order of `active`.
    cache: KvCache,
    next_id: SeqId,
}

impl<'a> Engine<'a> {
    pub fn new(net: &'a Transformer, mut config: EngineConfig) -> Self {
        // A batch of zero would admit nothing and `run_to_completion` would never return.
        config.max_batch_size = config.max_batch_size.max(1);
        let cache = net.new_cache();
        Engine { net, tokenizer: None, config, waiting: VecDeque::new(), active: Vec::new(), cache, next_id: 0 }
    }

    /// Lets requests use stop strings (matched on decoded text).
    pub fn with_tokenizer(mut self, tokenizer: &'a TextTokenizer) -> Self {
        self.tokenizer = Some(tokenizer);
        self
    }

    pub fn network(&self) -> &Transformer {
        self.net
    }

    /// Everything that can be wrong with a request, checked before it is queued.
    pub fn validate(&self, req: &SequenceRequest) -> Result<(), GenerateError> {
        req.params.validate()?;
        let prefix_len = req.prefix.as_ref().map_or(0, |p| p.len() as usize);
        validate_prompt(self.net, &req.prompt, req.params.max_new_tokens + prefix_len)?;
        if !req.params.stop_strings.is_empty() && self.tokenizer.is_none() {
            return Err(GenerateError::BadParameter("stop strings need an engine with a tokenizer".into()));
        }
        if req.params.max_new_tokens == 0 {
            return Err(GenerateError::BadParameter("max_new_tokens must be at least 1".into()));
        }
        if let Some(prefix) = &req.prefix {
            prefix.validate(self.net)?;
        }
        if let Some(capture) = &req.capture {
            let max = self.net.spec().num_layers as usize;
            if let Some(l) = capture.layers.iter().find(|&&l| l > max) {
                return Err(GenerateError::BadCapture(format!("layer {l} does not exist (0..={max})")));
            }
            if capture.layers.is_empty() || capture.points.is_empty() {
                return Err(GenerateError::BadCapture("at least one layer and one point are needed".into()));
            }
        }
        let needed = req.reserved_positions();
        if needed > self.config.max_batch_tokens {
            return Err(GenerateError::OverBatchBudget { needed, limit: self.config.max_batch_tokens });
        }
        Ok(())
    }

    pub fn add(&mut self, req: SequenceRequest) -> Result<SeqId, GenerateError> {
        self.validate(&req)?;
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.push_back((id, req, Instant::now()));
        Ok(id)
    }

    /// Drops a waiting or running sequence; its cache rows are freed at once.
    pub fn cancel(&mut self, id: SeqId) -> bool {
        if let Some(i) = self.waiting.iter().position(|(w, _, _)| *w == id) {
            self.waiting.remove(i);
            return true;
        }
        match self.active.iter().position(|a| a.id == id) {
            Some(i) => {
                self.remove_rows(&[i]);
                true
            }
            None => false,
        }
    }

    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.active.is_empty()
    }

    pub fn num_active(&self) -> usize {
        self.active.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Admits waiting sequences that fit, then decodes one token for every running sequence.
    pub fn step(&mut self) -> Vec<EngineEvent> {
        let _guard = tch::no_grad_guard();
        let mut events = Vec::new();
        self.admit(&mut events);
        self.recompute_invalidated(&mut events);
        if !self.active.is_empty() {
            self.decode(&mut events);
        }
        events
    }

    /// Runs until every queued sequence finished; outputs in completion order.
    pub fn run_to_completion(&mut self) -> Vec<(SeqId, SequenceOutput)> {
        let mut done = Vec::new();
        while self.has_work() {
            for event in self.step() {
                if let EngineEvent::Finished { id, output } = event {
                    done.push((id, output));
                }
            }
        }
        done
    }

    fn reserved(&self) -> usize {
        self.active.iter().map(|a| a.reserved).sum()
    }

    fn admit(&mut self, events: &mut Vec<EngineEvent>) {
        let admitted = self.pop_admissible();
        if admitted.is_empty() {
            return;
        }
        let mut caches = vec![std::mem::replace(&mut self.cache, self.net.new_cache())];
        let groups = prefill::groups(&admitted);
        let mut admitted = admitted.into_iter();
        for group in groups {
            let seqs: Vec<Active> = admitted.by_ref().take(group.len()).collect();
            let rows: Vec<prefill::Row> = seqs.iter().map(|seq| prefill::Row { seq, tokens: &seq.request.prompt }).collect();
            let layers = state::union_of_prompt_layers(seqs.iter());
            let out = prefill::run(self.net, &rows, &layers);
            let mut kept = Vec::new();
            for (i, mut a) in seqs.into_iter().enumerate() {
                let row = i as i64;
                a.captures.record_prompt(&out.row_states(&a.captures.layers(), row));
                self.push_token(&mut a, &out.logits.get(row), events);
                if a.is_finished() {
                    self.finish_alone(a, out.cache.select(&[row]), events);
                } else {
                    kept.push(row);
                    self.active.push(a);
                }
            }
            if kept.len() == group.len() {
                caches.push(out.cache);
            } else if !kept.is_empty() {
                caches.push(out.cache.select(&kept));
            }
        }
        caches.retain(|c| !c.is_empty());
        self.cache = KvCache::merge(caches);
    }

    /// Takes waiting sequences from the front of the queue while the batch has room for them.
    fn pop_admissible(&mut self) -> Vec<Active> {
        let mut admitted: Vec<Active> = Vec::new();
        while let Some((_, req, _)) = self.waiting.front() {
            // Sequences admitted earlier in this loop are not yet in `active`: they count
            // against both limits too (without this, one step admitted the whole queue).
            let reserved = self.reserved() + admitted.iter().map(|a| a.reserved).sum::<usize>();
            let fits_tokens = reserved + req.reserved_positions() <= self.config.max_batch_tokens;
            if self.active.len() + admitted.len() >= self.config.max_batch_size || !fits_tokens {
                break;
            }
            let Some((id, req, queued_at)) = self.waiting.pop_front() else { break };
            let prefix_len = req.prefix.as_ref().map_or(0, Prefix::len);
            admitted.push(Active {
                id,
                reserved: req.reserved_positions(),
                rng: rand::rngs::StdRng::seed_from_u64(req.params.seed),
                next_position: prefix_len + req.prompt.len() as i64,
                prompt_len: req.prompt.len(),
                tokens: Vec::new(),
                stop_string_hit: false,
                captures: state::Captures::new(req.capture.clone()),
                started: queued_at,
                first_token: None,
                request: req,
            });
        }
        admitted
    }

    /// Samples the next token of `a` from its logits `[vocab]` and reports it.
    fn push_token(&self, a: &mut Active, logits: &Tensor, events: &mut Vec<EngineEvent>) {
        let token = pick_token(logits, &a.request.params, &mut a.rng);
        self.accept(a, token, events);
    }

    fn accept(&self, a: &mut Active, token: u32, events: &mut Vec<EngineEvent>) {
        a.accept(token);
        if let Some(tokenizer) = self.tokenizer {
            a.check_stop_strings(tokenizer);
        }
        events.push(EngineEvent::Token { id: a.id, token });
    }

    /// Phi3-style ropes change frequencies past the original context: such a sequence leaves
    /// the batch, is recomputed from scratch (which also yields its next token) and rejoins.
    fn recompute_invalidated(&mut self, events: &mut Vec<EngineEvent>) {
        let rows: Vec<usize> = (0..self.active.len())
            .filter(|&i| {
                let p = self.active[i].next_position;
                self.net.cache_invalidated(p - 1, p)
            })
            .collect();
        for i in rows.into_iter().rev() {
            let mut a = self.take_row(i);
            let all: Vec<u32> = a.request.prompt.iter().chain(&a.tokens).copied().collect();
            let layers = a.captures.generated_layers();
            let out = prefill::run(self.net, &[prefill::Row { seq: &a, tokens: &all }], &layers);
            a.captures.record_generated(&out.row_states(&layers, 0));
            a.next_position += 1;
            self.push_token(&mut a, &out.logits.get(0), events);
            let cache = out.cache;
            if a.is_finished() {
                self.finish_alone(a, cache, events);
            } else {
                self.active.push(a);
                let batch = std::mem::replace(&mut self.cache, self.net.new_cache());
                let mut caches = vec![batch, cache];
                caches.retain(|c| !c.is_empty());
                self.cache = KvCache::merge(caches);
            }
        }
    }

    fn decode(&mut self, events: &mut Vec<EngineEvent>) {
        let net = self.net;
        let layers = state::union_of_generated_layers(self.active.iter());
        let (ids, positions) = state::step_inputs(net, self.active.iter());
        let (hidden, states) = net.forward_embeds(&net.embed(&ids), &positions, &mut self.cache, &layers);
        let logits = net.logits(&hidden.squeeze_dim(1));
        let mut finished = Vec::new();
        let mut active = std::mem::take(&mut self.active);
        // Greedy rows take one argmax over the batch and one read to the host, not one per row
        // (on CUDA each read waits for the device); sampled rows draw from their own logits.
        let is_greedy = |a: &Active| a.request.params.temperature == 0.0;
        let argmax: Vec<i64> = if active.iter().any(is_greedy) {
            Vec::<i64>::try_from(&logits.argmax(-1, false)).unwrap_or_default()
        } else {
            Vec::new()
        };
        for (i, a) in active.iter_mut().enumerate() {
            a.captures.record_generated_row(&layers, &states, i as i64);
            a.next_position += 1;
            match argmax.get(i).filter(|_| is_greedy(a)) {
                Some(&token) => self.accept(a, token as u32, events),
                None => self.push_token(a, &logits.get(i as i64), events),
            }
            if a.is_finished() {
                finished.push(i);
            }
        }
        self.active = active;
        if finished.is_empty() {
            return;
        }
        // Sequences that want the state of their final token get one more (batched) step.
        let wants: Vec<usize> = finished.iter().copied().filter(|&i| self.active[i].captures.wants_final_state()).collect();
        if !wants.is_empty() {
            let rows: Vec<i64> = wants.iter().map(|&i| i as i64).collect();
            let mut cache = self.cache.select(&rows);
            let mut picked: Vec<&mut Active> = Vec::new();
            for (i, a) in self.active.iter_mut().enumerate() {
                if wants.contains(&i) {
                    picked.push(a);
                }
            }
            state::feed_final_tokens(net, &mut cache, &mut picked);
        }
        let outputs: Vec<Active> = self.remove_rows(&finished);
        for a in outputs {
            events.push(EngineEvent::Finished { id: a.id, output: a.into_output() });
        }
    }

    fn finish_alone(&self, mut a: Active, mut cache: KvCache, events: &mut Vec<EngineEvent>) {
        if a.captures.wants_final_state() {
            state::feed_final_tokens(self.net, &mut cache, &mut [&mut a]);
        }
        events.push(EngineEvent::Finished { id: a.id, output: a.into_output() });
    }

    fn take_row(&mut self, i: usize) -> Active {
        self.remove_rows(&[i]).pop().expect("row exists")
    }

    /// Removes rows `rows` (ascending) from the batch and returns their sequences.
    fn remove_rows(&mut self, rows: &[usize]) -> Vec<Active> {
        let keep: Vec<i64> = (0..self.active.len()).filter(|i| !rows.contains(i)).map(|i| i as i64).collect();
        self.cache = if keep.is_empty() { self.net.new_cache() } else { self.cache.select(&keep) };
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        for (i, a) in std::mem::take(&mut self.active).into_iter().enumerate() {
            if rows.contains(&i) {
                removed.push(a);
            } else {
                kept.push(a);
            }
        }
        self.active = kept;
        removed
    }
}

impl FinishReason {
    fn of(tokens: &[u32], params: &crate::generate::SamplingParams) -> Option<FinishReason> {
        match tokens.last() {
            Some(t) if params.stop_token_ids.contains(t) => Some(FinishReason::Stop),
            _ if tokens.len() >= params.max_new_tokens => Some(FinishReason::Length),
            _ => None,
        }
    }
}

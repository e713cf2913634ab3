//! One engine thread per model. The engine is not thread-safe and borrows the network, so a
//! dedicated thread owns the network and its `Engine`; calls reach it through a channel of
//! commands and get their tokens back through a per-call channel.
//!
//! The thread keeps a fair queue (round-robin across agents) in front of the engine and moves
//! requests into the batch while there is room (`max_batch_size` sequences, `max_batch_tokens`
//! positions). Between steps it drops sequences whose caller went away (the response channel is
//! closed: a cancelled or disconnected call) or whose deadline passed, which frees their batch rows
//! and KV cache at once.
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use tch::{Device, Kind};
use tokio::sync::mpsc::UnboundedSender;

use super::config::ModelConfig;
use super::fair::FairQueue;
use super::status::ServeError;
use crate::device::WeightFormat;
use crate::engine::{Engine, EngineConfig, EngineEvent, Prefix, SeqId, SequenceOutput, SequenceRequest};
use crate::generate::GenerateError;
use crate::loader::Model;
use crate::models::{ModelSpec, Transformer};
use crate::tokenizer::TextTokenizer;

/// One call's sequence on its way to the engine.
pub struct Job {
    pub agent: String,
    pub request: SequenceRequest,
    /// When the call arrived (timings are measured from here).
    pub received: Instant,
    pub deadline: Option<Instant>,
    pub events: UnboundedSender<JobEvent>,
}

/// What the engine thread tells a call.
pub enum JobEvent {
    Token(u32),
    /// `admitted`: when the sequence left the queue for the batch.
    Finished { output: SequenceOutput, admitted: Instant },
    Failed(ServeError),
}

enum Command {
    Submit(Box<Job>),
    Shutdown,
}

/// Requests waiting for the batch (including those still in the command channel) and running.
#[derive(Default)]
struct Load {
    queued: AtomicUsize,
    active: AtomicUsize,
}

/// A loaded model served by its engine thread. Agents on the model share it.
pub struct ModelHost {
    pub config: ModelConfig,
    pub source: PathBuf,
    pub spec: ModelSpec,
    pub device: Device,
    pub kind: Kind,
    pub weight_format: WeightFormat,
    pub tokenizer: Arc<TextTokenizer>,
    eos_token_ids: Vec<u32>,
    commands: Sender<Command>,
    load: Arc<Load>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ModelHost {
    /// Loads the model of `config` (blocking) and starts its engine thread.
    pub fn load(config: ModelConfig) -> Result<Self, ServeError> {
        let model = config.load_model()?;
        Self::start(config, model)
    }

    /// Starts the engine thread of an already loaded model.
    pub fn start(config: ModelConfig, model: Model) -> Result<Self, ServeError> {
        let Model { source, network, tokenizer, .. } = model;
        let spec = network.spec().clone();
        let (device, kind, weight_format) = (network.device(), network.kind(), network.weight_format());
        let eos_token_ids = tokenizer.eos_token_ids();
        let (commands, receiver) = crossbeam_channel::unbounded();
        let load = Arc::new(Load::default());
        let engine_config = config.engine_config();
        let thread_load = Arc::clone(&load);
        let tokenizer = Arc::new(tokenizer);
        let thread_tokenizer = Arc::clone(&tokenizer);
        let thread = std::thread::Builder::new()
            .name("tcomm-engine".into())
            .spawn(move || engine_thread(network, thread_tokenizer, engine_config, receiver, thread_load))
            .map_err(|e| ServeError::Internal(format!("cannot start the engine thread: {e}")))?;
        Ok(ModelHost {
            config,
            source,
            spec,
            device,
            kind,
            weight_format,
            tokenizer,
            eos_token_ids,
            commands,
            load,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    pub fn queue_depth(&self) -> usize {
        self.load.queued.load(Ordering::SeqCst)
    }

    pub fn active_sequences(&self) -> usize {
        self.load.active.load(Ordering::SeqCst)
    }

    /// Everything the engine would refuse, checked here so that a bad request never waits in the
    /// queue (the engine thread checks again when it adds the sequence).
    pub fn validate(&self, req: &SequenceRequest) -> Result<(), GenerateError> {
        let spec = &self.spec;
        let bad = |m: String| Err(GenerateError::BadParameter(m));
        req.params.validate()?;
        if req.prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if let Some(&id) = req.prompt.iter().find(|&&id| i64::from(id) >= spec.vocab_size) {
            return Err(GenerateError::TokenOutOfVocab { id, vocab: spec.vocab_size });
        }
        if let Some(&id) = req.params.stop_token_ids.iter().find(|&&id| i64::from(id) >= spec.vocab_size) {
            return bad(format!("stop token id {id} is outside the vocabulary (size {})", spec.vocab_size));
        }
        let max_new = req.params.max_new_tokens;
        if max_new == 0 {
            return bad(format!("max_new_tokens must be at least 1, got 0 (context: {} positions)", spec.max_position_embeddings));
        }
        let prefix_len = match &req.prefix {
            Some(Prefix::Embeddings(e)) => {
                let size = e.size();
                if size.len() != 2 || size[1] != spec.hidden_size || size[0] < 1 {
                    return Err(GenerateError::BadPrefix(format!(
                        "prefix_embeddings must have shape [m >= 1, {}] (hidden_size), got {size:?}",
                        spec.hidden_size
                    )));
                }
                size[0] as usize
            }
            Some(Prefix::KeyValues(_)) => return Err(GenerateError::BadPrefix("key/value prefixes are not served".into())),
            None => 0,
        };
        let context = spec.max_position_embeddings;
        if (prefix_len + req.prompt.len() + max_new) as i64 > context {
            return bad(format!(
                "prefix of {prefix_len} + prompt of {} tokens + max_new_tokens {max_new} = {} positions exceeds the context of {context}",
                req.prompt.len(),
                prefix_len + req.prompt.len() + max_new
            ));
        }
        if let Some(capture) = &req.capture {
            let max = spec.num_layers as usize;
            if capture.layers.is_empty() || capture.points.is_empty() {
                return Err(GenerateError::BadCapture("at least one layer and one point are needed".into()));
            }
            if let Some(l) = capture.layers.iter().find(|&&l| l > max) {
                return Err(GenerateError::BadCapture(format!("layer {l} does not exist (0..={max})")));
            }
        }
        let needed = req.reserved_positions();
        if needed > self.config.max_batch_tokens {
            return Err(GenerateError::OverBatchBudget { needed, limit: self.config.max_batch_tokens });
        }
        Ok(())
    }

    /// Queues a job, or refuses it at once when `max_queue` requests are already waiting.
    pub fn submit(&self, job: Job) -> Result<(), ServeError> {
        let limit = self.config.max_queue;
        let queued = &self.load.queued;
        if queued.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| (q < limit).then_some(q + 1)).is_err() {
            return Err(ServeError::QueueFull { model: self.config.name.clone(), limit });
        }
        if self.commands.send(Command::Submit(Box::new(job))).is_err() {
            queued.fetch_sub(1, Ordering::SeqCst);
            return Err(ServeError::Internal(format!("the engine of model '{}' has stopped", self.config.name)));
        }
        Ok(())
    }

    /// Stops the engine thread (calls still waiting get UNAVAILABLE) and waits for it.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for ModelHost {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}

struct Running {
    events: UnboundedSender<JobEvent>,
    deadline: Option<Instant>,
    received: Instant,
    admitted: Instant,
    reserved: usize,
}

struct Scheduler<'a> {
    net: &'a Transformer,
    tokenizer: &'a TextTokenizer,
    config: EngineConfig,
    engine: Engine<'a>,
    queue: FairQueue<Job>,
    running: HashMap<SeqId, Running>,
    load: Arc<Load>,
}

fn engine_thread(net: Transformer, tokenizer: Arc<TextTokenizer>, config: EngineConfig, commands: Receiver<Command>, load: Arc<Load>) {
    let mut s = Scheduler {
        net: &net,
        tokenizer: &tokenizer,
        config: config.clone(),
        engine: Engine::new(&net, config).with_tokenizer(&tokenizer),
        queue: FairQueue::default(),
        running: HashMap::new(),
        load,
    };
    loop {
        if s.queue.is_empty() && s.running.is_empty() {
            match commands.recv() {
                Ok(Command::Submit(job)) => s.enqueue(*job),
                Ok(Command::Shutdown) | Err(_) => break,
            }
        }
        let mut stop = false;
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Submit(job) => s.enqueue(*job),
                Command::Shutdown => stop = true,
            }
        }
        if stop {
            break;
        }
        s.drop_abandoned();
        s.admit();
        s.step();
    }
    s.fail_all(|| ServeError::ShuttingDown);
    while let Ok(Command::Submit(job)) = commands.try_recv() {
        let _ = job.events.send(JobEvent::Failed(ServeError::ShuttingDown));
    }
}

impl Scheduler<'_> {
    fn enqueue(&mut self, job: Job) {
        let agent = job.agent.clone();
        self.queue.push(&agent, job);
    }

    /// Frees the queue entries and batch rows of calls that are gone or past their deadline.
    fn drop_abandoned(&mut self) {
        let now = Instant::now();
        let expired = |deadline: Option<Instant>| deadline.is_some_and(|d| now >= d);
        let removed = self.queue.remove_where(|job| job.events.is_closed() || expired(job.deadline));
        for job in removed {
            self.load.queued.fetch_sub(1, Ordering::SeqCst);
            if expired(job.deadline) {
                let seconds = job.received.elapsed().as_secs_f64();
                let _ = job.events.send(JobEvent::Failed(ServeError::DeadlineExceeded { seconds }));
            }
        }
        let gone: Vec<SeqId> = self
            .running
            .iter()
            .filter(|(_, r)| r.events.is_closed() || expired(r.deadline))
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.engine.cancel(id);
            if let Some(r) = self.running.remove(&id) {
                self.load.active.fetch_sub(1, Ordering::SeqCst);
                tracing::debug!(id, "sequence dropped: caller gone or deadline passed");
                if expired(r.deadline) {
                    let seconds = r.received.elapsed().as_secs_f64();
                    let _ = r.events.send(JobEvent::Failed(ServeError::DeadlineExceeded { seconds }));
                }
            }
        }
    }

    /// Moves queued jobs into the batch, agents taking turns, while there is room.
    fn admit(&mut self) {
        while self.running.len() < self.config.max_batch_size {
            let reserved: usize = self.running.values().map(|r| r.reserved).sum();
            let budget = self.config.max_batch_tokens;
            let Some(job) = self.queue.pop_if(|job| reserved + job.request.reserved_positions() <= budget) else {
                break;
            };
            self.load.queued.fetch_sub(1, Ordering::SeqCst);
            let needed = job.request.reserved_positions();
            match self.engine.add(job.request) {
                Ok(id) => {
                    self.load.active.fetch_add(1, Ordering::SeqCst);
                    let running = Running {
                        events: job.events,
                        deadline: job.deadline,
                        received: job.received,
                        admitted: Instant::now(),
                        reserved: needed,
                    };
                    self.running.insert(id, running);
                }
                Err(e) => {
                    let _ = job.events.send(JobEvent::Failed(ServeError::Invalid(e)));
                }
            }
        }
    }

    /// One engine step; its tokens go to their calls. A panic inside libtorch (out of memory, a
    /// kernel error) fails the running calls and starts a fresh engine instead of killing the thread.
    fn step(&mut self) {
        if !self.engine.has_work() {
            return;
        }
        let events = match std::panic::catch_unwind(AssertUnwindSafe(|| self.engine.step())) {
            Ok(events) => events,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(%message, "engine step failed; running sequences are dropped");
                // The old engine may be inconsistent: replace it before failing the calls.
                self.engine = Engine::new(self.net, self.config.clone()).with_tokenizer(self.tokenizer);
                self.fail_all(|| ServeError::Internal(format!("engine step failed: {message}")));
                return;
            }
        };
        for event in events {
            match event {
                EngineEvent::Token { id, token } => {
                    if let Some(r) = self.running.get(&id) {
                        let _ = r.events.send(JobEvent::Token(token));
                    }
                }
                EngineEvent::Finished { id, output } => {
                    if let Some(r) = self.running.remove(&id) {
                        self.load.active.fetch_sub(1, Ordering::SeqCst);
                        let _ = r.events.send(JobEvent::Finished { output, admitted: r.admitted });
                    }
                }
            }
        }
    }

    /// Fails every running and queued call with `error()`.
    fn fail_all(&mut self, error: impl Fn() -> ServeError) {
        for (id, r) in self.running.drain() {
            self.engine.cancel(id);
            self.load.active.fetch_sub(1, Ordering::SeqCst);
            let _ = r.events.send(JobEvent::Failed(error()));
        }
        for job in self.queue.drain_all() {
            self.load.queued.fetch_sub(1, Ordering::SeqCst);
            let _ = job.events.send(JobEvent::Failed(error()));
        }
    }
}

//! One Generate / GenerateStream call: from the request to a validated engine sequence in the
//! model's queue, then from the engine's events to the response (or the stream of tokens).
use std::sync::Arc;
use std::time::Instant;

use proto::v1 as pb;
use proto::v1::generate_request::Input;
use tokio::sync::mpsc;
use tch::Tensor;
use tonic::Status;

use super::convert;
use super::scheduler::{Job, JobEvent, ModelHost};
use super::service::{Agent, RuntimeState};
use super::status::ServeError;
use super::thoughts::{KeptState, ThoughtStore};
use crate::engine::{CapturePoint, CaptureSpec, Prefix, SequenceOutput, SequenceRequest};
use crate::generate::FinishReason;
use crate::tokenizer::{ChatMessage, TextTokenizer};

/// A call whose sequence is queued: the events of its sequence arrive on `events`.
pub struct Started {
    host: Arc<ModelHost>,
    agent_id: String,
    prompt: Vec<u32>,
    prefix_len: usize,
    capture_layers: Vec<u32>,
    /// The capture points the caller asked for (a kept thought state may add one).
    capture_points: Vec<CapturePoint>,
    keep: Option<KeepState>,
    /// The reply fed instead of sampled (`forced_reply`).
    forced: Option<ForcedReply>,
    stop_strings: Vec<String>,
    received: Instant,
    deadline: Option<Instant>,
    events: mpsc::UnboundedReceiver<JobEvent>,
}

/// Where a call's kept thought state goes: the pipeline, its layer's row among the captured
/// layers, and the store.
struct KeepState {
    pipeline: String,
    model: String,
    row: i64,
    store: Arc<ThoughtStore>,
}

/// What a Generate call asks of thought communication: keep its state for a pipeline, and/or
/// start from a composed prefix. Resolved against the runtime before the call is queued.
pub struct ThoughtIo {
    /// The pipeline name and the layer it reads.
    keep: Option<(String, usize)>,
    prefix: Option<Tensor>,
    store: Arc<ThoughtStore>,
}

impl ThoughtIo {
    pub fn resolve(state: &RuntimeState, agent: &Agent, req: &pb::GenerateRequest) -> Result<Self, ServeError> {
        let keep = if req.thought_pipeline.is_empty() {
            None
        } else {
            let hosted = state.pipeline(&req.thought_pipeline)?;
            if !hosted.serves_model(&agent.model) {
                return Err(ServeError::BadRequest(format!(
                    "thought_pipeline '{}' serves agents on {:?}, not on '{}' (agent {})",
                    req.thought_pipeline, hosted.info.agent_models, agent.model, agent.id
                )));
            }
            Some((hosted.info.name.clone(), hosted.layer()))
        };
        let store = state.thought_store();
        let prefix = if req.prefix_id.is_empty() {
            None
        } else {
            if req.prefix_embeddings.is_some() {
                return Err(ServeError::BadRequest("set prefix_embeddings or prefix_id, not both".into()));
            }
            let (model, prefix) = store.prefix(&req.prefix_id)?;
            if model != agent.model {
                return Err(ServeError::BadRequest(format!(
                    "prefix_id '{}' was composed for model '{model}', but agent {} runs on '{}'",
                    req.prefix_id, agent.id, agent.model
                )));
            }
            Some(prefix)
        };
        Ok(ThoughtIo { keep, prefix, store })
    }
}

/// A reply fed after the prompt in its prefill instead of being sampled. The engine then
/// generates one token, which is dropped; its "last prompt token" is the reply's last token.
struct ForcedReply {
    ids: Vec<u32>,
    text: String,
    stopped: bool,
}

impl ForcedReply {
    fn resolve(host: &ModelHost, reply: &pb::ForcedReply) -> Result<Self, ServeError> {
        let mut ids = host.tokenizer.encode(&reply.text, false)?;
        if reply.stopped {
            let eos = host.eos_token_ids().first().ok_or_else(|| {
                ServeError::BadRequest(format!("forced_reply.stopped: model '{}' has no stop token", host.name()))
            })?;
            ids.push(*eos);
        }
        if ids.is_empty() {
            return Err(ServeError::BadRequest("forced_reply is empty: give its text or set stopped".into()));
        }
        Ok(ForcedReply { ids, text: reply.text.clone(), stopped: reply.stopped })
    }

    /// The engine's capture point of a reply's last token: the last prompt token when the reply
    /// was fed in the prefill, else the last generated token.
    fn reply_end(forced: Option<&ForcedReply>) -> CapturePoint {
        if forced.is_some() {
            CapturePoint::LastPromptToken
        } else {
            CapturePoint::LastGeneratedToken
        }
    }

    /// The engine's capture point that stands for the caller's `point` (only the reply's last
    /// token exists: it is the last token of the prefill).
    fn engine_point(point: CapturePoint) -> Result<CapturePoint, ServeError> {
        match point {
            CapturePoint::LastGeneratedToken => Ok(CapturePoint::LastPromptToken),
            other => Err(ServeError::BadRequest(format!(
                "hidden_states: {other:?} is not available with forced_reply (only the last generated token is)"
            ))),
        }
    }
}

/// The caller's capture, plus the reply's last token's state (engine point `reply_end`) at the
/// pipeline's layer when a thought state is kept. Returns the spec and the row of that layer.
fn capture_with_keep(user: Option<CaptureSpec>, keep: Option<usize>, reply_end: CapturePoint) -> (Option<CaptureSpec>, Option<i64>) {
    let Some(layer) = keep else { return (user, None) };
    let mut spec = user.unwrap_or(CaptureSpec { layers: Vec::new(), points: Vec::new() });
    let row = match spec.layers.iter().position(|&l| l == layer) {
        Some(row) => row,
        None => {
            spec.layers.push(layer);
            spec.layers.len() - 1
        }
    };
    if !spec.points.contains(&reply_end) {
        spec.points.push(reply_end);
    }
    (Some(spec), Some(row as i64))
}

/// The prompt's token ids: the chat template applied (with the agent's system prompt) unless the
/// call gives raw text or token ids.
fn prompt_ids(tok: &TextTokenizer, agent: &Agent, req: &pb::GenerateRequest) -> Result<Vec<u32>, ServeError> {
    let system = || (!agent.system_prompt.is_empty()).then(|| ChatMessage::new("system", agent.system_prompt.clone()));
    match &req.input {
        None => Err(ServeError::BadRequest("input is required: set prompt, messages or token_ids".into())),
        Some(Input::Prompt(p)) if p.trim().is_empty() => {
            Err(ServeError::BadRequest("prompt is empty: at least one non-blank character is needed".into()))
        }
        Some(Input::Prompt(p)) if req.raw => Ok(tok.encode(p, true)?),
        Some(Input::Prompt(p)) => {
            let messages: Vec<ChatMessage> = system().into_iter().chain([ChatMessage::new("user", p.clone())]).collect();
            Ok(tok.encode_chat(&messages)?)
        }
        Some(Input::Messages(m)) => {
            if m.messages.is_empty() {
                return Err(ServeError::BadRequest("messages is empty: at least one message is needed".into()));
            }
            let given = m.messages.iter().map(|m| ChatMessage::new(m.role.clone(), m.content.clone()));
            let has_system = m.messages.first().is_some_and(|m| m.role == "system");
            let messages: Vec<ChatMessage> = system().filter(|_| !has_system).into_iter().chain(given).collect();
            Ok(tok.encode_chat(&messages)?)
        }
        Some(Input::TokenIds(ids)) => Ok(ids.ids.clone()),
    }
}

/// Validates the call and queues its sequence on `host`.
pub fn start(
    host: Arc<ModelHost>,
    agent: Arc<Agent>,
    req: pb::GenerateRequest,
    thoughts: ThoughtIo,
    received: Instant,
    deadline: Option<Instant>,
) -> Result<Started, ServeError> {
    let prompt = prompt_ids(&host.tokenizer, &agent, &req)?;
    let forced = req.forced_reply.as_ref().map(|r| ForcedReply::resolve(&host, r)).transpose()?;
    let fed: Vec<u32> = prompt.iter().chain(forced.iter().flat_map(|f| &f.ids)).copied().collect();
    let prefix = match thoughts.prefix {
        Some(prefix) => Some(prefix),
        None => req.prefix_embeddings.as_ref().map(|t| convert::tensor_from_proto(t, "prefix_embeddings")).transpose()?,
    };
    let prefix_len = prefix.as_ref().and_then(|p| p.size().first().copied()).unwrap_or(0).max(0) as usize;
    let context = host.spec.max_position_embeddings.max(0) as usize;
    let room = context.saturating_sub(fed.len() + prefix_len);
    let mut sampling = convert::merge_sampling(Some(&agent.defaults), req.sampling.as_ref());
    if forced.is_some() {
        // One greedy token, dropped: the engine's sequence must generate at least one.
        sampling = pb::SamplingParams { max_new_tokens: Some(1), temperature: Some(0.0), stop_strings: Vec::new(), ..sampling };
    }
    let params = convert::sampling_params(&sampling, host.eos_token_ids(), room);
    let mut user_capture = req.hidden_states.as_ref().map(convert::capture_spec).transpose()?;
    if let (Some(spec), Some(_)) = (user_capture.as_mut(), &forced) {
        spec.points = spec.points.iter().map(|&p| ForcedReply::engine_point(p)).collect::<Result<_, _>>()?;
    }
    let capture_layers = req.hidden_states.as_ref().map(|h| h.layers.clone()).unwrap_or_default();
    let capture_points = user_capture.as_ref().map(|c| c.points.clone()).unwrap_or_default();
    if user_capture.as_ref().is_some_and(|c| c.layers.is_empty() || c.points.is_empty()) {
        return Err(crate::generate::GenerateError::BadCapture("at least one layer and one point are needed".into()).into());
    }
    let reply_end = ForcedReply::reply_end(forced.as_ref());
    let (capture, keep_row) = capture_with_keep(user_capture, thoughts.keep.as_ref().map(|(_, layer)| *layer), reply_end);
    let keep = thoughts.keep.zip(keep_row).map(|((pipeline, _), row)| KeepState {
        pipeline,
        model: agent.model.clone(),
        row,
        store: Arc::clone(&thoughts.store),
    });
    let stop_strings = params.stop_strings.clone();
    let request = SequenceRequest { prompt: fed, params, prefix: prefix.map(Prefix::Embeddings), capture };
    host.validate(&request)?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let job = Job { agent: agent.id.clone(), request, received, deadline, events: events_tx };
    host.submit(job)?;
    tracing::debug!(agent = %agent.id, prompt_tokens = prompt.len(), "queued");
    Ok(Started {
        host,
        agent_id: agent.id.clone(),
        prompt,
        prefix_len,
        capture_layers,
        capture_points,
        keep,
        forced,
        stop_strings,
        received,
        deadline,
        events,
    })
}

impl Started {
    /// The next event of the sequence, or DEADLINE_EXCEEDED once the deadline passes.
    async fn next_event(&mut self) -> Result<JobEvent, ServeError> {
        let event = match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), self.events.recv())
                .await
                .map_err(|_| ServeError::DeadlineExceeded { seconds: self.received.elapsed().as_secs_f64() })?,
            None => self.events.recv().await,
        };
        event.ok_or_else(|| ServeError::Internal(format!("the engine of model '{}' stopped", self.host.name())))
    }

    /// Waits for the whole result (dropping `self` early frees the sequence).
    pub async fn finish(&mut self) -> Result<pb::GenerateResponse, ServeError> {
        loop {
            match self.next_event().await? {
                JobEvent::Token(_) => {}
                JobEvent::Finished { output, admitted } => return self.response(output, admitted),
                JobEvent::Failed(e) => return Err(e),
            }
        }
    }

    /// Sends each token, then the result, to `tx`; stops (freeing the sequence) when the receiver
    /// is dropped, i.e. when the client cancels or disconnects.
    pub async fn stream_to(mut self, tx: mpsc::Sender<Result<pb::GenerateStreamResponse, Status>>) {
        let mut text = IncrementalText::default();
        let mut index = 0u32;
        loop {
            let event = tokio::select! {
                _ = tx.closed() => return,
                event = self.next_event() => event,
            };
            let message = match event {
                // A forced reply's one generated token is dropped; its tokens come in the result.
                Ok(JobEvent::Token(_)) if self.forced.is_some() => continue,
                Ok(JobEvent::Token(token_id)) => {
                    let piece = text.push(&self.host.tokenizer, token_id);
                    index += 1;
                    pb::GenerateStreamResponse {
                        event: Some(pb::generate_stream_response::Event::Token(pb::TokenEvent { index: index - 1, token_id, text: piece })),
                    }
                }
                Ok(JobEvent::Finished { output, admitted }) => {
                    let done = self.response(output, admitted).map(|r| pb::GenerateStreamResponse {
                        event: Some(pb::generate_stream_response::Event::Done(r)),
                    });
                    let _ = tx.send(done.map_err(Status::from)).await;
                    return;
                }
                Ok(JobEvent::Failed(e)) | Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            if tx.send(Ok(message)).await.is_err() {
                return;
            }
        }
    }

    fn response(&self, output: SequenceOutput, admitted: Instant) -> Result<pb::GenerateResponse, ServeError> {
        // What the caller sees as generated: the sampled tokens, or the forced reply as given.
        let (tokens, text, finish) = match &self.forced {
            Some(f) => {
                let finish = if f.stopped { FinishReason::Stop } else { FinishReason::Length };
                (f.ids.clone(), f.text.clone(), finish)
            }
            None => {
                let mut text = self
                    .host
                    .tokenizer
                    .decode(&output.tokens, true)
                    .map_err(|e| ServeError::Internal(format!("decoding the output: {e}")))?;
                if let Some(cut) = self.stop_strings.iter().filter_map(|stop| text.find(stop.as_str())).min() {
                    text.truncate(cut);
                }
                (output.tokens, text, output.finish)
            }
        };
        let reply_end = ForcedReply::reply_end(self.forced.as_ref());
        let queue = admitted.saturating_duration_since(self.received).as_secs_f64();
        let user_rows = self.capture_layers.len() as i64;
        let hidden_states = output
            .hidden_states
            .iter()
            .filter(|(point, _)| self.capture_points.contains(point))
            .map(|(point, states)| pb::HiddenStates {
                // With a forced reply the only point asked for is its last token.
                point: convert::capture_point_to_proto(if self.forced.is_some() { CapturePoint::LastGeneratedToken } else { *point }) as i32,
                layers: self.capture_layers.clone(),
                states: Some(convert::tensor_to_proto(&states.narrow(0, 0, user_rows))),
            })
            .collect();
        let thought_state_id = match &self.keep {
            None => String::new(),
            Some(keep) => {
                let (_, states) = output
                    .hidden_states
                    .iter()
                    .find(|(point, _)| *point == reply_end)
                    .ok_or_else(|| ServeError::Internal("the engine returned no state to keep".into()))?;
                let state = states.get(keep.row).copy();
                keep.store.keep_state(KeptState { pipeline: keep.pipeline.clone(), model: keep.model.clone(), state })?
            }
        };
        Ok(pb::GenerateResponse {
            agent_id: self.agent_id.clone(),
            model: self.host.name().to_string(),
            text,
            finish_reason: convert::finish_reason(finish) as i32,
            usage: Some(pb::Usage {
                prompt_tokens: self.prompt.len() as u32,
                completion_tokens: tokens.len() as u32,
                prefix_positions: self.prefix_len as u32,
            }),
            timing: Some(pb::Timing {
                queue_seconds: queue,
                time_to_first_token_seconds: queue + output.time_to_first_token.as_secs_f64(),
                total_seconds: self.received.elapsed().as_secs_f64(),
            }),
            hidden_states,
            prompt_token_ids: self.prompt.clone(),
            token_ids: tokens,
            thought_state_id,
        })
    }
}

/// Streams text as tokens arrive (text-generation-inference's scheme): decode a small window of
/// recent tokens and emit what it adds, holding back while a multi-byte character is incomplete.
#[derive(Default)]
struct IncrementalText {
    tokens: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalText {
    fn push(&mut self, tok: &TextTokenizer, token: u32) -> String {
        self.tokens.push(token);
        let prefix = tok.decode(&self.tokens[self.prefix_offset..self.read_offset], true).unwrap_or_default();
        let full = tok.decode(&self.tokens[self.prefix_offset..], true).unwrap_or_default();
        if full.len() <= prefix.len() || full.ends_with('\u{FFFD}') {
            return String::new();
        }
        let Some(piece) = full.get(prefix.len()..) else { return String::new() };
        self.prefix_offset = self.read_offset;
        self.read_offset = self.tokens.len();
        piece.to_string()
    }
}

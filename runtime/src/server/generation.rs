//! One Generate / GenerateStream call: from the request to a validated engine sequence in the
//! model's queue, then from the engine's events to the response (or the stream of tokens).
use std::sync::Arc;
use std::time::Instant;

use proto::v1 as pb;
use proto::v1::generate_request::Input;
use tokio::sync::mpsc;
use tonic::Status;

use super::convert;
use super::scheduler::{Job, JobEvent, ModelHost};
use super::service::Agent;
use super::status::ServeError;
use crate::engine::{Prefix, SequenceOutput, SequenceRequest};
use crate::tokenizer::{ChatMessage, TextTokenizer};

/// A call whose sequence is queued: the events of its sequence arrive on `events`.
pub struct Started {
    host: Arc<ModelHost>,
    agent_id: String,
    prompt: Vec<u32>,
    prefix_len: usize,
    capture_layers: Vec<u32>,
    stop_strings: Vec<String>,
    received: Instant,
    deadline: Option<Instant>,
    events: mpsc::UnboundedReceiver<JobEvent>,
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
    received: Instant,
    deadline: Option<Instant>,
) -> Result<Started, ServeError> {
    let prompt = prompt_ids(&host.tokenizer, &agent, &req)?;
    let prefix = req.prefix_embeddings.as_ref().map(|t| convert::tensor_from_proto(t, "prefix_embeddings")).transpose()?;
    let prefix_len = prefix.as_ref().and_then(|p| p.size().first().copied()).unwrap_or(0).max(0) as usize;
    let context = host.spec.max_position_embeddings.max(0) as usize;
    let room = context.saturating_sub(prompt.len() + prefix_len);
    let sampling = convert::merge_sampling(Some(&agent.defaults), req.sampling.as_ref());
    let params = convert::sampling_params(&sampling, host.eos_token_ids(), room);
    let capture = req.hidden_states.as_ref().map(convert::capture_spec).transpose()?;
    let capture_layers = req.hidden_states.as_ref().map(|h| h.layers.clone()).unwrap_or_default();
    let stop_strings = params.stop_strings.clone();
    let request = SequenceRequest { prompt: prompt.clone(), params, prefix: prefix.map(Prefix::Embeddings), capture };
    host.validate(&request)?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let job = Job { agent: agent.id.clone(), request, received, deadline, events: events_tx };
    host.submit(job)?;
    tracing::debug!(agent = %agent.id, prompt_tokens = prompt.len(), "queued");
    Ok(Started { host, agent_id: agent.id.clone(), prompt, prefix_len, capture_layers, stop_strings, received, deadline, events })
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
        let mut text = self
            .host
            .tokenizer
            .decode(&output.tokens, true)
            .map_err(|e| ServeError::Internal(format!("decoding the output: {e}")))?;
        if let Some(cut) = self.stop_strings.iter().filter_map(|stop| text.find(stop.as_str())).min() {
            text.truncate(cut);
        }
        let queue = admitted.saturating_duration_since(self.received).as_secs_f64();
        let hidden_states = output
            .hidden_states
            .iter()
            .map(|(point, states)| pb::HiddenStates {
                point: convert::capture_point_to_proto(*point) as i32,
                layers: self.capture_layers.clone(),
                states: Some(convert::tensor_to_proto(states)),
            })
            .collect();
        Ok(pb::GenerateResponse {
            agent_id: self.agent_id.clone(),
            model: self.host.name().to_string(),
            text,
            finish_reason: convert::finish_reason(output.finish) as i32,
            usage: Some(pb::Usage {
                prompt_tokens: output.prompt_tokens as u32,
                completion_tokens: output.tokens.len() as u32,
                prefix_positions: self.prefix_len as u32,
            }),
            timing: Some(pb::Timing {
                queue_seconds: queue,
                time_to_first_token_seconds: queue + output.time_to_first_token.as_secs_f64(),
                total_seconds: self.received.elapsed().as_secs_f64(),
            }),
            hidden_states,
            prompt_token_ids: self.prompt.clone(),
            token_ids: output.tokens,
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

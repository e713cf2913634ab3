//! Debate modes over the runtime: `single` (one agent, one answer), `self-consistency` (N
//! independent samples, majority vote) and `text` debate (Du et al. 2023: N agents answer alone,
//! then in each later round every agent sees the others' latest responses and answers again; the
//! final answer is the majority of the last round), and `thoughtcomm` (text debate in which, before
//! each later round, the runtime turns the agents' hidden states into latent thoughts and gives
//! each agent a prefix made from the thoughts routed to it; see `thoughts`). All agents of a round
//! are sent at once so the runtime batches them; several problems run concurrently for fuller
//! batches.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use proto::v1;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::answer::{self, Grader};
use proto::client::RuntimeClient;
use crate::dataset::Problem;
use crate::metrics;
use crate::prompts;
use crate::results::{AgentTurn, ProblemResult};
use crate::states::RoundStates;
use crate::thoughts::{self, ThoughtRoundRecord, ThoughtsConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Single,
    SelfConsistency,
    Text,
    #[serde(rename = "thoughtcomm")]
    ThoughtComm,
}

impl Mode {
    /// Modes with several rounds in which agents see each other.
    pub fn debates(self) -> bool {
        matches!(self, Mode::Text | Mode::ThoughtComm)
    }
}

/// One agent of a debate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentConfig {
    pub model: String,
    /// System prompt; empty for none.
    pub role: String,
    pub temperature: f64,
    pub top_p: f64,
    /// The compute dtype the runtime reported for the model (f32, bf16, f16): it changes the
    /// numbers, so a rerun must match it. Absent where the runtime did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// How the runtime stores the model's weights (dense, int8), for the same reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
}

/// The version of `config.json` that this code writes. 1 (no `format` key): before the
/// runtime reported each model's weight format, when every model was stored dense.
pub const CONFIG_FORMAT: u32 = 2;

/// Everything that defines a run (written to config.json; a rerun must match it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DebateConfig {
    /// See [`CONFIG_FORMAT`]; lets a stored config be read as what it meant when it was written.
    pub format: u32,
    pub mode: Mode,
    /// A dataset name (gsm8k, math, math500) or a user JSONL path.
    pub dataset: String,
    /// How answers are extracted and compared.
    pub grader: Grader,
    pub split: String,
    /// Datasets (names) whose evaluation problems were left out before `limit`: a training run
    /// on MATH `test_dev` leaves out MATH-500, which the MATH comparison is evaluated on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    pub limit: Option<usize>,
    pub agents: Vec<AgentConfig>,
    pub rounds: usize,
    pub max_new_tokens: u32,
    pub seed: u64,
    /// Save each agent's hidden state per round at this layer (transformers numbering).
    pub save_states_layer: Option<u32>,
    /// ThoughtComm mode's pipeline and ablations (absent for the other modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thoughts: Option<ThoughtsConfig>,
    /// Text debate only: the run (folder, as given) whose first round this run takes instead of
    /// generating its own, so that two arms share round 1 and differ only by what comes after.
    /// Sampling cannot give that: batch composition changes the logits' last bits, and with a
    /// temperature the same seed then draws other tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_round_from: Option<String>,
}

impl DebateConfig {
    pub fn is_math(&self) -> bool {
        self.grader == Grader::Math
    }

    /// What differs between this run and `source` that shapes a first-round turn (empty when
    /// `source`'s first round can stand for this run's). The source's thoughts do not count:
    /// they first act in round 2.
    pub fn first_round_mismatch(&self, source: &DebateConfig) -> Vec<&'static str> {
        let mut differ = Vec::new();
        if !source.mode.debates() {
            differ.push("mode (the source must be a text or thoughtcomm debate)");
        }
        let checks = [
            ("dataset", self.dataset == source.dataset),
            ("split", self.split == source.split),
            ("grader", self.grader == source.grader),
            ("agents", self.agents == source.agents),
            ("max_new_tokens", self.max_new_tokens == source.max_new_tokens),
            ("seed", self.seed == source.seed),
        ];
        differ.extend(checks.iter().filter(|(_, same)| !same).map(|(key, _)| *key));
        differ
    }
}

/// Brings a stored config.json to [`CONFIG_FORMAT`], filling in only what was certain when it was
/// written, so that a run started by older code still resumes. A format-1 agent without `weights`
/// was dense: no other format existed. Newer configs are left as they are: there an absent field
/// means the runtime did not say, which must not be guessed.
pub fn upgrade_stored_config(config: &mut serde_json::Value) {
    let Some(object) = config.as_object_mut() else { return };
    if object.contains_key("format") {
        return;
    }
    if let Some(agents) = object.get_mut("agents").and_then(|a| a.as_array_mut()) {
        for agent in agents.iter_mut().filter_map(|a| a.as_object_mut()) {
            agent.entry("weights").or_insert_with(|| "dense".into());
        }
    }
    object.insert("format".into(), CONFIG_FORMAT.into());
}

#[derive(Debug, thiserror::Error)]
pub enum DebateError {
    #[error("runtime: {0}")]
    Runtime(#[from] tonic::Status),
    #[error("problem {id}: {message}")]
    Problem { id: String, message: String },
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Config(String),
}

/// A debate bound to a runtime: one runtime agent per configured agent.
pub struct Debate {
    config: Arc<DebateConfig>,
    client: RuntimeClient,
    agent_ids: Arc<Vec<String>>,
    /// Problem id -> the first-round turns taken from `config.first_round_from`.
    first_rounds: Arc<HashMap<String, Vec<AgentTurn>>>,
}

impl Debate {
    /// Creates the agents; in ThoughtComm mode first checks that the pipeline fits them.
    pub async fn new(mut client: RuntimeClient, config: DebateConfig) -> Result<Self, DebateError> {
        match (&config.thoughts, config.mode) {
            (Some(t), Mode::ThoughtComm) => {
                thoughts::check_pipeline(&mut client, t, &config.agents).await?;
            }
            (None, Mode::ThoughtComm) => return Err(DebateError::Config("thoughtcomm mode needs a thought pipeline".into())),
            (Some(_), _) => return Err(DebateError::Config("a thought pipeline is only used in thoughtcomm mode".into())),
            (None, _) => {}
        }
        let mut agent_ids = Vec::new();
        for agent in &config.agents {
            agent_ids.push(client.create_agent(&agent.model, &agent.role, None).await?.id);
        }
        Ok(Debate { config: Arc::new(config), client, agent_ids: Arc::new(agent_ids), first_rounds: Arc::default() })
    }

    /// The first-round turns of `config.first_round_from`, by problem id (every problem run must
    /// have them). A thoughtcomm debate recomputes their hidden states by feeding each recorded
    /// response to its agent (teacher forcing, `ForcedReply`); saved states are not offered.
    pub fn with_first_rounds(mut self, rounds: HashMap<String, Vec<AgentTurn>>) -> Result<Self, DebateError> {
        let config = &self.config;
        if config.first_round_from.is_none() || !config.mode.debates() || config.save_states_layer.is_some() {
            return Err(DebateError::Config(
                "only a text or thoughtcomm debate with first_round_from set and no saved states takes its first round from another run".into(),
            ));
        }
        let n = config.agents.len();
        for (id, turns) in &rounds {
            if turns.len() != n || turns.iter().enumerate().any(|(a, t)| t.agent != a) {
                return Err(DebateError::Problem { id: id.clone(), message: format!("the given first round is not one turn for each of the {n} agents in order") });
            }
        }
        self.first_rounds = Arc::new(rounds);
        Ok(self)
    }

    /// Runs `problems` (skipping ids in `done`), `parallel` problems at a time, handing each
    /// result (with its states, when saved) to `on_result` as soon as it is complete.
    pub async fn run(
        &self,
        problems: &[Problem],
        done: &HashSet<String>,
        parallel: usize,
        mut on_result: impl FnMut(ProblemResult, Option<RoundStates>) -> Result<(), DebateError>,
    ) -> Result<(), DebateError> {
        let mut pending = problems.iter().filter(|p| !done.contains(&p.id)).cloned();
        let mut tasks = JoinSet::new();
        loop {
            while tasks.len() < parallel.max(1) {
                let Some(problem) = pending.next() else { break };
                let (config, client, ids) = (self.config.clone(), self.client.clone(), self.agent_ids.clone());
                let first_round = self.first_rounds.get(&problem.id).cloned();
                tasks.spawn(async move { solve(&config, client, &ids, problem, first_round).await });
            }
            let Some(joined) = tasks.join_next().await else { break };
            let (result, states) = joined.map_err(|e| DebateError::Io(format!("debate task failed: {e}")))??;
            on_result(result, states)?;
        }
        Ok(())
    }
}

/// A stable per-turn seed: the same problem, round and agent always sample the same way,
/// whatever the order or concurrency of the run.
fn turn_seed(base: u64, problem_id: &str, round: usize, agent: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ base;
    for b in problem_id.bytes().chain((round as u64).to_le_bytes()).chain((agent as u64).to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

async fn solve(
    config: &DebateConfig,
    client: RuntimeClient,
    agent_ids: &[String],
    problem: Problem,
    first_round: Option<Vec<AgentTurn>>,
) -> Result<(ProblemResult, Option<RoundStates>), DebateError> {
    if config.first_round_from.is_some() && first_round.is_none() {
        return Err(DebateError::Problem { id: problem.id, message: "not in the run the first round is taken from".into() });
    }
    let start = Instant::now();
    let math = config.is_math();
    let n = agent_ids.len();
    let rounds = if config.mode.debates() { config.rounds.max(1) } else { 1 };
    let thought_config = config.thoughts.as_ref().filter(|_| config.mode == Mode::ThoughtComm);
    let mut prefix_ids: Vec<String> = vec![String::new(); n];
    let mut thought_rounds: Vec<ThoughtRoundRecord> = Vec::new();
    let show_text = thought_config.is_none_or(|t| t.show_text);
    let mut turns: Vec<Vec<AgentTurn>> = Vec::new();
    let mut states = config.save_states_layer.map(|layer| RoundStates::new(&problem.id, layer));
    // A given first round stands as recorded; in thoughtcomm mode it is fed back (replayed) to
    // get the states its thoughts come from.
    let mut given = first_round;
    if thought_config.is_none() {
        turns.extend(given.take());
    }
    for round in turns.len()..rounds {
        let round_start = Instant::now();
        let replay = given.take();
        let responses: Vec<Vec<String>> = turns.iter().map(|r| r.iter().map(|t| t.response.clone()).collect()).collect();
        let mut calls = JoinSet::new();
        for a in 0..n {
            let agent = &config.agents[a];
            let messages = prompts::conversation(&problem.question, math, &responses, a, show_text)
                .into_iter()
                .map(|(role, content)| v1::ChatMessage { role: role.into(), content })
                .collect();
            let request = v1::GenerateRequest {
                agent_id: agent_ids[a].clone(),
                input: Some(v1::generate_request::Input::Messages(v1::ChatMessages { messages })),
                raw: false,
                sampling: Some(v1::SamplingParams {
                    max_new_tokens: Some(config.max_new_tokens),
                    temperature: Some(agent.temperature),
                    top_k: None,
                    top_p: Some(agent.top_p),
                    seed: Some(turn_seed(config.seed, &problem.id, round, a)),
                    stop_token_ids: None,
                    stop_strings: Vec::new(),
                }),
                hidden_states: config.save_states_layer.map(|layer| v1::HiddenStatesRequest {
                    layers: vec![layer],
                    points: vec![v1::CapturePoint::LastGeneratedToken as i32],
                }),
                prefix_embeddings: None,
                // The last round's states feed nothing; keeping one costs an extra decode step.
                thought_pipeline: thought_config.filter(|_| round + 1 < rounds).map(|t| t.pipeline.clone()).unwrap_or_default(),
                prefix_id: std::mem::take(&mut prefix_ids[a]),
                forced_reply: replay.as_ref().map(|turns| v1::ForcedReply {
                    text: turns[a].response.clone(),
                    stopped: turns[a].ended_on_stop(config.max_new_tokens as usize),
                }),
            };
            let mut client = client.clone();
            calls.spawn(async move { (a, client.generate(request).await) });
        }
        let mut replies: Vec<Option<v1::GenerateResponse>> = vec![None; n];
        while let Some(joined) = calls.join_next().await {
            let (a, reply) = joined.map_err(|e| DebateError::Io(format!("generate task failed: {e}")))?;
            replies[a] = Some(reply?);
        }
        let round_s = round_start.elapsed().as_secs_f64();
        let mut round_turns = Vec::with_capacity(n);
        let mut state_ids = Vec::with_capacity(n);
        let mut retokenized = 0;
        for (a, reply) in replies.into_iter().enumerate() {
            let reply = reply.ok_or_else(|| DebateError::Problem { id: problem.id.clone(), message: format!("agent {a} got no reply") })?;
            state_ids.push(reply.thought_state_id.clone());
            if let Some(turns) = &replay {
                let fed = reply.usage.as_ref().map_or(0, |u| u.completion_tokens as usize);
                retokenized += usize::from(fed != turns[a].tokens);
                round_turns.push(turns[a].clone());
                continue;
            }
            if let Some(states) = states.as_mut() {
                states.add(round, a, &reply).map_err(|message| DebateError::Problem { id: problem.id.clone(), message })?;
            }
            let checked = answer::check(config.grader, &reply.text, &problem.gold);
            round_turns.push(AgentTurn {
                agent: a,
                answer: checked.answer,
                correct: checked.correct,
                tokens: reply.usage.as_ref().map_or(0, |u| u.completion_tokens as usize),
                prompt_tokens: reply.usage.as_ref().map_or(0, |u| u.prompt_tokens as usize),
                stopped: Some(reply.finish_reason == v1::FinishReason::Stop as i32),
                response: reply.text,
            });
        }
        turns.push(round_turns);
        if let Some(t) = thought_config.filter(|_| round + 1 < rounds) {
            let seed = turn_seed(config.seed, &problem.id, round, n);
            let (ids, mut record) = thoughts::compose(&mut client.clone(), t, state_ids, seed, round, round_s).await?;
            record.replayed_retokenized = replay.is_some().then_some(retokenized);
            prefix_ids = ids;
            thought_rounds.push(record);
        }
    }
    let equal = config.grader.equal();
    let consensus: Vec<f64> = turns
        .iter()
        .map(|round| {
            let answers: Vec<Option<String>> = round.iter().map(|t| t.answer.clone()).collect();
            metrics::consensus(&answers, equal)
        })
        .collect();
    let last: Vec<Option<String>> = turns.last().map(|r| r.iter().map(|t| t.answer.clone()).collect()).unwrap_or_default();
    let final_answer = answer::majority(&last, equal);
    let correct = final_answer.as_deref().is_some_and(|f| equal(f, &problem.gold));
    let result = ProblemResult {
        id: problem.id,
        question: problem.question,
        gold: problem.gold,
        final_answer,
        correct,
        rounds: turns,
        consensus,
        wall_time_s: start.elapsed().as_secs_f64(),
        thoughts: thought_config
            .map(|t| serde_json::json!({ "pipeline": t.pipeline, "rounds": thought_rounds })),
    };
    Ok((result, states))
}

#[cfg(test)]
mod tests {
    use super::turn_seed;

    #[test]
    fn turn_seeds_differ_by_problem_round_and_agent_and_are_stable() {
        let s = turn_seed(7, "gsm8k/dev/3", 1, 2);
        assert_eq!(s, turn_seed(7, "gsm8k/dev/3", 1, 2));
        assert_ne!(s, turn_seed(7, "gsm8k/dev/3", 1, 1));
        assert_ne!(s, turn_seed(7, "gsm8k/dev/3", 0, 2));
        assert_ne!(s, turn_seed(7, "gsm8k/dev/4", 1, 2));
        assert_ne!(s, turn_seed(8, "gsm8k/dev/3", 1, 2));
    }
}

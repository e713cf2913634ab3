//! ThoughtComm mode on the agents' side: which pipeline and ablations a debate uses, the checks
//! done before any generation, the ComposeThoughts call between rounds, and the per-round
//! `thoughts` record of the results. Only ids cross the wire; the states stay in the runtime.
use std::time::Instant;

use proto::client::RuntimeClient;
use proto::v1;
use serde::{Deserialize, Serialize};

use crate::debate::{AgentConfig, DebateError};

/// Which thoughts reach an agent (see `thoughtcomm::Routing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoutingMode {
    /// Each agent gets the thoughts that affect its own state (the paper).
    #[default]
    Routed,
    /// Ablation: all thoughts to all agents.
    All,
}

/// The agreement weights applied to routed thoughts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgreementMode {
    /// As the pipeline's adapters were trained (learned by default).
    #[default]
    Trained,
    /// w[alpha] = alpha / n.
    Fixed,
    /// Ablation: no reweighting.
    None,
}

/// The ThoughtComm part of a debate's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThoughtsConfig {
    /// The pipeline's name in the runtime.
    pub pipeline: String,
    /// A digest of the pipeline's manifest and checkpoint files, so that a resumed run refuses a
    /// pipeline retrained (or trained further) since it started instead of mixing two.
    #[serde(default)]
    pub checkpoints: String,
    /// Later rounds also show the other agents' responses as text (the prefix comes on top);
    /// false: the prefix replaces them.
    pub show_text: bool,
    pub routing: RoutingMode,
    pub agreement: AgreementMode,
    /// Ablation: routed random latents of the routed thoughts' norm instead of the extracted thoughts.
    pub random_latents: bool,
}

impl ThoughtsConfig {
    /// The settings that depart from the paper's method (routed thoughts, trained agreement
    /// weights, extracted latents, text shown), in words, for reports; empty for the method itself.
    pub fn ablations(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.routing == RoutingMode::All {
            out.push("all thoughts to all agents");
        }
        match self.agreement {
            AgreementMode::Trained => {}
            AgreementMode::Fixed => out.push("fixed agreement weights alpha/n"),
            AgreementMode::None => out.push("no agreement reweighting"),
        }
        if self.random_latents {
            out.push("random latents of the routed thoughts' norm");
        }
        if !self.show_text {
            out.push("other agents' text hidden");
        }
        out
    }
}

/// One agent's share of a round's thoughts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentThoughtRecord {
    pub shared: u32,
    pub private: u32,
    pub agreement_weights: Vec<f64>,
    pub prefix_norm: f64,
    /// Norm of the routed thoughts in the adapter's standardized units (about
    /// `expected_thought_norm` on training-like states); absent in records written before it existed.
    #[serde(default)]
    pub thought_norm: Option<f64>,
    /// The thought norm on training-like states: sqrt of the sum of the routed thoughts' squared
    /// agreement weights; absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_thought_norm: Option<f64>,
}

/// The thoughts composed after round `after_round` for the next one, and where the time went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThoughtRoundRecord {
    pub after_round: usize,
    pub agents: Vec<AgentThoughtRecord>,
    /// Mean pairwise cosine of the agents' states (None when their sizes differ).
    pub state_cosine: Option<f64>,
    pub encode_s: f64,
    pub route_s: f64,
    pub inject_s: f64,
    /// The whole ComposeThoughts call as the client saw it (the three above plus the RPC).
    pub compose_s: f64,
    /// Wall time of the round's generation, for the overhead of thought communication.
    pub round_s: f64,
    /// Set when the round was recorded in another run and fed back to get its states: how many
    /// agents' responses tokenized anew to another token count than they were generated with
    /// (their states are those of the new tokenization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_retokenized: Option<usize>,
}

/// Checks, before anything is generated, that the pipeline is loaded and fits the debate's agents.
pub async fn check_pipeline(client: &mut RuntimeClient, config: &ThoughtsConfig, agents: &[AgentConfig]) -> Result<v1::ThoughtPipelineInfo, DebateError> {
    let info = client.thought_pipeline(&config.pipeline).await?.ok_or_else(|| {
        DebateError::Config(format!("thought pipeline '{}' is not loaded in the runtime", config.pipeline))
    })?;
    if info.agent_models.len() != agents.len() {
        return Err(DebateError::Config(format!(
            "thought pipeline '{}' was trained for {} agents, the debate has {}",
            config.pipeline,
            info.agent_models.len(),
            agents.len()
        )));
    }
    for (i, (agent, model)) in agents.iter().zip(&info.agent_models).enumerate() {
        if &agent.model != model {
            return Err(DebateError::Config(format!(
                "agent {i} runs on '{}' but thought pipeline '{}' was trained with '{model}' for that agent",
                agent.model, config.pipeline
            )));
        }
    }
    Ok(info)
}

/// Composes the next round's prefixes from this round's kept states; returns the prefix ids
/// (one per agent) and the record.
pub async fn compose(
    client: &mut RuntimeClient,
    config: &ThoughtsConfig,
    state_ids: Vec<String>,
    seed: u64,
    after_round: usize,
    round_s: f64,
) -> Result<(Vec<String>, ThoughtRoundRecord), DebateError> {
    let request = v1::ComposeThoughtsRequest {
        pipeline: config.pipeline.clone(),
        state_ids,
        routing: match config.routing {
            RoutingMode::Routed => v1::ThoughtRouting::Routed,
            RoutingMode::All => v1::ThoughtRouting::All,
        } as i32,
        agreement: match config.agreement {
            AgreementMode::Trained => v1::AgreementWeights::Unspecified,
            AgreementMode::Fixed => v1::AgreementWeights::Fixed,
            AgreementMode::None => v1::AgreementWeights::None,
        } as i32,
        random_latents: config.random_latents,
        seed,
    };
    let agents = request.state_ids.len();
    let start = Instant::now();
    let reply = client.compose_thoughts(request).await?;
    let compose_s = start.elapsed().as_secs_f64();
    if reply.agents.len() != agents {
        return Err(DebateError::Config(format!(
            "ComposeThoughts answered for {} agents, {agents} were asked for",
            reply.agents.len()
        )));
    }
    let ids = reply.agents.iter().map(|a| a.prefix_id.clone()).collect();
    let record = ThoughtRoundRecord {
        after_round,
        agents: reply
            .agents
            .iter()
            .map(|a| AgentThoughtRecord {
                shared: a.shared_thoughts,
                private: a.private_thoughts,
                agreement_weights: a.agreement_weights.clone(),
                prefix_norm: a.prefix_norm,
                thought_norm: Some(a.thought_norm),
                expected_thought_norm: Some(a.expected_thought_norm),
            })
            .collect(),
        state_cosine: reply.state_cosine.is_finite().then_some(reply.state_cosine),
        encode_s: reply.encode_seconds,
        route_s: reply.route_seconds,
        inject_s: reply.inject_seconds,
        compose_s,
        round_s,
        replayed_retokenized: None,
    };
    Ok((ids, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ablations_name_each_departure_from_the_method() {
        let method = ThoughtsConfig {
            pipeline: "p".into(),
            checkpoints: String::new(),
            show_text: true,
            routing: RoutingMode::Routed,
            agreement: AgreementMode::Trained,
            random_latents: false,
        };
        assert!(method.ablations().is_empty());
        let random = ThoughtsConfig { random_latents: true, ..method.clone() };
        assert_eq!(random.ablations(), ["random latents of the routed thoughts' norm"]);
        let all = ThoughtsConfig { routing: RoutingMode::All, agreement: AgreementMode::None, show_text: false, ..method };
        assert_eq!(all.ablations(), ["all thoughts to all agents", "no agreement reweighting", "other agents' text hidden"]);
    }
}

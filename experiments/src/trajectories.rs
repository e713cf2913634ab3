//! A finished debate run read back as training data for ThoughtComm: its configuration, results
//! and the hidden states saved with `--save-states` (`<run>/states/<problem>.safetensors`, one
//! `[hidden]` tensor `round{r}.agent{a}` per turn).
use std::path::Path;

use agents::debate::DebateConfig;
use agents::results::{read_config, read_results, ProblemResult};
use anyhow::{bail, Context};
use tch::{Kind, Tensor};
use thoughtcomm::AgentStates;

pub struct Trajectories {
    pub config: DebateConfig,
    pub layer: u32,
    /// Problems with states, and `states[p][r][a]` (`[hidden]` f32) for each.
    pub problems: Vec<ProblemResult>,
    pub states: Vec<Vec<Vec<Tensor>>>,
}

impl Trajectories {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let config: DebateConfig = serde_json::from_value(read_config(dir)?)
            .with_context(|| format!("{}: config.json is not a debate run's config", dir.display()))?;
        let Some(layer) = config.save_states_layer else {
            bail!("{}: the run saved no hidden states (rerun `tcomm debate` with --save-states)", dir.display());
        };
        let results = read_results(dir)?;
        if results.is_empty() {
            bail!("{}: the run has no results", dir.display());
        }
        let n = config.agents.len();
        let (mut problems, mut states) = (Vec::new(), Vec::new());
        for result in results {
            let path = dir.join(agents::states::STATES_DIR).join(agents::states::file_name(&result.id));
            if !path.exists() {
                tracing::warn!(problem = %result.id, "no saved states; skipped");
                continue;
            }
            let named = Tensor::read_safetensors(&path).with_context(|| format!("{}: cannot read the states", path.display()))?;
            if let Some(r) = result.rounds.iter().position(|round| round.len() != n) {
                bail!("{}: problem {} has {} turns in round {r}, the run has {n} agents", dir.display(), result.id, result.rounds[r].len());
            }
            let rounds = result.rounds.len();
            let mut per_round = Vec::with_capacity(rounds);
            for r in 0..rounds {
                let mut agents = Vec::with_capacity(n);
                for a in 0..n {
                    let key = format!("round{r}.agent{a}");
                    let t = named.iter().find(|(k, _)| *k == key).map(|(_, t)| t.to_kind(Kind::Float));
                    let t = t.with_context(|| format!("{}: no tensor '{key}'", path.display()))?;
                    if t.dim() != 1 {
                        bail!("{}: '{key}' has shape {:?}, expected [hidden]", path.display(), t.size());
                    }
                    agents.push(t);
                }
                per_round.push(agents);
            }
            problems.push(result);
            states.push(per_round);
        }
        if problems.is_empty() {
            bail!("{}: no problem has saved states under {}/", dir.display(), agents::states::STATES_DIR);
        }
        Ok(Trajectories { config, layer, problems, states })
    }

    /// Every (problem, round) as one sample of H = [h_1 .. h_n]; checks that each agent's state
    /// has one size throughout and that no value is NaN or Inf.
    pub fn agent_states(&self) -> anyhow::Result<AgentStates> {
        let n = self.config.agents.len();
        let mut blocks: Vec<Vec<Tensor>> = (0..n).map(|_| Vec::new()).collect();
        for (p, rounds) in self.states.iter().enumerate() {
            for (r, agents) in rounds.iter().enumerate() {
                for (a, h) in agents.iter().enumerate() {
                    let first = blocks[a].first().map(|f: &Tensor| f.size()[0]);
                    if let Some(d) = first.filter(|&d| d != h.size()[0]) {
                        bail!("problem {}: round {r} agent {a} has a state of size {} but earlier ones have {d}", self.problems[p].id, h.size()[0]);
                    }
                    blocks[a].push(h.shallow_clone());
                }
            }
        }
        let blocks: Vec<Tensor> = blocks.iter().map(|b| Tensor::stack(b, 0)).collect();
        Ok(AgentStates::from_blocks(&blocks)?)
    }

    /// Round r's states of problem p as one sample.
    pub fn round_states(&self, p: usize, r: usize) -> anyhow::Result<AgentStates> {
        let rows: Vec<Tensor> = self.states[p][r].iter().map(|h| h.unsqueeze(0)).collect();
        Ok(AgentStates::from_blocks(&rows)?)
    }
}

//! A finished debate run read back as training data for ThoughtComm: its configuration, results
//! and the hidden states saved with `--save-states` (`<run>/states/<problem>.safetensors`, one
//! `[hidden]` tensor `round{r}.agent{a}` per turn).
use std::collections::HashMap;
use std::path::Path;

use agents::dataset::{self, Dataset, Problem};
use agents::debate::DebateConfig;
use agents::results::{read_debate_config, read_results, ProblemResult};
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
        let config = read_debate_config(dir)?;
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

    /// Fills in the questions of an archived run (`results/README.md`: archives blank them so
    /// that no dataset text lands in the repository) from the run's dataset, matched by id, and
    /// checks each restored problem's gold answer against the one recorded.
    pub fn restore_questions(&mut self, data_dir: Option<&Path>) -> anyhow::Result<()> {
        if self.problems.iter().all(|p| !p.question.is_empty()) {
            return Ok(());
        }
        let dataset: Dataset = self.config.dataset.parse().with_context(|| {
            format!("the run's questions are blank (an archived run) and its dataset '{}' is not a named one to restore them from", self.config.dataset)
        })?;
        let source: HashMap<String, Problem> = dataset::load(data_dir, dataset, &self.config.split)?.into_iter().map(|p| (p.id.clone(), p)).collect();
        for problem in self.problems.iter_mut().filter(|p| p.question.is_empty()) {
            let Some(original) = source.get(&problem.id) else {
                bail!("problem {} of the run is not in {dataset}/{}", problem.id, self.config.split);
            };
            if original.gold != problem.gold {
                bail!("problem {}: the run's gold answer '{}' is not the dataset's '{}' (another version of the data?)", problem.id, problem.gold, original.gold);
            }
            problem.question = original.question.clone();
        }
        Ok(())
    }

    /// Round r's states of problem p as one sample.
    pub fn round_states(&self, p: usize, r: usize) -> anyhow::Result<AgentStates> {
        let rows: Vec<Tensor> = self.states[p][r].iter().map(|h| h.unsqueeze(0)).collect();
        Ok(AgentStates::from_blocks(&rows)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A run of `questions` (blank where archived) on gsm8k/train, without states.
    fn run(questions: &[(&str, &str, &str)]) -> Trajectories {
        let agent = json!({"model": "m", "role": "", "temperature": 0.7, "top_p": 0.95});
        let config = json!({"format": 2, "mode": "text", "dataset": "gsm8k", "grader": "gsm8k", "split": "train", "limit": null,
            "agents": [agent], "rounds": 1, "max_new_tokens": 8, "seed": 0, "save_states_layer": 2});
        let problems = questions
            .iter()
            .map(|(id, q, gold)| {
                serde_json::from_value(json!({"id": id, "question": q, "gold": gold, "final_answer": null, "correct": false, "rounds": []})).unwrap()
            })
            .collect();
        Trajectories { config: serde_json::from_value(config).unwrap(), layer: 2, problems, states: Vec::new() }
    }

    fn data_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("gsm8k")).unwrap();
        let rows = [json!({"question": "Q zero", "answer": "so #### 4"}), json!({"question": "Q one", "answer": "so #### 1,200"})];
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(dir.path().join("gsm8k/train.jsonl"), text).unwrap();
        dir
    }

    #[test]
    fn blank_questions_are_restored_from_the_dataset_by_id() {
        let data = data_dir();
        let mut archived = run(&[("gsm8k/train/1", "", "1200"), ("gsm8k/train/0", "kept as written", "4")]);
        archived.restore_questions(Some(data.path())).unwrap();
        let questions: Vec<&str> = archived.problems.iter().map(|p| p.question.as_str()).collect();
        assert_eq!(questions, ["Q one", "kept as written"]);
    }

    #[test]
    fn a_restore_that_does_not_fit_the_dataset_is_refused() {
        let data = data_dir();
        let err = run(&[("gsm8k/train/7", "", "4")]).restore_questions(Some(data.path())).unwrap_err();
        assert!(err.to_string().contains("gsm8k/train/7 of the run is not in gsm8k/train"), "{err:#}");
        let err = run(&[("gsm8k/train/0", "", "5")]).restore_questions(Some(data.path())).unwrap_err();
        assert!(err.to_string().contains("gold answer '5' is not the dataset's '4'"), "{err:#}");
    }
}

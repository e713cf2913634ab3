//! The files of a run: `config.json` (what was run) and `results.jsonl` (one line per problem,
//! appended and fsynced as each problem finishes), so that a run killed at any moment resumes
//! where it stopped and loses nothing.
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const CONFIG_FILE: &str = "config.json";
pub const RESULTS_FILE: &str = "results.jsonl";

/// Config keys that may change between a run and its resumption (more problems, say).
const RESUMABLE_KEYS: &[&str] = &["limit"];

/// One agent's turn in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentTurn {
    pub agent: usize,
    pub response: String,
    /// The extracted answer; `None` when none could be parsed (counted as wrong).
    pub answer: Option<String>,
    pub correct: bool,
    /// Tokens generated for this turn.
    pub tokens: usize,
    /// Tokens of the prompt this turn saw (grows with rounds).
    #[serde(default)]
    pub prompt_tokens: usize,
    /// Whether generation ended on a stop token (rather than the token budget); `None` in
    /// results written before it was recorded. A replay feeds the stop token back when true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<bool>,
}

impl AgentTurn {
    /// Whether the turn ended on a stop token; for older results, inferred from its length
    /// (debates set no stop strings, so a turn shorter than the budget stopped on a token).
    pub fn ended_on_stop(&self, max_new_tokens: usize) -> bool {
        self.stopped.unwrap_or(self.tokens < max_new_tokens)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemResult {
    pub id: String,
    pub question: String,
    pub gold: String,
    /// Majority answer of the last round.
    pub final_answer: Option<String>,
    pub correct: bool,
    /// `rounds[r][a]` is agent `a` in round `r`.
    pub rounds: Vec<Vec<AgentTurn>>,
    /// Per round: the fraction of agents whose answer equals the round's majority answer.
    #[serde(default)]
    pub consensus: Vec<f64>,
    #[serde(default)]
    pub wall_time_s: f64,
    /// Mode-specific records (ThoughtComm's per-round thoughts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thoughts: Option<serde_json::Value>,
}

impl ProblemResult {
    pub fn tokens(&self) -> usize {
        self.rounds.iter().flatten().map(|t| t.tokens).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}:{line}: malformed result line: {message}")]
    Malformed { path: PathBuf, line: usize, message: String },
    #[error(
        "{path} holds a run with a different configuration (differs in: {keys}); use another --out folder or delete it"
    )]
    ConfigMismatch { path: PathBuf, keys: String },
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> RunError {
    RunError::Io { path: path.to_path_buf(), message: e.to_string() }
}

/// An open run folder that results are appended to.
pub struct RunWriter {
    path: PathBuf,
    file: File,
}

impl RunWriter {
    /// Creates `dir` (or resumes it when its config matches) and returns the results so far.
    pub fn open(dir: &Path, config: &serde_json::Value) -> Result<(RunWriter, Vec<ProblemResult>), RunError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let config_path = dir.join(CONFIG_FILE);
        if config_path.exists() {
            let previous = read_config(dir)?;
            let keys = differing_keys(&previous, config);
            if !keys.is_empty() {
                return Err(RunError::ConfigMismatch { path: dir.to_path_buf(), keys: keys.join(", ") });
            }
        }
        // The config is rewritten (atomically) so a resumed run records its latest limit.
        write_atomic(&config_path, &serde_json::to_vec_pretty(config).map_err(|e| io_err(&config_path, e))?)?;
        let path = dir.join(RESULTS_FILE);
        let done = read_results_repairing(&path)?;
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io_err(&path, e))?;
        Ok((RunWriter { path, file }, done))
    }

    /// Appends one problem's result and forces it to disk.
    pub fn append(&mut self, result: &ProblemResult) -> Result<(), RunError> {
        let mut line = serde_json::to_string(result).map_err(|e| io_err(&self.path, e))?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(|e| io_err(&self.path, e))?;
        self.file.sync_data().map_err(|e| io_err(&self.path, e))
    }
}

/// Reads a run's config.json, brought to the current format (see `upgrade_stored_config`).
pub fn read_config(dir: &Path) -> Result<serde_json::Value, RunError> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    let mut config = serde_json::from_str(&text).map_err(|e| io_err(&path, format!("invalid JSON: {e}")))?;
    crate::debate::upgrade_stored_config(&mut config);
    Ok(config)
}

/// Reads a run's config.json as the debate configuration it records.
pub fn read_debate_config(dir: &Path) -> Result<crate::debate::DebateConfig, RunError> {
    serde_json::from_value(read_config(dir)?)
        .map_err(|e| io_err(&dir.join(CONFIG_FILE), format!("not a debate run's config: {e}")))
}

/// Reads a run's results (a last line cut off by a kill is ignored).
pub fn read_results(dir: &Path) -> Result<Vec<ProblemResult>, RunError> {
    let path = dir.join(RESULTS_FILE);
    Ok(parse_results(&path)?.0)
}

/// Parses results; returns them and the byte length of the complete lines.
fn parse_results(path: &Path) -> Result<(Vec<ProblemResult>, u64), RunError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(io_err(path, e)),
    };
    let mut reader = BufReader::new(file);
    let mut results = Vec::new();
    let mut good_bytes = 0u64;
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        number += 1;
        if !line.ends_with('\n') {
            // Killed while writing: the partial line was never acknowledged, drop it.
            break;
        }
        if !line.trim().is_empty() {
            let result = serde_json::from_str(&line)
                .map_err(|e| RunError::Malformed { path: path.to_path_buf(), line: number, message: e.to_string() })?;
            results.push(result);
        }
        good_bytes += n as u64;
    }
    Ok((results, good_bytes))
}

fn read_results_repairing(path: &Path) -> Result<Vec<ProblemResult>, RunError> {
    let (results, good_bytes) = parse_results(path)?;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.len() > good_bytes {
            let file = OpenOptions::new().write(true).open(path).map_err(|e| io_err(path, e))?;
            file.set_len(good_bytes).map_err(|e| io_err(path, e))?;
            file.sync_all().map_err(|e| io_err(path, e))?;
        }
    }
    Ok(results)
}

fn differing_keys(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (a.as_object().unwrap_or(&empty), b.as_object().unwrap_or(&empty));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| !RESUMABLE_KEYS.contains(&k.as_str()) && a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    file.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
    file.sync_all().map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(format: Option<u32>, weights: Option<&str>) -> serde_json::Value {
        let mut agent = json!({"model": "m", "role": "", "temperature": 0.7, "top_p": 0.95, "dtype": "bf16"});
        if let Some(w) = weights {
            agent["weights"] = w.into();
        }
        let mut c = json!({"mode": "text", "limit": 10, "rounds": 2, "agents": [agent.clone(), agent]});
        if let Some(f) = format {
            c["format"] = f.into();
        }
        c
    }

    fn store(dir: &Path, config: &serde_json::Value) {
        std::fs::write(dir.join(CONFIG_FILE), serde_json::to_vec(config).unwrap()).unwrap();
    }

    #[test]
    fn a_format_1_run_resumes_as_dense_and_only_as_dense() {
        let current = |w| config(Some(crate::debate::CONFIG_FORMAT), Some(w));
        let tmp = tempfile::tempdir().unwrap();
        store(tmp.path(), &config(None, None));
        assert!(RunWriter::open(tmp.path(), &current("int8")).is_err(), "format 1 meant dense, not int8");
        let (_, done) = RunWriter::open(tmp.path(), &current("dense")).expect("format 1 without weights is dense");
        assert!(done.is_empty());
        // The rewritten config is the current format and names the weights.
        assert_eq!(read_config(tmp.path()).unwrap(), current("dense"));
    }

    #[test]
    fn a_current_config_without_weights_is_not_guessed() {
        let tmp = tempfile::tempdir().unwrap();
        store(tmp.path(), &config(Some(crate::debate::CONFIG_FORMAT), None));
        match RunWriter::open(tmp.path(), &config(Some(crate::debate::CONFIG_FORMAT), Some("dense"))) {
            Err(RunError::ConfigMismatch { keys, .. }) => assert_eq!(keys, "agents"),
            other => panic!("expected a mismatch in agents, got {:?}", other.map(|(_, d)| d.len())),
        }
    }
}

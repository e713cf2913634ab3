//! Benchmark problems: GSM8K and MATH from the shared data directory, or any JSONL file.
//!
//! Layout under the data directory (see `shared/data/*/README.md`), `(dataset, split)` -> file:
//!
//! | dataset   | split      | file                      | gold answer                           |
//! |-----------|------------|---------------------------|---------------------------------------|
//! | `gsm8k`   | `train`    | `gsm8k/train.jsonl`       | after the last `####`, commas removed |
//! | `gsm8k`   | `dev`      | `gsm8k/dev.jsonl`         | same                                  |
//! | `math`    | `test_dev` | `math/test_dev.jsonl`     | last `\boxed{}` of `solution`         |
//! | `math500` | `dev`      | `math/math500_dev.jsonl`  | `answer` field                        |
//!
//! i.e. `gsm8k/{split}.jsonl`, `math/{split}.jsonl` and `math/math500_{split}.jsonl`.
//! Problem ids are `"{dataset}/{split}/{row}"` with `row` the 0-based index among the file's
//! non-blank lines, so they are stable as long as the file is.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::answer::extract_boxed;

/// Environment variable naming the data directory.
pub const DATA_ENV: &str = "TCOMM_DATA";

const LAYOUT: &str = "gsm8k/{train,dev}.jsonl, math/test_dev.jsonl, math/math500_dev.jsonl";

/// One benchmark problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable id, e.g. `"gsm8k/dev/17"`; paired comparisons match runs on it.
    pub id: String,
    pub question: String,
    /// The reference answer, already extracted (`"18"`, `"\frac{9}{7}"`).
    pub gold: String,
    /// MATH subject (`"Algebra"`, ...).
    pub subject: Option<String>,
    /// MATH difficulty as a bare digit, `"1"` to `"5"` (the files spell it `"Level 3"` or `3`).
    pub level: Option<String>,
}

/// A benchmark with a known layout in the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    Gsm8k,
    /// The full MATH test split minus held-out problems (split `test_dev`).
    Math,
    /// The MATH-500 subset minus held-out problems (split `dev`).
    Math500,
}

impl Dataset {
    pub const ALL: [Dataset; 3] = [Dataset::Gsm8k, Dataset::Math, Dataset::Math500];

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Gsm8k => "gsm8k",
            Dataset::Math => "math",
            Dataset::Math500 => "math500",
        }
    }

    /// The evaluation split shipped in the shared data directory.
    pub fn default_split(self) -> &'static str {
        match self {
            Dataset::Gsm8k | Dataset::Math500 => "dev",
            Dataset::Math => "test_dev",
        }
    }

    /// The file of `split`, relative to the data directory.
    pub fn relative_path(self, split: &str) -> PathBuf {
        match self {
            Dataset::Gsm8k => PathBuf::from(format!("gsm8k/{split}.jsonl")),
            Dataset::Math => PathBuf::from(format!("math/{split}.jsonl")),
            Dataset::Math500 => PathBuf::from(format!("math/math500_{split}.jsonl")),
        }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dataset {
    type Err = DatasetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dataset::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| DatasetError::UnknownDataset(s.to_string()))
    }
}

/// How the gold answer is read from a JSONL field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerFormat {
    /// A GSM8K solution: the text after the last `####`, commas removed.
    Gsm8k,
    /// A MATH solution: the content of its last `\boxed{}`.
    Math,
    /// The field is the answer itself (trimmed; numbers are written as JSON writes them).
    Plain,
}

impl FromStr for AnswerFormat {
    type Err = DatasetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "gsm8k" => Ok(AnswerFormat::Gsm8k),
            "math" => Ok(AnswerFormat::Math),
            "plain" => Ok(AnswerFormat::Plain),
            _ => Err(DatasetError::UnknownAnswerFormat(s.to_string())),
        }
    }
}

/// Everything that can go wrong while finding and reading problems.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(
        "no data directory found (tried: {}); pass one explicitly or set {DATA_ENV}; \
         expected layout: {LAYOUT}",
        .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoDataDir { tried: Vec<PathBuf> },
    #[error(
        "dataset file {} not found; the data directory should hold {LAYOUT} (set {DATA_ENV} to point elsewhere)",
        .path.display()
    )]
    MissingFile { path: PathBuf },
    #[error("cannot read {}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: malformed JSON line: {source}", .path.display())]
    MalformedLine { path: PathBuf, line: usize, source: serde_json::Error },
    #[error("{}:{line}: missing field `{field}`", .path.display())]
    MissingField { path: PathBuf, line: usize, field: String },
    #[error("{}:{line}: field `{field}` is {found}, expected a string or a number", .path.display())]
    BadField { path: PathBuf, line: usize, field: String, found: &'static str },
    #[error("{}:{line}: no gold answer: {reason}", .path.display())]
    NoGold { path: PathBuf, line: usize, reason: &'static str },
    #[error("unknown dataset `{0}` (expected gsm8k, math or math500)")]
    UnknownDataset(String),
    #[error("unknown answer format `{0}` (expected gsm8k, math or plain)")]
    UnknownAnswerFormat(String),
}

/// Finds the data directory: `explicit` > `$TCOMM_DATA` > `./../shared/data` (relative to the
/// current directory) > `../../shared/data` relative to this crate's manifest.
///
/// An explicit or environment path is returned even if it does not exist, so that the error names
/// the path the user chose; the two fallbacks are used only if they exist.
pub fn resolve_data_dir(explicit: Option<&Path>) -> Result<PathBuf, DatasetError> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let tried = vec![PathBuf::from("../shared/data"), Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")];
    match tried.iter().find(|dir| dir.is_dir()) {
        Some(dir) => Ok(dir.clone()),
        None => Err(DatasetError::NoDataDir { tried }),
    }
}

/// Loads every problem of `dataset`'s `split` (see the module docs for the names).
/// `data_dir: None` resolves it with [`resolve_data_dir`].
pub fn load(data_dir: Option<&Path>, dataset: Dataset, split: &str) -> Result<Vec<Problem>, DatasetError> {
    let path = resolve_data_dir(data_dir)?.join(dataset.relative_path(split));
    let prefix = format!("{dataset}/{split}");
    match dataset {
        Dataset::Gsm8k => read_problems(&path, &prefix, "question", "answer", AnswerFormat::Gsm8k),
        // MATH-500 rows carry the answer; the full test split only has the solution.
        Dataset::Math500 => read_problems(&path, &prefix, "problem", "answer", AnswerFormat::Plain),
        Dataset::Math => read_problems(&path, &prefix, "problem", "solution", AnswerFormat::Math),
    }
}

/// Loads a user JSONL file, taking the question and the answer from the named fields.
/// Ids are `"{file stem}/{row}"`; `subject`/`type` and `level` fields are kept when present.
pub fn load_jsonl(
    path: &Path,
    question_field: &str,
    answer_field: &str,
    answer_format: AnswerFormat,
) -> Result<Vec<Problem>, DatasetError> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    read_problems(path, &stem, question_field, answer_field, answer_format)
}

/// A subset of `problems`: the first `limit` by default, or `limit` drawn uniformly at random
/// when `shuffle_seed` is given (the same seed gives the same subset for a fixed `rand` version,
/// which Cargo.lock pins). `limit: None` keeps them all (shuffled if seeded).
pub fn sample(mut problems: Vec<Problem>, limit: Option<usize>, shuffle_seed: Option<u64>) -> Vec<Problem> {
    if let Some(seed) = shuffle_seed {
        problems.shuffle(&mut StdRng::seed_from_u64(seed));
    }
    if let Some(limit) = limit {
        problems.truncate(limit);
    }
    problems
}

/// `problems` without those whose question is also one of `excluded`'s (compared with whitespace
/// runs collapsed), and how many were left out. MATH-500 is a subset of the MATH test split, so a
/// thought pipeline trained on MATH `test_dev` must leave MATH-500 out to be evaluated on it.
pub fn without(problems: Vec<Problem>, excluded: &[Problem]) -> (Vec<Problem>, usize) {
    let key = |q: &str| q.split_whitespace().collect::<Vec<_>>().join(" ");
    let excluded: std::collections::HashSet<String> = excluded.iter().map(|p| key(&p.question)).collect();
    let before = problems.len();
    let kept: Vec<Problem> = problems.into_iter().filter(|p| !excluded.contains(&key(&p.question))).collect();
    let dropped = before - kept.len();
    (kept, dropped)
}

fn read_problems(
    path: &Path,
    id_prefix: &str,
    question_field: &str,
    answer_field: &str,
    format: AnswerFormat,
) -> Result<Vec<Problem>, DatasetError> {
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DatasetError::MissingFile { path: path.to_path_buf() },
        _ => DatasetError::Io { path: path.to_path_buf(), source },
    })?;
    let mut problems = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let row = Row { path, line: index + 1, fields: parse_object(path, index + 1, raw)? };
        let answer = row.field(answer_field)?;
        problems.push(Problem {
            id: format!("{id_prefix}/{}", problems.len()),
            question: row.field(question_field)?,
            gold: row.gold(&answer, format)?,
            subject: row.optional(&["subject", "type"])?,
            level: row.optional(&["level"])?.map(|level| level.trim_start_matches("Level ").to_string()),
        });
    }
    Ok(problems)
}

fn parse_object(path: &Path, line: usize, raw: &str) -> Result<Map<String, Value>, DatasetError> {
    serde_json::from_str(raw).map_err(|source| DatasetError::MalformedLine { path: path.to_path_buf(), line, source })
}

/// One parsed line, kept with its location for error messages.
struct Row<'a> {
    path: &'a Path,
    line: usize,
    fields: Map<String, Value>,
}

impl Row<'_> {
    fn field(&self, name: &str) -> Result<String, DatasetError> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Err(DatasetError::MissingField {
                path: self.path.to_path_buf(),
                line: self.line,
                field: name.to_string(),
            }),
            Some(value) => self.text(name, value),
        }
    }

    /// The first of `names` that is present and not null.
    fn optional(&self, names: &[&str]) -> Result<Option<String>, DatasetError> {
        let found = names.iter().find_map(|name| Some((*name, self.fields.get(*name).filter(|v| !v.is_null())?)));
        found.map(|(name, value)| self.text(name, value)).transpose()
    }

    fn text(&self, name: &str, value: &Value) -> Result<String, DatasetError> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(DatasetError::BadField {
                path: self.path.to_path_buf(),
                line: self.line,
                field: name.to_string(),
                found: match other {
                    Value::Bool(_) => "a boolean",
                    Value::Array(_) => "an array",
                    _ => "an object",
                },
            }),
        }
    }

    fn gold(&self, answer: &str, format: AnswerFormat) -> Result<String, DatasetError> {
        let no_gold = |reason| DatasetError::NoGold { path: self.path.to_path_buf(), line: self.line, reason };
        let gold = match format {
            // The GSM8K README's recipe: answer.split("####")[-1].strip().replace(",", "").
            AnswerFormat::Gsm8k => match answer.rsplit_once("####") {
                Some((_, tail)) => tail.trim().replace(',', ""),
                None => return Err(no_gold("the answer has no `####` line")),
            },
            AnswerFormat::Math => {
                extract_boxed(answer).ok_or_else(|| no_gold("the solution has no complete \\boxed{...}"))?
            }
            AnswerFormat::Plain => answer.trim().to_string(),
        };
        if gold.is_empty() {
            return Err(no_gold("the answer is empty"));
        }
        Ok(gold)
    }
}

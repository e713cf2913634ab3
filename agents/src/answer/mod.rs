//! Answer extraction and checking for GSM8K (numbers) and MATH (LaTeX strings).
//!
//! Both graders work on one response at a time and never fail: an answer that cannot be found is
//! `None`, which counts as wrong and is also counted separately (see [`crate::metrics::Summary`]).

mod gsm8k;
mod math;
mod number;

use serde::{Deserialize, Serialize};

pub use gsm8k::{extract_gsm8k, gsm8k_equal, normalize_gsm8k};
pub use math::{math_equal, normalize_math};

use crate::dataset::Dataset;

/// How a response is turned into an answer and compared with the gold answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grader {
    /// Numeric answers: [`extract_gsm8k`] + [`gsm8k_equal`].
    Gsm8k,
    /// LaTeX answers: [`extract_boxed`] + [`math_equal`] (Hendrycks' `is_equiv`).
    Math,
}

impl Grader {
    /// Pulls this grader's answer out of a model response.
    pub fn extract(self, response: &str) -> Option<String> {
        match self {
            Grader::Gsm8k => extract_gsm8k(response),
            Grader::Math => extract_boxed(response),
        }
    }

    /// The equivalence used for grading, for majority votes and for consensus.
    pub fn equal(self) -> fn(&str, &str) -> bool {
        match self {
            Grader::Gsm8k => gsm8k_equal,
            Grader::Math => math_equal,
        }
    }
}

impl From<Dataset> for Grader {
    fn from(dataset: Dataset) -> Self {
        match dataset {
            Dataset::Gsm8k => Grader::Gsm8k,
            Dataset::Math | Dataset::Math500 => Grader::Math,
        }
    }
}

/// The outcome of grading one response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    /// The extracted answer; `None` when the response has none (counted as wrong).
    pub answer: Option<String>,
    pub correct: bool,
}

/// Extracts the answer from `response` and compares it with `gold`.
///
/// `grader` is a [`Grader`] or a [`Dataset`], e.g. `check(Dataset::Gsm8k, response, "18")`.
pub fn check(grader: impl Into<Grader>, response: &str, gold: &str) -> Checked {
    let grader = grader.into();
    let answer = grader.extract(response);
    let correct = answer.as_deref().is_some_and(|a| (grader.equal())(a, gold));
    Checked { answer, correct }
}

/// Majority vote over the agents' answers, grouping answers that `equal` deems equivalent.
///
/// `None` answers never vote. Each group is represented by its first member, so equivalent
/// spellings (`"1/2"`, `"\frac12"`) pool their votes; a tie goes to the group whose first member
/// came from the earliest agent. Returns `None` when no agent produced an answer.
pub fn majority<F>(answers: &[Option<String>], equal: F) -> Option<String>
where
    F: Fn(&str, &str) -> bool,
{
    let groups = group_answers(answers, &equal);
    // Groups are in order of first appearance; `>` (not `>=`) keeps the earliest on ties.
    let mut best: Option<(&str, usize)> = None;
    for (representative, votes) in groups {
        if best.is_none_or(|(_, most)| votes > most) {
            best = Some((representative, votes));
        }
    }
    best.map(|(representative, _)| representative.to_string())
}

/// Groups equivalent answers: `(first member, size)` in order of first appearance.
pub(crate) fn group_answers<'a, F>(answers: &'a [Option<String>], equal: &F) -> Vec<(&'a str, usize)>
where
    F: Fn(&str, &str) -> bool,
{
    let mut groups: Vec<(&str, usize)> = Vec::new();
    for answer in answers.iter().flatten() {
        match groups.iter_mut().find(|(rep, _)| equal(rep, answer)) {
            Some((_, votes)) => *votes += 1,
            None => groups.push((answer.as_str(), 1)),
        }
    }
    groups
}

/// The content of the last `\boxed{...}` or `\fbox{...}` in `text`, with balanced braces.
///
/// Like Hendrycks' `last_boxed_only_string` + `remove_boxed`, the last box wins (earlier ones are
/// usually intermediate results) and an unclosed last box (a truncated response) yields `None`.
/// Unlike it, whitespace before the brace is allowed and the brace-less `\boxed 5` form (as in
/// Minerva's prompts) is read up to the next whitespace or `$`. An empty box yields `None`.
pub fn extract_boxed(text: &str) -> Option<String> {
    let (start, command) = ["\\boxed", "\\fbox"]
        .iter()
        .filter_map(|command| text.rfind(command).map(|at| (at, *command)))
        .max_by_key(|(at, _)| *at)?;
    let after = &text[start + command.len()..];
    let rest = after.trim_start();
    let content = if rest.starts_with('{') {
        braced(rest)?.0
    } else if rest.len() < after.len() {
        rest.split(|c: char| c.is_whitespace() || c == '$').next().unwrap_or_default()
    } else {
        return None;
    };
    let content = content.trim();
    (!content.is_empty()).then(|| content.to_string())
}

/// Splits `text`, which must start with `{`, into the content of that brace group and the text
/// after its matching `}`. `None` if the group is not closed.
pub(crate) fn braced(text: &str) -> Option<(&str, &str)> {
    if !text.starts_with('{') {
        return None;
    }
    let mut depth = 0usize;
    // Braces are ASCII, so byte offsets found here are always char boundaries.
    for (at, byte) in text.bytes().enumerate() {
        match byte {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&text[1..at], &text[at + 1..]));
                }
            }
            _ => {}
        }
    }
    None
}

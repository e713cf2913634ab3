//! Evaluation metrics: accuracy with a Wilson interval, agent consensus, and McNemar's exact
//! test for two runs over the same problems.

use std::collections::HashMap;

use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};

use crate::answer::{group_answers, Checked};

/// The two-sided 95% normal quantile, `Phi^-1(0.975)`.
pub const Z95: f64 = 1.959_963_984_540_054;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("problem {problem} has {found} rounds, but problem 0 has {expected}; consensus needs one round count")]
    RaggedRounds { problem: usize, expected: usize, found: usize },
    #[error("problem id `{0}` appears twice in one run")]
    DuplicateId(String),
    #[error(
        "the runs cover different problems: {only_a} ids only in run A, {only_b} only in run B (e.g. `{example}`)"
    )]
    IdMismatch { only_a: usize, only_b: usize, example: String },
}

/// Fraction of `true`; 0 for no problems.
pub fn accuracy(correct: &[bool]) -> f64 {
    if correct.is_empty() {
        return 0.0;
    }
    correct.iter().filter(|c| **c).count() as f64 / correct.len() as f64
}

/// Wilson score interval for `successes / total` at normal quantile `z` (use [`Z95`]).
///
/// Chosen over the normal approximation because it stays inside [0, 1] and keeps its coverage
/// at the small sizes and extreme accuracies of quick runs. `total == 0` gives `(0, 1)`.
pub fn wilson_interval(successes: usize, total: usize, z: f64) -> (f64, f64) {
    if total == 0 {
        return (0.0, 1.0);
    }
    let n = total as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// Fraction of agents whose answer is equivalent to the majority answer
/// ([`crate::answer::majority`]). `None` answers never agree; no answers at all gives 0.
pub fn consensus<F>(answers: &[Option<String>], equal: F) -> f64
where
    F: Fn(&str, &str) -> bool,
{
    // The majority is the largest group, so its size is the number of agreeing agents.
    let largest = group_answers(answers, &equal).into_iter().map(|(_, votes)| votes).max();
    match largest {
        Some(votes) if !answers.is_empty() => votes as f64 / answers.len() as f64,
        _ => 0.0,
    }
}

/// Consensus of every problem in every round: `debates[problem][round][agent]` ->
/// `(problems, rounds)` matrix. Average over `Axis(0)` for the per-round curve.
pub fn consensus_matrix<F>(debates: &[Vec<Vec<Option<String>>>], equal: F) -> Result<Array2<f64>, MetricsError>
where
    F: Fn(&str, &str) -> bool,
{
    let rounds = debates.first().map_or(0, Vec::len);
    let mut matrix = Array2::zeros((debates.len(), rounds));
    for (problem, (debate, mut row)) in debates.iter().zip(matrix.axis_iter_mut(Axis(0))).enumerate() {
        if debate.len() != rounds {
            return Err(MetricsError::RaggedRounds { problem, expected: rounds, found: debate.len() });
        }
        for (cell, answers) in row.iter_mut().zip(debate) {
            *cell = consensus(answers, &equal);
        }
    }
    Ok(matrix)
}

/// McNemar's exact test: the two-sided binomial(b + c, 1/2) p-value of the discordant pairs,
/// `min(1, 2 * sum_{i <= min(b,c)} C(b+c, i) / 2^(b+c))`. No discordant pairs gives 1.
///
/// Summed in log space: `C(n, i) / 2^n` underflows f64 for n above about 1074.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let ln2 = std::f64::consts::LN_2;
    let mut log_choose = 0.0;
    let mut terms = Vec::new();
    for i in 0..=b.min(c) {
        if i > 0 {
            log_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        terms.push(log_choose);
    }
    // C(n, i) grows for i <= n/2, so the last term is the largest: factor it out.
    let largest = terms.last().copied().unwrap_or(0.0);
    let log_sum = largest + terms.iter().map(|t| (t - largest).exp()).sum::<f64>().ln();
    (ln2 + log_sum - n as f64 * ln2).exp().min(1.0)
}

/// Paired comparison of two runs on the same problem ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    pub n: usize,
    pub both_correct: usize,
    /// McNemar's `b`: right in run A, wrong in run B.
    pub only_a: usize,
    /// McNemar's `c`: wrong in run A, right in run B.
    pub only_b: usize,
    pub both_wrong: usize,
    pub accuracy_a: f64,
    pub accuracy_b: f64,
    /// [`mcnemar_exact`] of `only_a` and `only_b`.
    pub p_value: f64,
}

/// Pairs two runs' `(problem id, correct)` results by id and runs McNemar's exact test.
/// Both runs must cover exactly the same ids, each once.
pub fn compare_paired<S: AsRef<str>>(
    run_a: &[(S, bool)],
    run_b: &[(S, bool)],
) -> Result<PairedComparison, MetricsError> {
    let index = |run: &[(S, bool)]| -> Result<HashMap<String, bool>, MetricsError> {
        let mut map = HashMap::with_capacity(run.len());
        for (id, correct) in run {
            if map.insert(id.as_ref().to_string(), *correct).is_some() {
                return Err(MetricsError::DuplicateId(id.as_ref().to_string()));
            }
        }
        Ok(map)
    };
    let (a, b) = (index(run_a)?, index(run_b)?);
    let only_a: Vec<&String> = a.keys().filter(|id| !b.contains_key(*id)).collect();
    let only_b: Vec<&String> = b.keys().filter(|id| !a.contains_key(*id)).collect();
    if let Some(example) = only_a.iter().chain(&only_b).min() {
        return Err(MetricsError::IdMismatch {
            only_a: only_a.len(),
            only_b: only_b.len(),
            example: example.to_string(),
        });
    }
    let mut table = [[0usize; 2]; 2];
    for (id, right_a) in &a {
        let right_b = b.get(id).copied().unwrap_or_default();
        table[usize::from(!*right_a)][usize::from(!right_b)] += 1;
    }
    let [[both_correct, only_a], [only_b, both_wrong]] = table;
    let n = a.len();
    let rate = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    Ok(PairedComparison {
        n,
        both_correct,
        only_a,
        only_b,
        both_wrong,
        accuracy_a: rate(both_correct + only_a),
        accuracy_b: rate(both_correct + only_b),
        p_value: mcnemar_exact(only_a as u64, only_b as u64),
    })
}

/// Headline numbers of one run, for reports and JSON output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub correct: usize,
    /// Responses with no extractable answer (also counted as wrong).
    pub unparsable: usize,
    pub accuracy: f64,
    /// 95% Wilson interval of `accuracy`.
    pub ci95: [f64; 2],
    /// Mean consensus per round over problems; empty when not given.
    pub consensus_by_round: Vec<f64>,
}

impl Summary {
    /// Summarizes the final graded answers, and optionally a [`consensus_matrix`].
    pub fn new(final_answers: &[Checked], consensus: Option<&Array2<f64>>) -> Summary {
        let n = final_answers.len();
        let correct = final_answers.iter().filter(|c| c.correct).count();
        let (low, high) = wilson_interval(correct, n, Z95);
        let consensus_by_round =
            consensus.and_then(|m| m.mean_axis(Axis(0))).map(|means| means.to_vec()).unwrap_or_default();
        Summary {
            n,
            correct,
            unparsable: final_answers.iter().filter(|c| c.answer.is_none()).count(),
            accuracy: if n == 0 { 0.0 } else { correct as f64 / n as f64 },
            ci95: [low, high],
            consensus_by_round,
        }
    }
}

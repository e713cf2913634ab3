//! Metrics against values computed independently (exact integer arithmetic in Python's
//! `fractions`/`math.comb` for McNemar, the closed form for Wilson).

use agents::answer::{gsm8k_equal, math_equal, Checked};
use agents::metrics::{
    accuracy, compare_paired, consensus, consensus_matrix, mcnemar_exact, wilson_interval, MetricsError, Summary, Z95,
};
use ndarray::{array, Axis};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn answers(xs: &[Option<&str>]) -> Vec<Option<String>> {
    xs.iter().map(|x| x.map(str::to_string)).collect()
}

#[test]
fn accuracy_counts_true() {
    assert_eq!(accuracy(&[true, false, true, true]), 0.75);
    assert_eq!(accuracy(&[]), 0.0);
}

#[test]
fn wilson_matches_reference_values() {
    let cases = [
        (7, 10, 0.396_778_147_461_145_4, 0.892_208_732_593_698_9),
        (0, 10, 0.0, 0.277_532_799_862_889_2),
        (10, 10, 0.722_467_200_137_110_7, 1.0),
        (50, 100, 0.403_831_530_365_995_6, 0.596_168_469_634_004_4),
        (1, 3, 0.061_491_944_720_396_21, 0.792_340_399_197_952_2),
        (700, 1000, 0.670_876_139_082_782_8, 0.727_593_157_522_995_1),
    ];
    for (k, n, low, high) in cases {
        let (l, h) = wilson_interval(k, n, Z95);
        assert!(close(l, low, 1e-12) && close(h, high, 1e-12), "{k}/{n}: got ({l}, {h})");
    }
    // The brief's rounded values.
    let (l, h) = wilson_interval(7, 10, Z95);
    assert_eq!((format!("{l:.4}"), format!("{h:.4}")), ("0.3968".to_string(), "0.8922".to_string()));
    assert_eq!(wilson_interval(0, 0, Z95), (0.0, 1.0));
}

#[test]
fn mcnemar_matches_exact_binomial() {
    let cases = [
        (10, 2, 0.038_574_218_75),
        (2, 10, 0.038_574_218_75),
        (0, 0, 1.0),
        (5, 5, 1.0),
        (1, 0, 1.0),
        (6, 0, 0.031_25),
        (20, 35, 0.058_064_146_792_409_066),
        (40, 60, 0.056_887_933_640_980_79),
        (600, 500, 0.002_819_544_991_436_427_5),
        (1000, 1100, 0.030_720_707_864_242_296),
        (3000, 2800, 0.008_969_436_001_193_416),
    ];
    for (b, c, p) in cases {
        let got = mcnemar_exact(b, c);
        assert!(close(got, p, 1e-9 * p.max(1e-3)), "b={b} c={c}: got {got}, want {p}");
    }
    assert_eq!(format!("{:.4}", mcnemar_exact(10, 2)), "0.0386");
    // Far past where 2^-n underflows, the log-space sum stays finite and in [0, 1].
    let tiny = mcnemar_exact(5000, 0);
    assert!((0.0..1e-300).contains(&tiny));
    assert!(close(mcnemar_exact(50_000, 50_000), 1.0, 0.0));
}

#[test]
fn consensus_counts_agents_agreeing_with_the_majority() {
    assert_eq!(consensus(&answers(&[Some("3"), Some("3.0"), Some("4"), None]), gsm8k_equal), 0.5);
    assert_eq!(consensus(&answers(&[Some("5"), Some("5"), Some("5")]), gsm8k_equal), 1.0);
    // None answers never agree, not even with each other.
    assert_eq!(consensus(&answers(&[None, None, None]), gsm8k_equal), 0.0);
    assert!(close(consensus(&answers(&[None, None, Some("7")]), gsm8k_equal), 1.0 / 3.0, 1e-15));
    assert_eq!(consensus(&[], gsm8k_equal), 0.0);
    // Equivalence is the grader's: \frac12 and 0.5 agree under MATH rules.
    assert_eq!(consensus(&answers(&[Some("\\frac12"), Some("0.5"), Some("1/3")]), math_equal), 2.0 / 3.0);
}

#[test]
fn consensus_matrix_is_problems_by_rounds() {
    let debates = vec![
        vec![answers(&[Some("1"), Some("2"), Some("1")]), answers(&[Some("1"), Some("1"), Some("1")])],
        vec![answers(&[Some("4"), None, Some("5")]), answers(&[Some("5"), Some("5"), None])],
    ];
    let matrix = consensus_matrix(&debates, gsm8k_equal).unwrap_or_else(|e| panic!("{e}"));
    let expected = array![[2.0 / 3.0, 1.0], [1.0 / 3.0, 2.0 / 3.0]];
    assert_eq!(matrix.dim(), (2, 2));
    assert!(matrix.iter().zip(expected.iter()).all(|(a, b)| close(*a, *b, 1e-15)));
    let by_round = matrix.mean_axis(Axis(0)).map(|m| m.to_vec()).unwrap_or_default();
    assert!(close(by_round[0], 0.5, 1e-15) && close(by_round[1], 5.0 / 6.0, 1e-15));

    let ragged = vec![debates[0].clone(), vec![answers(&[Some("1")])]];
    let err = consensus_matrix(&ragged, gsm8k_equal).err();
    assert!(matches!(err, Some(MetricsError::RaggedRounds { problem: 1, expected: 2, found: 1 })), "{err:?}");
    assert_eq!(consensus_matrix(&[], gsm8k_equal).map(|m| m.dim()).ok(), Some((0, 0)));
}

#[test]
fn paired_comparison_builds_the_contingency_table() {
    // Different orders on purpose: runs are paired by id, not by position.
    let a = [("p1", true), ("p2", true), ("p3", false), ("p4", false), ("p5", true)];
    let b = [("p5", false), ("p4", true), ("p3", false), ("p2", true), ("p1", false)];
    let cmp = compare_paired(&a, &b).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((cmp.n, cmp.both_correct, cmp.only_a, cmp.only_b, cmp.both_wrong), (5, 1, 2, 1, 1));
    assert_eq!((cmp.accuracy_a, cmp.accuracy_b), (0.6, 0.4));
    assert_eq!(cmp.p_value, 1.0);

    // b = 10, c = 2 as in the reference case.
    let ids: Vec<String> = (0..12).map(|i| format!("gsm8k/dev/{i}")).collect();
    let run_a: Vec<(String, bool)> = ids.iter().enumerate().map(|(i, id)| (id.clone(), i < 10)).collect();
    let run_b: Vec<(String, bool)> = ids.iter().enumerate().map(|(i, id)| (id.clone(), i >= 10)).collect();
    let cmp = compare_paired(&run_a, &run_b).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((cmp.only_a, cmp.only_b), (10, 2));
    assert!(close(cmp.p_value, 0.038_574_218_75, 1e-12));
}

#[test]
fn paired_comparison_rejects_mismatched_runs() {
    let a = [("p1", true), ("p2", false)];
    let err = compare_paired(&a, &[("p1", true), ("p3", false)]).err();
    assert!(
        matches!(&err, Some(MetricsError::IdMismatch { only_a: 1, only_b: 1, example }) if example == "p2"),
        "{err:?}"
    );
    let err = compare_paired(&a, &[("p1", true)]).err();
    assert!(matches!(err, Some(MetricsError::IdMismatch { only_a: 1, only_b: 0, .. })), "{err:?}");
    let err = compare_paired(&[("p1", true), ("p1", false)], &a).err();
    assert!(matches!(&err, Some(MetricsError::DuplicateId(id)) if id == "p1"), "{err:?}");
}

#[test]
fn summary_counts_and_serializes() {
    let graded = |answer: Option<&str>, correct| Checked { answer: answer.map(str::to_string), correct };
    let finals: Vec<Checked> = (0..10)
        .map(|i| match i {
            0..=6 => graded(Some("18"), true),
            7 | 8 => graded(None, false),
            _ => graded(Some("17"), false),
        })
        .collect();
    let matrix = array![[1.0, 1.0], [0.5, 1.0]];
    let summary = Summary::new(&finals, Some(&matrix));
    assert_eq!((summary.n, summary.correct, summary.unparsable), (10, 7, 2));
    assert_eq!(summary.accuracy, 0.7);
    assert!(close(summary.ci95[0], 0.396_778_147_461_145_4, 1e-12));
    assert_eq!(summary.consensus_by_round, vec![0.75, 1.0]);

    let json = serde_json::to_string(&summary).unwrap_or_else(|e| panic!("{e}"));
    let back: Summary = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, summary);
    assert!(json.contains("\"unparsable\":2"), "{json}");

    let empty = Summary::new(&[], None);
    assert_eq!((empty.n, empty.accuracy, empty.ci95), (0, 0.0, [0.0, 1.0]));
    assert!(empty.consensus_by_round.is_empty());
}

//! MATH answer extraction and Hendrycks-equivalence: hand-checked cases (each also agrees with
//! the reference Python `is_equiv`), plus every gold answer of the shared MATH files.

mod common;

use agents::answer::{check, extract_boxed, majority, math_equal, normalize_math};
use agents::dataset::{self, AnswerFormat, Dataset};

/// `(model answer, gold answer, equivalent?)`.
const EQUIV: &[(&str, &str, bool)] = &[
    // Fractions: dfrac/tfrac, \frac12 shorthand, a/b, 0.5.
    ("\\dfrac{1}{2}", "\\frac12", true),
    ("\\frac{1}{2}", "\\frac12", true),
    ("\\tfrac{1}{2}", "\\frac{1}{2}", true),
    ("0.5", "\\frac{1}{2}", true),
    ("0.5", "\\frac12", true),
    (".5", "\\frac{1}{2}", true),
    ("1/2", "\\frac{1}{2}", true),
    ("1/2", "0.5", true),
    ("3/4", "\\frac{3}{4}", true),
    ("-3/4", "\\frac{-3}{4}", true),
    ("-3/4", "-\\frac{3}{4}", false),
    ("\\frac{2}{4}", "\\frac{1}{2}", false),
    ("0.50", "\\frac{1}{2}", false),
    ("0.25", "\\frac{1}{4}", false),
    ("03/4", "\\frac{3}{4}", false),
    ("\\frac{9}{7}", "\\dfrac{9}{7}", true),
    ("\\frac97", "\\dfrac{9}{7}", true),
    ("\\frac1{72}", "\\frac{1}{72}", true),
    ("\\frac{72}1", "\\frac{72}{1}", false),
    ("\\frac34i", "\\frac{3}{4}i", true),
    ("\\tfrac83", "\\frac{8}{3}", true),
    ("\\frac{\\sqrt{3}}{2}", "\\dfrac{\\sqrt3}{2}", true),
    ("\\frac{1}{2}", "\\frac{1}{3}", false),
    ("12/5", "2.4", false),
    ("\\tfrac{1}{2} +\\! \\frac1{72}", "\\\\dfrac{1}{2} +\\frac{1}{72}", true),
    ("\\tfrac{1}{2} + \\frac1{72}", "\\\\frac{1}{2} + 2/3", false),
    // \left and \right, spaces, tuples and intervals.
    ("\\left(3, 4\\right)", "(3,4)", true),
    ("(3, 4)", "(3,4)", true),
    ("(4,3)", "(3,4)", false),
    ("\\left( -2, \\frac{1}{2} \\right)", "(-2,\\frac12)", true),
    ("\\left(x-2\\right)\\left(x+2\\right)", "(x-2)(x+2)", true),
    ("(x+2)(x-2)", "(x-2)(x+2)", false),
    ("[-2, 5)", "[-2,5)", true),
    ("[-2, 5]", "[-2,5)", false),
    ("(-\\infty, 3]", "(-\\infty,3]", true),
    ("\\left[ 1, \\infty \\right)", "[1,\\infty)", true),
    ("10, 4, -2", "4, 10, -2", false),
    ("10, 4, 2", "4, 12, 2", false),
    ("1, 2, 3", "1,2,3", true),
    ("\\{1, 2\\}", "\\{1,2\\}", true),
    // Percentages: only the LaTeX \% is removed, as in the reference.
    ("10\\%", "10", true),
    ("10", "10\\%", true),
    ("12.5\\%", "12.5", true),
    ("10%", "10", false),
    ("10\\%", "11", false),
    // Degrees.
    ("90^\\circ", "90", true),
    ("90^{\\circ}", "90", true),
    ("90", "90^\\circ", true),
    ("45^\\circ", "90", false),
    ("120^{\\circ}", "120^\\circ", true),
    // Dollars.
    ("\\$10", "10", true),
    ("10", "\\$10", true),
    ("\\$1.50", "1.50", true),
    ("\\$1.50", "1.5", false),
    // Units: only "\text{ " (with its space) marks a unit.
    ("10\\text{ cm}", "10", true),
    ("10 \\text{ cm}", "10", true),
    ("5\\text{ inches}", "5", true),
    ("10\\text{ units}", "10 ", true),
    ("10\\text{ units}", "100 ", false),
    ("10\\text{cm}", "10", false),
    ("10 \\text{ cm}^2", "10", true),
    ("\\text{ (A)}", "", true),
    // Repeated "\text{ " makes the reference raise; it then compares the raw strings.
    ("1\\text{ a}\\text{ b}", "1", false),
    ("1\\text{ a}\\text{ b}", "1\\text{ a}\\text{ b}", true),
    // Short left-hand sides are dropped.
    ("x = 5", "5", true),
    ("x=5", "5", true),
    ("k = -3", "-3", true),
    ("y = 2x + 3", "2x+3", true),
    ("ab=5", "5", true),
    ("abc = 5", "5", false),
    ("x = 5", "6", false),
    ("x = 1, y = 2", "1,y=2", false),
    ("5x - 7y + 11z + 4 = 0", "x + y - z + 2 = 0", false),
    // Square roots.
    ("\\sqrt3", "\\sqrt{3}", true),
    ("2\\sqrt2", "2\\sqrt{2}", true),
    ("10\\sqrt{3} + \\sqrt4", "10\\sqrt3 + \\sqrt{4}", true),
    ("\\sqrt{12}", "2\\sqrt{3}", false),
    ("\\sqrt{3}", "3^{1/2}", false),
    // fix_fracs only expands a shorthand numerator: `\frac{..}2` stays as written.
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}2", false),
    ("3\\sqrt{13}", "3\\sqrt{13}", true),
    ("\\sqrt{13}", "\\sqrt13", false),
    // Decimals.
    ("0.1", ".1", true),
    ("0.1, 4, 2", "4, .1, 2", false),
    ("3.0", "3", false),
    ("5", "5.0", false),
    ("2.5", "2.50", false),
    ("1.25", "1.25", true),
    ("\\{.5, 1\\}", "\\{0.5, 1\\}", true),
    // Negatives that must not match.
    ("-5", "5", false),
    ("5", "-5", false),
    ("-\\frac{1}{2}", "\\frac{1}{2}", false),
    ("-\\sqrt{3}", "\\sqrt{3}", false),
    ("(-3, 4)", "(3, 4)", false),
    ("-0.5", "\\frac{1}{2}", false),
    ("-1/2", "\\frac{1}{2}", false),
    ("-1/2", "\\frac{-1}{2}", true),
    // Line breaks, \! and doubled backslashes.
    ("\\frac{1}{2}\n", "\\frac{1}{2}", true),
    ("1\\!000", "1000", true),
    ("1,\\!000", "1,000", true),
    ("1{,}000", "1000", false),
    ("1,000", "1000", false),
    // Symbolic answers compare as strings.
    ("2x+3", "3+2x", false),
    ("x^2 + 2x + 1", "x^2+2x+1", true),
    ("\\pi", "\\pi", true),
    ("2\\pi", "\\pi", false),
    ("\\text{(C)}", "\\text{(C)}", true),
    ("\\text{(C)}", "C", false),
    ("\\text{Monday}", "\\text{Monday}", true),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", true),
    ("\\infty", "\\infty", true),
    ("i", "i", true),
    ("1+i", "1 + i", true),
    // Edge cases where the reference raises.
    ("\\sqrt", "\\sqrt", true),
    ("\\sqrt", "\\sqrt{}", false),
    ("2\\frac", "2\\frac", true),
    ("", "", true),
    ("", "0", false),
];

/// `(model response, content of its last box)`.
const BOXED: &[(&str, Option<&str>)] = &[
    ("The answer is $\\boxed{\\frac{\\sqrt{3}}{2}}$.", Some("\\frac{\\sqrt{3}}{2}")),
    ("\\boxed{18}", Some("18")),
    ("First $\\boxed{1}$, then finally $\\boxed{2}$.", Some("2")),
    ("\\boxed{\\left(3, 4\\right)}", Some("\\left(3, 4\\right)")),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", Some("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}")),
    ("\\boxed{x^{2^{3}}} done", Some("x^{2^{3}}")),
    ("\\fbox{7}", Some("7")),
    ("\\boxed{3} and then \\fbox{4}", Some("4")),
    ("\\fbox{3} and then \\boxed{4}", Some("4")),
    ("\\boxed 5", Some("5")),
    ("$\\boxed 5$.", Some("5")),
    ("\\boxed {12}", Some("12")),
    ("\\boxed{ 5 }", Some("5")),
    ("the answer is \\boxed{\\text{(C)}}", Some("\\text{(C)}")),
    ("no box here, the answer is 5", None),
    ("truncated \\boxed{\\frac{1}{2}", None),
    ("\\boxed{}", None),
    ("\\boxedx", None),
    ("\\boxed{1} then a truncated \\boxed{2", None),
];

#[test]
fn equivalence_matches_hand_checked_cases() {
    let mut failures = Vec::new();
    for (pred, gold, expected) in EQUIV {
        if math_equal(pred, gold) != *expected {
            failures.push(format!("math_equal({pred:?}, {gold:?}) should be {expected}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), EQUIV.len(), failures.join("\n"));
    assert!(EQUIV.len() >= 100);
}

#[test]
fn extraction_matches_hand_checked_cases() {
    for (response, expected) in BOXED {
        assert_eq!(extract_boxed(response).as_deref(), *expected, "extract_boxed({response:?})");
    }
}

#[test]
fn normalization_examples() {
    let norm = |s: &str| normalize_math(s);
    assert_eq!(norm("\\dfrac{1}{2}").as_deref(), Some("\\frac{1}{2}"));
    assert_eq!(norm("x = \\frac12").as_deref(), Some("\\frac{1}{2}"));
    assert_eq!(norm("\\left( 1, \\sqrt2 \\right)").as_deref(), Some("(1,\\sqrt{2})"));
    assert_eq!(norm("7/3").as_deref(), Some("\\frac{7}{3}"));
    assert_eq!(norm("10\\text{ cm}^2").as_deref(), Some("10"));
    // Where the Python raises, there is no normal form.
    assert_eq!(norm("\\sqrt"), None);
    assert_eq!(norm("1\\frac"), None);
    assert_eq!(norm("a\\text{ b}\\text{ c}"), None);
    // A \frac followed by one character is given back unchanged (the reference's early return).
    assert_eq!(norm("\\frac1").as_deref(), Some("\\frac1"));
}

#[test]
fn check_and_majority_use_hendrycks_equivalence() {
    let graded = check(Dataset::Math, "So $x = \\boxed{\\dfrac{1}{2}}$.", "\\frac12");
    assert_eq!((graded.answer.as_deref(), graded.correct), (Some("\\dfrac{1}{2}"), true));
    let graded = check(Dataset::Math500, "The answer is 1/2.", "\\frac12");
    assert_eq!((graded.answer, graded.correct), (None, false));
    assert!(!check(Dataset::Math, "\\boxed{-\\frac{1}{2}}", "\\frac{1}{2}").correct);

    let answers: Vec<Option<String>> = [Some("0.5"), Some("\\frac{1}{3}"), Some("\\dfrac12"), None, Some("\\frac13")]
        .map(|a| a.map(str::to_string))
        .into();
    // "0.5" and "\dfrac12" tie with the two thirds; the earliest agent's group wins.
    assert_eq!(majority(&answers, math_equal).as_deref(), Some("0.5"));
}

/// Every gold answer extracts, normalizes without the reference raising, and equals itself.
#[test]
fn every_math_gold_extracts_and_self_matches() {
    let data_dir = common::data_dir();
    for (dataset, split, expected_rows) in [(Dataset::Math, "test_dev", 4900), (Dataset::Math500, "dev", 400)] {
        let problems = dataset::load(Some(&data_dir), dataset, split).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(problems.len(), expected_rows, "{dataset}/{split}");
        let mut bad = Vec::new();
        for problem in &problems {
            if normalize_math(&problem.gold).is_none() {
                bad.push(format!("{}: {:?} has no normal form", problem.id, problem.gold));
            }
            if !math_equal(&problem.gold, &problem.gold) {
                bad.push(format!("{}: {:?} does not match itself", problem.id, problem.gold));
            }
            // A response that boxes the gold is graded correct.
            let response = format!("Hence the answer is $\\boxed{{{}}}$.", problem.gold);
            if !check(dataset, &response, &problem.gold).correct {
                bad.push(format!("{}: boxed gold {:?} graded wrong", problem.id, problem.gold));
            }
        }
        assert!(bad.is_empty(), "{dataset}/{split}:\n{}", bad.join("\n"));
    }
}

/// MATH-500's `answer` field is the last box of its solution, as its README states.
#[test]
fn math500_answer_field_is_last_box_of_solution() {
    let data_dir = common::data_dir();
    let path = data_dir.join(Dataset::Math500.relative_path("dev"));
    let from_answer = dataset::load(Some(&data_dir), Dataset::Math500, "dev").unwrap_or_else(|e| panic!("{e}"));
    let from_solution =
        dataset::load_jsonl(&path, "problem", "solution", AnswerFormat::Math).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(from_answer.len(), from_solution.len());
    for (a, s) in from_answer.iter().zip(&from_solution) {
        assert_eq!(a.gold, s.gold, "{}", a.id);
    }
}

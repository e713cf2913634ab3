//! GSM8K answer extraction and comparison: hand-checked model outputs, plus every gold answer
//! of the shared GSM8K files.

mod common;

use agents::answer::{check, extract_gsm8k, gsm8k_equal, majority, normalize_gsm8k, Grader};
use agents::dataset::{self, Dataset};

/// `(model response, extracted answer in canonical form)`, each checked by hand.
const EXTRACT: &[(&str, Option<&str>)] = &[
    // Plain final numbers.
    ("The answer is 42.", Some("42")),
    ("42", Some("42")),
    ("42.", Some("42")),
    ("The answer is $1,234.", Some("1234")),
    ("so she has 5 apples left.", Some("5")),
    ("Janet makes 9 * 2 = $18 every day.", Some("18")),
    ("The total is 12 dollars.", Some("12")),
    ("He needs 3 more bags", Some("3")),
    ("Answer: 7", Some("7")),
    ("The answer is: 100", Some("100")),
    ("Therefore the answer is 0.", Some("0")),
    ("So, there are 60 students in total.", Some("60")),
    ("That leaves 15 eggs for selling.\n", Some("15")),
    ("The final result is  99 ", Some("99")),
    ("It takes 3 bolts in total.", Some("3")),
    // The last number wins over the working.
    ("First, 16 - 3 - 4 = 9. Then 9 * 2 = 18. The answer is 18.", Some("18")),
    ("2 + 3 = 5, and 5 * 4 = 20", Some("20")),
    ("She had 20 apples, gave away 5, and now has 15", Some("15")),
    ("In 2 weeks he earns 2 * 400 = 800 dollars.", Some("800")),
    ("Step 1: 5 cats. Step 2: 5 * 4 = 20 legs.", Some("20")),
    ("The 3 friends split 90 dollars, so each pays 30.", Some("30")),
    ("1 + 1 = 2", Some("2")),
    // Thousands separators are never split.
    ("The house costs $114,200.", Some("114200")),
    ("1,000", Some("1000")),
    ("1,000,000", Some("1000000")),
    ("He earned 12,345 dollars.", Some("12345")),
    ("The answer is $1,234.56.", Some("1234.56")),
    ("$2,500 per month", Some("2500")),
    ("about 10,000 people", Some("10000")),
    ("It is 999,999.", Some("999999")),
    // Commas that are not thousands separators.
    ("The numbers are 1,2,3", Some("3")),
    ("I counted 4, 5, 6.", Some("6")),
    ("We get 12,5 as a pair", Some("5")),
    ("1234,567", Some("567")),
    ("the pairs (3,4)", Some("4")),
    // LaTeX thousands separators.
    ("\\boxed{1{,}000}", Some("1000")),
    ("The answer is 1\\,000.", Some("1000")),
    ("$12{,}345$", Some("12345")),
    // Signs.
    ("The temperature is -5 degrees.", Some("-5")),
    ("The result is -12.", Some("-12")),
    ("She owes -$5 now.", Some("-5")),
    ("The change is $-20.", Some("-20")),
    ("Therefore, x = \u{2212}7.", Some("-7")),
    ("(-3)", Some("-3")),
    ("x=-4", Some("-4")),
    ("10-3=7", Some("7")),
    ("The score went from 10-15", Some("15")),
    ("a net loss of -1,500 dollars", Some("-1500")),
    ("The difference is 8 - 10 = -2.", Some("-2")),
    ("-0", Some("0")),
    ("room A-3", Some("3")),
    // Decimals.
    ("Each costs $3.50.", Some("3.5")),
    ("3.0", Some("3")),
    ("The answer is 2.75", Some("2.75")),
    ("It weighs 0.5 kg", Some("0.5")),
    ("costs .75 each", Some("0.75")),
    ("That is 12.00 dollars.", Some("12")),
    ("pi is about 3.14159", Some("3.14159")),
    ("v2.5", Some("2.5")),
    ("He ran 1.5 miles. The answer is 1.5.", Some("1.5")),
    // Fractions.
    ("I have 3/4 of a pizza", Some("0.75")),
    ("The answer is 1/2", Some("0.5")),
    ("1/3", Some("1/3")),
    ("She ate 6 / 8 of it", Some("0.75")),
    ("That is 10/2 boxes", Some("5")),
    ("\\boxed{\\frac{3}{4}}", Some("0.75")),
    ("\\boxed{\\dfrac{10}{4}}", Some("2.5")),
    ("\\boxed{-\\frac{1}{2}}", Some("-0.5")),
    ("1/0 items", Some("0")),
    // Percentages keep their number (GSM8K golds are the bare number).
    ("It went up by 25%.", Some("25")),
    ("The discount is 20 %", Some("20")),
    ("\\boxed{40\\%}", Some("40")),
    ("50% of 80 is 40", Some("40")),
    // Units and currency around the number.
    ("12 dollars", Some("12")),
    ("$18", Some("18")),
    ("The trip takes 45 minutes.", Some("45")),
    ("He bought 3kg of rice", Some("3")),
    ("The 2nd answer", Some("2")),
    ("USD 250", Some("250")),
    ("It costs 5\u{20ac}.", Some("5")),
    // \boxed wins over everything else.
    ("\\boxed{18}", Some("18")),
    ("So the answer is \\boxed{18}. Check: 9 * 2 = 18, 18 + 0 = 18 and 3 more", Some("18")),
    ("We get $\\boxed{\\$18}$.", Some("18")),
    ("\\boxed{18 \\text{ dollars}}", Some("18")),
    ("\\boxed{1,234}", Some("1234")),
    ("First \\boxed{10}, but on reflection \\boxed{12}.", Some("12")),
    ("\\boxed{ 7 }", Some("7")),
    ("The answer is \\boxed{-3}", Some("-3")),
    ("\\fbox{9}", Some("9")),
    ("\\boxed{x = 5}", Some("5")),
    ("The answer is \\boxed{3.50}.", Some("3.5")),
    ("\\boxed{5} apples and 7 pears", Some("5")),
    ("\\boxed 7 is my answer, not 8", Some("7")),
    // A box without a number is an answer that is no number.
    ("\\boxed{\\text{no solution}} but 5 maybe", None),
    ("\\boxed{} and 5", Some("5")),
    // An unclosed box (truncated response) falls back to the other rules.
    ("So 4 + 4 = 8 and the answer is \\boxed{8", Some("8")),
    // The dataset's own format.
    ("#### 72", Some("72")),
    ("She sells 9 eggs.\n#### 18", Some("18")),
    ("#### 1,234", Some("1234")),
    ("#### -3", Some("-3")),
    ("#### 18 (from 9 eggs at $2)", Some("18")),
    ("#### \nso 5", Some("5")),
    // "final answer" lines beat later numbers.
    ("The final answer is 42 (because 6*7).", Some("42")),
    ("Final Answer: 1,000,000", Some("1000000")),
    ("FINAL ANSWER: $35, which is 5 * 7", Some("35")),
    ("My final answer is 12.\nCheck: 3 * 4 = 12 and 2 + 2", Some("12")),
    ("The final answer is unclear; the total is 9", Some("9")),
    // No number at all.
    ("no number here", None),
    ("", None),
    ("I cannot determine the answer.", None),
    ("The answer is five.", None),
    ("\\boxed{x}", None),
    ("...", None),
    ("$", None),
    ("-", None),
];

/// `(prediction, gold, equal?)`, each checked by hand.
const EQUAL: &[(&str, &str, bool)] = &[
    ("18", "18", true),
    ("3.0", "3", true),
    ("3", "3.00", true),
    ("1,000", "1000", true),
    ("$1,234", "1234", true),
    ("1234.00", "1234", true),
    ("0.75", "3/4", true),
    ("-5", "-5", true),
    ("-5", "5", false),
    ("5", "-5", false),
    ("18", "19", false),
    ("3.5", "3", false),
    ("0.333", "1/3", false),
    ("1/3", "2/6", true),
    ("#### 72", "72", true),
    ("72 apples", "72", true),
    ("25%", "25", true),
    ("", "18", false),
    ("18", "", false),
    ("5 and 7", "7", false),
    ("abc", "abc", false),
    ("007", "7", true),
    ("-0", "0", true),
    ("1e3", "1000", false),
    ("\\frac{9}{2}", "4.5", true),
    ("100000000000000000000000000000001", "100000000000000000000000000000000", false),
];

#[test]
fn extraction_matches_hand_checked_answers() {
    let mut failures = Vec::new();
    for (response, expected) in EXTRACT {
        let got = extract_gsm8k(response);
        if got.as_deref() != *expected {
            failures.push(format!("{response:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), EXTRACT.len(), failures.join("\n"));
    assert!(EXTRACT.len() >= 100);
}

#[test]
fn equality_matches_hand_checked_pairs() {
    for (pred, gold, expected) in EQUAL {
        assert_eq!(gsm8k_equal(pred, gold), *expected, "gsm8k_equal({pred:?}, {gold:?})");
        // Equality of numbers is symmetric.
        assert_eq!(gsm8k_equal(gold, pred), *expected, "gsm8k_equal({gold:?}, {pred:?})");
    }
}

#[test]
fn extracted_answers_equal_their_source() {
    // What extraction returns must compare equal to the number it came from.
    for (response, expected) in EXTRACT {
        if let Some(expected) = expected {
            let answer = extract_gsm8k(response).unwrap_or_default();
            assert!(gsm8k_equal(&answer, expected), "{response:?} -> {answer:?}");
        }
    }
}

#[test]
fn check_grades_responses() {
    let right = check(Dataset::Gsm8k, "9 * 2 = 18, so \\boxed{18}", "18");
    assert_eq!((right.answer.as_deref(), right.correct), (Some("18"), true));
    let wrong = check(Grader::Gsm8k, "The answer is 16.", "18");
    assert_eq!((wrong.answer.as_deref(), wrong.correct), (Some("16"), false));
    let none = check(Dataset::Gsm8k, "I am not sure.", "18");
    assert_eq!((none.answer, none.correct), (None, false));
    assert!(check(Dataset::Gsm8k, "The answer is $114,200.", "114200").correct);
}

#[test]
fn majority_groups_equal_numbers() {
    let answers = |xs: &[Option<&str>]| xs.iter().map(|x| x.map(str::to_string)).collect::<Vec<_>>();
    // "3.0" and "3" pool their votes; the group keeps its first spelling.
    let votes = answers(&[Some("4"), Some("3.0"), Some("3"), None]);
    assert_eq!(majority(&votes, gsm8k_equal).as_deref(), Some("3.0"));
    // Ties go to the earliest agent.
    let tie = answers(&[Some("7"), Some("8"), Some("8"), Some("7")]);
    assert_eq!(majority(&tie, gsm8k_equal).as_deref(), Some("7"));
    let tie = answers(&[Some("8"), None, Some("7")]);
    assert_eq!(majority(&tie, gsm8k_equal).as_deref(), Some("8"));
    // None never wins, even when most agents have no answer.
    let sparse = answers(&[None, None, Some("5")]);
    assert_eq!(majority(&sparse, gsm8k_equal).as_deref(), Some("5"));
    assert_eq!(majority(&answers(&[None, None]), gsm8k_equal), None);
    assert_eq!(majority(&[], gsm8k_equal), None);
}

#[test]
fn every_gsm8k_gold_is_a_number() {
    let data_dir = common::data_dir();
    for split in ["train", "dev"] {
        let problems = dataset::load(Some(&data_dir), Dataset::Gsm8k, split).unwrap_or_else(|e| panic!("{e}"));
        assert!(!problems.is_empty());
        let bad: Vec<_> = problems
            .iter()
            .filter(|p| normalize_gsm8k(&p.gold).as_deref() != Some(p.gold.as_str()))
            .map(|p| format!("{}: {:?}", p.id, p.gold))
            .collect();
        assert!(bad.is_empty(), "gsm8k/{split}: golds that are not plain integers: {bad:?}");
        // The full worked solution grades as correct against its own gold.
        for problem in problems.iter().take(200) {
            let solution = format!("Let me think.\n#### {}", problem.gold);
            assert!(check(Dataset::Gsm8k, &solution, &problem.gold).correct, "{}", problem.id);
        }
    }
}

//! Loading the shared benchmark files and user JSONL, subsets, and the error messages.

mod common;

use std::io::Write;
use std::path::Path;

use agents::dataset::{self, load, load_jsonl, sample, AnswerFormat, Dataset, DatasetError, Problem};

fn write_jsonl(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    file.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn must<T>(result: Result<T, DatasetError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn loads_gsm8k_splits() {
    let dir = common::data_dir();
    let dev = must(load(Some(&dir), Dataset::Gsm8k, "dev"));
    assert_eq!(dev.len(), 1119);
    assert_eq!(dev[0].id, "gsm8k/dev/0");
    assert!(dev[0].question.starts_with("Janet\u{2019}s ducks lay 16 eggs"));
    assert_eq!(dev[0].gold, "18");
    assert_eq!((dev[0].subject.as_deref(), dev[0].level.as_deref()), (None, None));
    assert_eq!(dev[1118].id, "gsm8k/dev/1118");
    assert_eq!(must(load(Some(&dir), Dataset::Gsm8k, "train")).len(), 7473);
    // Thousands commas are removed from golds.
    assert!(dev.iter().all(|p| !p.gold.contains(',')));
}

#[test]
fn loads_math_splits() {
    let dir = common::data_dir();
    let math = must(load(Some(&dir), Dataset::Math, "test_dev"));
    assert_eq!(math.len(), 4900);
    assert_eq!(math[0].id, "math/test_dev/0");
    assert_eq!(math[0].gold, "2");
    assert_eq!((math[0].subject.as_deref(), math[0].level.as_deref()), (Some("Algebra"), Some("3")));
    assert_eq!(math[2].gold, "\\dfrac{9}{7}");

    let m500 = must(load(None, Dataset::Math500, Dataset::Math500.default_split()));
    assert_eq!(m500.len(), 400);
    assert_eq!(m500[0].id, "math500/dev/0");
    for p in m500.iter().chain(&math) {
        assert!(p.subject.is_some(), "{}", p.id);
        assert!(matches!(p.level.as_deref(), Some("1" | "2" | "3" | "4" | "5")), "{}: {:?}", p.id, p.level);
    }
}

#[test]
fn default_splits_and_names_round_trip() {
    for d in Dataset::ALL {
        assert_eq!(d.to_string().parse::<Dataset>().ok(), Some(d));
        let path = common::data_dir().join(d.relative_path(d.default_split()));
        assert!(path.is_file(), "{}", path.display());
    }
    assert_eq!("MATH500".parse::<Dataset>().ok(), Some(Dataset::Math500));
    assert!(matches!("aime".parse::<Dataset>(), Err(DatasetError::UnknownDataset(_))));
    assert_eq!("Plain".parse::<AnswerFormat>().ok(), Some(AnswerFormat::Plain));
    assert!("boxed".parse::<AnswerFormat>().is_err());
    assert_eq!(serde_json::to_string(&Dataset::Math500).ok().as_deref(), Some("\"math500\""));
}

#[test]
fn missing_file_names_path_and_layout() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let err = load(Some(tmp.path()), Dataset::Gsm8k, "dev").err();
    assert!(matches!(err, Some(DatasetError::MissingFile { .. })), "{err:?}");
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains(&tmp.path().join("gsm8k/dev.jsonl").display().to_string()), "{message}");
    assert!(message.contains("math/math500_dev.jsonl") && message.contains("TCOMM_DATA"), "{message}");
    // An unknown split is a missing file too, named by its path.
    let err = load(None, Dataset::Math, "train").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("math/train.jsonl"), "{err}");
}

#[test]
fn explicit_and_env_data_dirs_take_precedence() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(must(dataset::resolve_data_dir(Some(tmp.path()))), tmp.path());
    // Other tests in this binary resolve concurrently: point the variable at the same data,
    // spelled differently, so they are unaffected while this one sees which source won.
    let real = common::data_dir();
    let spelled = real.join("gsm8k/..");
    let saved = std::env::var_os(dataset::DATA_ENV);
    std::env::set_var(dataset::DATA_ENV, &spelled);
    let resolved = dataset::resolve_data_dir(None);
    match saved {
        Some(value) => std::env::set_var(dataset::DATA_ENV, value),
        None => std::env::remove_var(dataset::DATA_ENV),
    }
    assert_eq!(must(resolved), spelled);
}

#[test]
fn user_jsonl_with_field_mapping() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = concat!(
        r#"{"q": "1+1?", "a": "2", "subject": "Arithmetic", "level": 1}"#,
        "\n\n",
        r#"{"q": "Half of 1?", "a": 0.5}"#,
        "\n",
        r#"{"q": "Twice 3?", "a": " 6 ", "type": "Algebra", "level": "Level 2"}"#,
        "\n"
    );
    let path = write_jsonl(tmp.path(), "mine.jsonl", text);
    let problems = must(load_jsonl(&path, "q", "a", AnswerFormat::Plain));
    let expected = [
        ("mine/0", "1+1?", "2", Some("Arithmetic"), Some("1")),
        ("mine/1", "Half of 1?", "0.5", None, None),
        ("mine/2", "Twice 3?", "6", Some("Algebra"), Some("2")),
    ];
    assert_eq!(problems.len(), expected.len());
    for (p, (id, q, gold, subject, level)) in problems.iter().zip(expected) {
        let got = (p.id.as_str(), p.question.as_str(), p.gold.as_str(), p.subject.as_deref(), p.level.as_deref());
        assert_eq!(got, (id, q, gold, subject, level));
    }

    let gsm = write_jsonl(tmp.path(), "gsm.jsonl", "{\"question\": \"q\", \"answer\": \"work\\n#### 1,234\"}\n");
    assert_eq!(must(load_jsonl(&gsm, "question", "answer", AnswerFormat::Gsm8k))[0].gold, "1234");
    let math = write_jsonl(tmp.path(), "m.jsonl", r#"{"p": "q", "s": "so $\\boxed{1}$ or $\\boxed{\\frac{1}{2}}$"}"#);
    assert_eq!(must(load_jsonl(&math, "p", "s", AnswerFormat::Math))[0].gold, "\\frac{1}{2}");
}

#[test]
fn malformed_and_incomplete_lines_are_located() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let message = |text: &str, format| {
        let path = write_jsonl(tmp.path(), "bad.jsonl", text);
        let err = load_jsonl(&path, "q", "a", format).err();
        (err.as_ref().map(ToString::to_string).unwrap_or_default(), err)
    };
    let ok = r#"{"q": "x", "a": "1"}"#;

    let (text, err) = message(&format!("{ok}\n{{\"q\": \"x\", \"a\": \n"), AnswerFormat::Plain);
    assert!(matches!(err, Some(DatasetError::MalformedLine { line: 2, .. })), "{text}");
    assert!(text.contains("bad.jsonl:2") && text.contains("EOF"), "{text}");

    let (text, err) = message(&format!("{ok}\n{ok}\n{{\"q\": \"x\"}}\n"), AnswerFormat::Plain);
    assert!(matches!(err, Some(DatasetError::MissingField { line: 3, .. })), "{text}");
    assert!(text.contains("bad.jsonl:3") && text.contains("`a`"), "{text}");

    let (text, err) = message(r#"{"q": ["x"], "a": "1"}"#, AnswerFormat::Plain);
    assert!(matches!(err, Some(DatasetError::BadField { line: 1, .. })), "{text}");
    assert!(text.contains("`q`") && text.contains("an array"), "{text}");

    let (text, err) = message(r#"{"q": "x", "a": "no hashes"}"#, AnswerFormat::Gsm8k);
    assert!(matches!(err, Some(DatasetError::NoGold { line: 1, .. })), "{text}");
    let (text, err) = message(r#"{"q": "x", "a": "truncated \\boxed{1"}"#, AnswerFormat::Math);
    assert!(matches!(err, Some(DatasetError::NoGold { line: 1, .. })) && text.contains("boxed"), "{text}");
    let (_, err) = message(r#"{"q": "x", "a": "  "}"#, AnswerFormat::Plain);
    assert!(matches!(err, Some(DatasetError::NoGold { .. })), "{err:?}");
    let (_, err) = message("[1, 2]\n", AnswerFormat::Plain);
    assert!(matches!(err, Some(DatasetError::MalformedLine { line: 1, .. })), "{err:?}");
}

#[test]
fn sampling_is_first_n_or_seeded() {
    let problems: Vec<Problem> = (0..50)
        .map(|i| Problem {
            id: format!("t/{i}"),
            question: String::new(),
            gold: i.to_string(),
            subject: None,
            level: None,
        })
        .collect();
    let ids = |ps: &[Problem]| ps.iter().map(|p| p.id.clone()).collect::<Vec<_>>();

    let first = sample(problems.clone(), Some(5), None);
    assert_eq!(ids(&first), ["t/0", "t/1", "t/2", "t/3", "t/4"]);
    assert_eq!(sample(problems.clone(), Some(500), None).len(), 50);
    assert_eq!(sample(problems.clone(), None, None), problems);

    let a = sample(problems.clone(), Some(10), Some(7));
    let b = sample(problems.clone(), Some(10), Some(7));
    let c = sample(problems.clone(), Some(10), Some(8));
    assert_eq!(ids(&a), ids(&b), "same seed, same subset");
    assert_ne!(ids(&a), ids(&c), "different seeds, different subsets");
    assert_ne!(ids(&a), ids(&first), "a seeded subset is not the first N");
    // A seeded shuffle without a limit is a permutation.
    let mut all = ids(&sample(problems.clone(), None, Some(1)));
    all.sort();
    let mut expected = ids(&problems);
    expected.sort();
    assert_eq!(all, expected);
}

#[test]
fn training_problems_leave_out_an_evaluation_set() {
    let dir = common::data_dir();
    let math = must(load(Some(&dir), Dataset::Math, "test_dev"));
    let m500 = must(load(Some(&dir), Dataset::Math500, "dev"));
    let (kept, dropped) = dataset::without(math.clone(), &m500);
    // Every MATH-500 dev problem is in the MATH test split (shared/data/math/README.md).
    assert_eq!((kept.len(), dropped), (math.len() - m500.len(), m500.len()));
    let questions: std::collections::HashSet<&str> = m500.iter().map(|p| p.question.as_str()).collect();
    assert!(kept.iter().all(|p| !questions.contains(p.question.as_str())));
    // Ids keep their rows, so a run's problems stay addressable.
    assert!(kept.iter().all(|p| math.iter().any(|m| m.id == p.id && m.question == p.question)));
    // Whitespace differences do not hide a copy.
    let p = |id: &str, q: &str| Problem { id: id.into(), question: q.into(), gold: "1".into(), subject: None, level: None };
    let (kept, dropped) = dataset::without(vec![p("a/0", "What is  1+1?\n"), p("a/1", "What is 2+2?")], &[p("b/0", "What is 1+1?")]);
    assert_eq!((kept.len(), dropped, kept[0].id.as_str()), (1, 1, "a/1"));
}

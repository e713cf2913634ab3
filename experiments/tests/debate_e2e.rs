//! A 3-agent, 2-round text debate on 3 GSM8K dev problems with smollm2-135m, end to end through
//! the in-process gRPC runtime: the run files, the resume after a kill, the refusal of a
//! different config, and the report. Needs `scripts/setup` (model and data).
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agents::answer::{self, Grader};
use agents::results::{read_results, ProblemResult};

fn debate_args(out: &Path, rounds: &str) -> Vec<String> {
    [
        "debate", "--mode", "text", "--agents", "3", "--rounds", rounds, "--dataset", "gsm8k", "--split", "dev", "--limit", "3",
        "--model", "smollm2-135m", "--max-new-tokens", "24", "--parallel", "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["--out".to_string(), out.display().to_string()])
    .collect()
}

fn tcomm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tcomm"));
    c.env("RUST_LOG", "warn");
    c
}

fn check_result(r: &ProblemResult) {
    assert_eq!(r.rounds.len(), 2, "{}: rounds", r.id);
    let equal = Grader::Gsm8k.equal();
    for (round_index, round) in r.rounds.iter().enumerate() {
        assert_eq!(round.len(), 3, "{}: agents in round {round_index}", r.id);
        for (a, turn) in round.iter().enumerate() {
            assert_eq!(turn.agent, a);
            assert!(turn.tokens > 0 && turn.tokens <= 24, "{}: tokens {}", r.id, turn.tokens);
            // A turn short of the budget can only have ended on a stop token (one at the budget may have too).
            let stopped = turn.stopped.unwrap_or_else(|| panic!("{}: agent {a} has no finish recorded", r.id));
            assert!(stopped || turn.tokens == 24, "{}: agent {a} ended at {} tokens without a stop", r.id, turn.tokens);
            // The stored answer and verdict are what the grader says of the stored response.
            let checked = answer::check(Grader::Gsm8k, &turn.response, &r.gold);
            assert_eq!(turn.answer, checked.answer, "{}: answer of agent {a}", r.id);
            assert_eq!(turn.correct, checked.correct, "{}: verdict of agent {a}", r.id);
        }
        // Later rounds see the other agents' answers, so their prompts are longer.
        if round_index > 0 {
            assert!(round.iter().zip(&r.rounds[0]).all(|(t, first)| t.prompt_tokens > first.prompt_tokens));
        }
    }
    let last: Vec<Option<String>> = r.rounds[1].iter().map(|t| t.answer.clone()).collect();
    assert_eq!(r.final_answer, answer::majority(&last, equal), "{}: final answer is the last round's majority", r.id);
    assert_eq!(r.correct, r.final_answer.as_deref().is_some_and(|f| equal(f, &r.gold)));
    assert_eq!(r.consensus.len(), 2);
}

#[test]
fn text_debate_runs_resumes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("text3");

    // Start, and kill the process as soon as the first problem is on disk.
    let mut child = tcomm().args(debate_args(&out, "2")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let results = out.join("results.jsonl");
    let start = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&results).map(|t| t.lines().count()).unwrap_or(0);
        if lines >= 1 {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("debate exited early with {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(900), "no result within 15 minutes");
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let before = read_results(&out).unwrap();
    assert!(!before.is_empty() && before.len() < 3, "killed after {} problems", before.len());

    // The same command resumes: the kept results stay as they were, the rest is added.
    let status = tcomm().args(debate_args(&out, "2")).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    let after = read_results(&out).unwrap();
    assert_eq!(after.len(), 3, "every problem once");
    assert_eq!(&after[..before.len()], &before[..], "results written before the kill are unchanged");
    let mut ids: Vec<&str> = after.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["gsm8k/dev/0", "gsm8k/dev/1", "gsm8k/dev/2"]);
    after.iter().for_each(check_result);
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["mode"], "text");
    assert_eq!(config["agents"].as_array().map(Vec::len), Some(3));
    // The dtype the runtime computed in is part of the run's identity (auto is f32 on the CPU).
    assert_eq!(config["agents"][0]["dtype"], "f32");

    // Another config into the same folder is refused, naming what differs.
    let refused = tcomm().args(debate_args(&out, "1")).output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("different configuration") && stderr.contains("rounds"), "{stderr}");

    // The report recomputes accuracy from the results.
    let report_dir = dir.path().join("report");
    let status = tcomm().args(["report", out.to_str().unwrap(), "--out", report_dir.to_str().unwrap()]).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    let correct = after.iter().filter(|r| r.correct).count();
    let row = md.lines().find(|l| l.starts_with("| text3 |")).expect("a row for the run");
    assert!(row.contains(&format!("| 3 | {:.1}% |", 100.0 * correct as f64 / 3.0)), "{row}");
    assert!(row.contains("smollm2-135m f32 |"), "the setup names the recorded dtype: {row}");
    let agents_correct: Vec<String> =
        (0..2).map(|round| format!("{}/9", after.iter().flat_map(|r| &r.rounds[round]).filter(|t| t.correct).count())).collect();
    let per_round = md.lines().find(|l| l.starts_with("- text3: ")).expect("a per-round line for the run");
    assert!(per_round.ends_with(&format!("(agents: {})", agents_correct.join(" → "))), "{per_round}");
    for f in ["accuracy_per_round.png", "accuracy_per_round.svg", "consensus_per_round.png", "consensus_per_round.svg"] {
        let meta = std::fs::metadata(report_dir.join(f)).unwrap();
        assert!(meta.len() > 1000, "{f} is {} bytes", meta.len());
    }
}

/// `--exclude math500` on MATH test_dev (what `tcomm train` collects MATH pipelines on) leaves
/// out the problems MATH-500 evaluates, before `--limit`, keeps the others' ids, and is part of
/// the run's config (a rerun without it is refused).
#[test]
fn excluded_problems_are_left_out_before_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("math");
    let args = |exclude: bool| {
        let mut a: Vec<String> = ["debate", "--mode", "single", "--dataset", "math", "--limit", "15", "--max-new-tokens", "1", "--parallel", "15"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if exclude {
            a.extend(["--exclude".to_string(), "math500".to_string()]);
        }
        a.extend(["--out".to_string(), out.display().to_string()]);
        a
    };
    let ran = tcomm().args(args(true)).output().unwrap();
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    let data = agents::dataset::resolve_data_dir(None).unwrap();
    let m500 = agents::dataset::load(Some(&data), agents::dataset::Dataset::Math500, "dev").unwrap();
    let math = agents::dataset::load(Some(&data), agents::dataset::Dataset::Math, "test_dev").unwrap();
    let expected: Vec<String> =
        math.iter().filter(|p| !m500.iter().any(|m| m.question == p.question)).take(15).map(|p| p.id.clone()).collect();
    let mut ids: Vec<String> = read_results(&out).unwrap().into_iter().map(|r| r.id).collect();
    ids.sort_by_key(|id| id.rsplit('/').next().and_then(|n| n.parse::<usize>().ok()));
    assert_eq!(ids, expected);
    assert!(expected.last() != Some(&"math/test_dev/14".to_string()), "some of the first 15 rows are MATH-500 problems");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["exclude"], serde_json::json!(["math500"]));
    let refused = tcomm().args(args(false)).output().unwrap();
    assert!(!refused.status.success(), "a rerun with other problems must be refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("differs in: exclude"), "{}", String::from_utf8_lossy(&refused.stderr));
}

//! ThoughtComm end to end with smollm2-135m through the in-process gRPC runtime: `tcomm train`
//! makes a tiny pipeline (a 3-agent, 2-round text debate on 2 GSM8K train problems, a small
//! autoencoder, a few adapter steps), `tcomm debate --mode thoughtcomm` runs 2 GSM8K dev problems
//! with it, and the results' `thoughts` records, the report, a text debate branched from its first
//! round and the errors for pipelines that do not fit are checked. Needs `scripts/setup` (model and data).
use std::path::Path;
use std::process::{Command, Output};

use agents::answer::{self, Grader};
use agents::results::read_results;
use agents::thoughts::{AgentThoughtRecord, ThoughtRoundRecord};
use thoughtcomm::ThoughtStructure;

fn tcomm(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_tcomm")).env("RUST_LOG", "warn").args(args).output().expect("run tcomm");
    eprintln!("tcomm {}: {}\n{}", args.join(" "), output.status, String::from_utf8_lossy(&output.stderr));
    output
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn debate(thoughts: &Path, out: &Path, agents: &str) -> Output {
    tcomm(&[
        "debate", "--mode", "thoughtcomm", "--thoughts", path(thoughts), "--agents", agents, "--rounds", "2", "--dataset", "gsm8k",
        "--split", "dev", "--limit", "2", "--model", "smollm2-135m", "--max-new-tokens", "16", "--out", path(out),
    ])
}

#[test]
fn thoughtcomm_trains_debates_records_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("pipeline");
    let trained = tcomm(&[
        "train", "--model", "smollm2-135m", "--dataset", "gsm8k", "--limit", "2", "--max-new-tokens", "16", "--latent-dim", "8",
        "--ae-steps", "100", "--adapter-steps", "3", "--out", path(&pipeline),
    ]);
    assert!(trained.status.success());
    for f in ["manifest.json", "autoencoder.safetensors", "autoencoder.json", "structure.json", "adapter-smollm2-135m.safetensors", "ae/structure.png"] {
        assert!(pipeline.join(f).is_file(), "{f} missing from the pipeline folder");
    }
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(pipeline.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["layer"], 20, "2/3 of smollm2's 30 layers");
    assert_eq!(manifest["agents"].as_array().map(Vec::len), Some(3));
    assert_eq!(manifest["provenance"]["adapter_steps"], 3);
    // Rerunning the finished pipeline with fewer steps trains nothing, keeps the recorded losses
    // and records the steps the adapter has, not the ones asked.
    let rerun = tcomm(&[
        "train", "--model", "smollm2-135m", "--dataset", "gsm8k", "--limit", "2", "--max-new-tokens", "16", "--latent-dim", "8",
        "--ae-steps", "100", "--adapter-steps", "2", "--out", path(&pipeline),
    ]);
    assert!(rerun.status.success());
    let reread: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(pipeline.join("manifest.json")).unwrap()).unwrap();
    let losses = &manifest["provenance"]["losses"]["smollm2-135m"];
    assert!(losses["last"]["total"].is_f64(), "{losses}");
    assert_eq!(&reread["provenance"]["losses"]["smollm2-135m"], losses);
    assert_eq!(reread["provenance"]["adapter_steps"], 3);
    let collected = read_results(&pipeline.join("collect")).unwrap();
    assert_eq!(collected.len(), 2);
    assert!(collected.iter().all(|r| r.id.starts_with("gsm8k/train/")), "trained on the training split");
    let structure: ThoughtStructure = serde_json::from_str(&std::fs::read_to_string(pipeline.join("structure.json")).unwrap()).unwrap();
    assert_eq!((structure.num_agents(), structure.num_latents()), (3, 8));

    let out = dir.path().join("tc");
    assert!(debate(&pipeline, &out, "3").status.success());
    let results = read_results(&out).unwrap();
    assert_eq!(results.len(), 2);
    let equal = Grader::Gsm8k.equal();
    for r in &results {
        assert!(r.id.starts_with("gsm8k/dev/"));
        assert_eq!(r.rounds.len(), 2);
        for round in &r.rounds {
            assert_eq!(round.len(), 3);
            for t in round {
                let checked = answer::check(Grader::Gsm8k, &t.response, &r.gold);
                assert_eq!((t.answer.clone(), t.correct), (checked.answer, checked.correct));
                assert!(t.tokens > 0 && t.tokens <= 16);
            }
        }
        let last: Vec<Option<String>> = r.rounds[1].iter().map(|t| t.answer.clone()).collect();
        assert_eq!(r.final_answer, answer::majority(&last, equal));
        // The second round saw the others' texts (shown by default) on top of the prefix.
        assert!(r.rounds[1].iter().zip(&r.rounds[0]).all(|(t, first)| t.prompt_tokens > first.prompt_tokens));
        let thoughts = r.thoughts.as_ref().expect("a thoughts record");
        assert_eq!(thoughts["pipeline"], path(&pipeline));
        let rounds: Vec<ThoughtRoundRecord> = serde_json::from_value(thoughts["rounds"].clone()).unwrap();
        assert_eq!(rounds.len(), 1, "thoughts are composed between the two rounds only");
        let record = &rounds[0];
        assert_eq!((record.after_round, record.agents.len()), (0, 3));
        for (i, a) in record.agents.iter().enumerate() {
            // What each agent received is what the recovered structure routes to it.
            assert_eq!((a.shared as usize, a.private as usize), (structure.shared(i).len(), structure.private(i).len()), "agent {i}");
            assert_eq!(a.agreement_weights.len(), 4);
            assert!(a.prefix_norm.is_finite() && a.prefix_norm > 0.0);
            assert!(a.thought_norm.is_some_and(|n| n.is_finite() && n > 0.0), "{:?}", a.thought_norm);
            // On unit-variance latents: sqrt of the sum of w[alpha_j]^2 over agent i's thoughts.
            let squares: f64 = structure.thoughts(i).iter().map(|&j| a.agreement_weights[structure.alpha[j]].powi(2)).sum();
            let expected = a.expected_thought_norm.expect("the runtime reports the expectation");
            assert!((expected - squares.sqrt()).abs() < 1e-4 * (1.0 + expected), "agent {i}: {expected} vs {}", squares.sqrt());
        }
        let cosine = record.state_cosine.expect("same-size states");
        assert!((-1.0..=1.0).contains(&cosine));
        assert!(record.round_s > 0.0 && record.compose_s >= record.encode_s + record.route_s + record.inject_s);
        assert_eq!(record.replayed_retokenized, None, "round 1 was sampled here");
    }
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["mode"], "thoughtcomm");
    assert_eq!(config["thoughts"]["routing"], "routed");
    assert_eq!(config["thoughts"]["show_text"], true);

    // The report has the thought-communication section, with the overhead recomputed here.
    let report_dir = dir.path().join("report");
    assert!(tcomm(&["report", path(&out), "--out", path(&report_dir)]).status.success());
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    let row = md.lines().find(|l| l.starts_with("| tc | 2 |")).unwrap_or_else(|| panic!("no thoughts row in\n{md}"));
    let compose: f64 = results.iter().flat_map(|r| serde_json::from_value::<Vec<ThoughtRoundRecord>>(r.thoughts.as_ref().unwrap()["rounds"].clone()).unwrap()).map(|t| t.compose_s).sum();
    let wall: f64 = results.iter().map(|r| r.wall_time_s).sum();
    assert!(row.ends_with(&format!("| {:.2}% |", 100.0 * compose / wall)), "{row}");
    let records: Vec<AgentThoughtRecord> = results
        .iter()
        .flat_map(|r| serde_json::from_value::<Vec<ThoughtRoundRecord>>(r.thoughts.as_ref().unwrap()["rounds"].clone()).unwrap())
        .flat_map(|t| t.agents)
        .collect();
    let mean = |f: &dyn Fn(&AgentThoughtRecord) -> f64| records.iter().map(f).sum::<f64>() / records.len() as f64;
    let thought_norm = mean(&|a| a.thought_norm.unwrap_or(f64::NAN));
    let expected = mean(&|a| a.expected_thought_norm.unwrap_or(f64::NAN));
    assert!(row.contains(&format!("| {thought_norm:.1} ({expected:.1}) |")), "{row}");

    // Text debate branched from the ThoughtComm run's first round: round 1 is that run's, round 2
    // is generated; a problem the source lacks waits, a source of another budget is refused.
    let branch = |out: &Path, limit: &str, tokens: &str| {
        tcomm(&[
            "debate", "--mode", "text", "--first-round-from", path(&dir.path().join("tc")), "--agents", "3", "--rounds", "2",
            "--dataset", "gsm8k", "--split", "dev", "--limit", limit, "--model", "smollm2-135m", "--max-new-tokens", tokens,
            "--out", path(out),
        ])
    };
    let paired = dir.path().join("text-paired");
    assert!(branch(&paired, "3", "16").status.success());
    let branched = read_results(&paired).unwrap();
    assert_eq!(branched.len(), 2, "the third problem is not in the source yet");
    for b in &branched {
        let source = results.iter().find(|r| r.id == b.id).expect("a problem of the source");
        assert_eq!(b.rounds[0], source.rounds[0]);
        assert_eq!(b.rounds.len(), 2);
        assert!(b.rounds[1].iter().all(|t| t.tokens > 0 && t.tokens <= 16 && t.prompt_tokens > 0));
        assert!(b.thoughts.is_none());
    }
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(paired.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["first_round_from"], path(&dir.path().join("tc")));
    let other_budget = branch(&dir.path().join("other"), "2", "8");
    assert!(!other_budget.status.success());
    let stderr = String::from_utf8_lossy(&other_budget.stderr);
    assert!(stderr.contains("differs in: max_new_tokens"), "{stderr}");
    assert!(read_results(&dir.path().join("other")).unwrap().is_empty());

    // The experiment runs every arm with the pipeline; its ThoughtComm arm takes the text arm's
    // first round (fed back to the agents for its states), so the two differ from round 2 on.
    let experiment = dir.path().join("experiment");
    let ran = tcomm(&[
        "experiment", "thoughtcomm-vs-text", "--model", "smollm2-135m", "--dataset", "gsm8k", "--split", "dev", "--limit", "2",
        "--max-new-tokens", "16", "--thoughts", path(&pipeline), "--ablations", "random-latents", "--out", path(&experiment),
    ]);
    assert!(ran.status.success());
    let text_arm = read_results(&experiment.join("text")).unwrap();
    let tc_arm = read_results(&experiment.join("thoughtcomm")).unwrap();
    assert_eq!((text_arm.len(), tc_arm.len()), (2, 2));
    for t in &tc_arm {
        let source = text_arm.iter().find(|r| r.id == t.id).expect("a problem of the text arm");
        assert_eq!(t.rounds[0], source.rounds[0]);
        assert!(t.rounds[1].iter().all(|turn| turn.tokens > 0 && turn.tokens <= 16));
        let rounds: Vec<ThoughtRoundRecord> = serde_json::from_value(t.thoughts.as_ref().unwrap()["rounds"].clone()).unwrap();
        assert!(rounds[0].replayed_retokenized.is_some_and(|k| k <= 3), "{:?}", rounds[0].replayed_retokenized);
        assert!(rounds[0].agents.iter().all(|a| a.prefix_norm > 0.0));
    }
    let md = std::fs::read_to_string(experiment.join("report.md")).unwrap();
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| run") && !l.starts_with("| ---")).take(4).collect();
    for (row, arm) in rows.iter().zip(["text", "single", "thoughtcomm", "thoughtcomm-random-latents"]) {
        assert!(row.starts_with(&format!("| {arm} |")), "{md}");
    }
    assert!(rows[2].contains("round 1 from") && !rows[0].contains("round 1 from"), "{md}");
    // The ablation arm says what it ablates; the method's arm names no ablation.
    assert!(rows[3].contains("(random latents of the routed thoughts' norm)") && !rows[2].contains("random latents"), "{md}");
    // Both ThoughtComm arms share the text arm's round 1: every round-1 response is identical.
    let identical = md.lines().find(|l| l.starts_with("- thoughtcomm: ")).unwrap_or_else(|| panic!("{md}"));
    assert!(identical.contains("identical: 6/6 → "), "{identical}");
    let ablated = read_results(&experiment.join("thoughtcomm-random-latents")).unwrap();
    assert_eq!(ablated.len(), 2);
    for a in &ablated {
        let source = text_arm.iter().find(|r| r.id == a.id).expect("a problem of the text arm");
        assert_eq!(a.rounds[0], source.rounds[0]);
    }
    let retokenized: usize = tc_arm
        .iter()
        .map(|t| serde_json::from_value::<Vec<ThoughtRoundRecord>>(t.thoughts.as_ref().unwrap()["rounds"].clone()).unwrap()[0].replayed_retokenized.unwrap())
        .sum();
    assert!(md.contains(&format!("thoughtcomm: its first round was recorded in another run and fed back for the states; {retokenized} of 6 responses")), "{md}");

    // Reading (b) of the objective trains from the same states and autoencoder: y_ref sampled
    // without the prefix once per turn, y_gen with it at every step.
    let sampled = dir.path().join("sampled");
    let trained = tcomm(&[
        "train-adapter", "--run", path(&pipeline.join("collect")), "--ae", path(&pipeline.join("ae")), "--objective", "sampled",
        "--sample-tokens", "4", "--steps", "2", "--batch-size", "2", "--out", path(&sampled),
    ]);
    assert!(trained.status.success());
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(sampled.join("manifest.json")).unwrap()).unwrap();
    let provenance = &manifest["provenance"];
    assert_eq!(provenance["objective"], serde_json::json!({ "reading": "sampled", "tokens": 4, "temperature": 0.7 }));
    let last = &provenance["losses"]["smollm2-135m"]["last"];
    assert!(last["cross_entropy"].as_f64().is_some_and(|ce| ce.is_finite() && ce >= 0.0), "{last}");
    assert!(last["cosine"].as_f64().is_some_and(|c| (-1.0..=1.0).contains(&c)), "{last}");
    assert_eq!(provenance["losses"]["smollm2-135m"]["examples"], 6, "2 problems x 3 agents in round 2");

    // With the other agents' text hidden from the training prompts, the same first batch is
    // scored on other contexts (so another loss), and the manifest says how it was trained.
    let first_loss = |context: &str| {
        let out = dir.path().join(format!("context-{context}"));
        let trained = tcomm(&[
            "train-adapter", "--run", path(&pipeline.join("collect")), "--ae", path(&pipeline.join("ae")), "--adapter-context", context,
            "--steps", "1", "--batch-size", "2", "--holdout", "1", "--out", path(&out),
        ]);
        assert!(trained.status.success(), "{}", String::from_utf8_lossy(&trained.stderr));
        let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["provenance"]["context"], context);
        assert_eq!(manifest["provenance"]["losses"]["smollm2-135m"]["examples"], 3, "the second problem held out");
        manifest["provenance"]["losses"]["smollm2-135m"]["first"]["cross_entropy"].as_f64().unwrap()
    };
    let (shown, hidden) = (first_loss("shown"), first_loss("hidden"));
    assert!(shown.is_finite() && hidden.is_finite() && (shown - hidden).abs() > 1e-4, "shown {shown}, hidden {hidden}");

    // The held-out problem's 3 turns, read with the thoughts, random latents and no prefix.
    let eval = tcomm(&["eval-adapter", "--pipeline", path(&dir.path().join("context-hidden")), "--json"]);
    assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
    let eval: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    // Held out by id: the last problem of the training run's results, as the manifest records it.
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("context-hidden/manifest.json")).unwrap()).unwrap();
    let last_id = read_results(&pipeline.join("collect")).unwrap().last().unwrap().id.clone();
    assert_eq!(manifest["provenance"]["holdout_ids"], serde_json::json!([last_id]));
    assert_eq!((eval["context"].as_str(), &eval["problems"]), (Some("hidden"), &serde_json::json!([last_id])));
    let rows = eval["models"]["smollm2-135m"].as_array().unwrap();
    let inputs: Vec<&str> = rows.iter().map(|r| r["input"].as_str().unwrap()).collect();
    assert_eq!(inputs, ["thoughts", "random_latents", "no_prefix"]);
    let ce = |r: &serde_json::Value| r["mean"]["cross_entropy"].as_f64().unwrap();
    for r in rows {
        assert_eq!(r["examples"], 3);
        assert!(ce(r).is_finite() && ce(r) > 0.0, "{r}");
        // The mean gap is the difference of the means.
        assert!((r["cross_entropy_gap"].as_f64().unwrap() - (ce(r) - ce(&rows[0]))).abs() < 1e-9, "{r}");
    }
    assert!((ce(&rows[2]) - ce(&rows[0])).abs() > 1e-6, "a prefix changes the loss: {rows:?}");
    // Training on into that folder after the run's problems changed would train on held-out ones.
    let mut moved = manifest.clone();
    moved["provenance"]["holdout_ids"] = serde_json::json!(["gsm8k/dev/999"]);
    std::fs::write(dir.path().join("context-hidden/manifest.json"), moved.to_string()).unwrap();
    let resumed = tcomm(&[
        "train-adapter", "--run", path(&pipeline.join("collect")), "--ae", path(&pipeline.join("ae")), "--adapter-context", "hidden",
        "--steps", "2", "--batch-size", "2", "--holdout", "1", "--out", path(&dir.path().join("context-hidden")),
    ]);
    assert!(!resumed.status.success());
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("held out other problems"), "{}", String::from_utf8_lossy(&resumed.stderr));
    // A pipeline whose adapters saw every problem of their run has nothing held out there.
    let none_left = tcomm(&["eval-adapter", "--pipeline", path(&pipeline)]);
    assert!(!none_left.status.success());
    assert!(String::from_utf8_lossy(&none_left.stderr).contains("retrain with --holdout N"), "{}", String::from_utf8_lossy(&none_left.stderr));

    // Pipelines that do not fit are refused before anything is generated.
    let refused = debate(&pipeline, &dir.path().join("two"), "2");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("trained for 3 agents, the debate has 2"), "{stderr}");
    assert!(read_results(&dir.path().join("two")).unwrap().is_empty());
    let missing = debate(&dir.path().join("nowhere"), &dir.path().join("none"), "3");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("manifest.json"));

    // A penalty that switches the decoder off stops `tcomm train` before any adapter is trained
    // (the collected debates are reused through a link: the collection step finds them done).
    let collapsed = dir.path().join("collapsed");
    std::fs::create_dir(&collapsed).unwrap();
    std::os::unix::fs::symlink(pipeline.join("collect"), collapsed.join("collect")).unwrap();
    let stopped = tcomm(&[
        "train", "--model", "smollm2-135m", "--dataset", "gsm8k", "--limit", "2", "--max-new-tokens", "16", "--latent-dim", "8",
        "--lambda", "10", "--ae-steps", "100", "--adapter-steps", "3", "--out", path(&collapsed),
    ]);
    assert!(!stopped.status.success());
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(stderr.contains("of the states' variance") && stderr.contains("smaller --lambda"), "{stderr}");
    assert!(collapsed.join("ae/autoencoder.safetensors").is_file());
    assert!(!collapsed.join("adapter-smollm2-135m.safetensors").exists() && !collapsed.join("manifest.json").exists());
}

//! `tcomm identifiability --checkpoint`: a run stopped midway and resumed scores exactly what an
//! uninterrupted run scores, and a checkpoint folder of other data or further along is refused.
use std::path::Path;
use std::process::Command;

/// A small problem: seconds per run.
const SMALL: [&str; 10] = ["--latent-dim", "7", "--hidden", "16,16", "--lambda", "1e-2", "--no-ablation", "--json", "--seed", "3"];

fn identifiability(steps: u64, samples: u64, checkpoint: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tcomm"))
        .arg("identifiability")
        .args(SMALL)
        .args(["--steps", &steps.to_string(), "--samples", &samples.to_string()])
        .args(["--checkpoint", checkpoint.to_str().expect("utf-8 path")])
        .output()
        .expect("run tcomm");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn scores(stdout: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert!(v["mcc_shared_no_sparsity"].is_null(), "--no-ablation still trained the ablation: {v}");
    serde_json::json!([v["mcc_shared"], v["mcc_private"], v["structure_f1"], v["sparse"]["matched"]])
}

#[test]
fn resumed_run_matches_an_uninterrupted_one_and_bad_folders_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (whole, resumed) = (dir.path().join("whole"), dir.path().join("resumed"));

    let (ok, reference, err) = identifiability(400, 600, &whole);
    assert!(ok, "{err}");
    // Without a terminal, the progress of each training is logged (twice here: 200 and 400 steps).
    assert!(err.contains("sparse:") && err.contains("400/400"), "no progress line: {err}");

    let (ok, _, err) = identifiability(200, 600, &resumed);
    assert!(ok, "{err}");
    let (ok, stdout, err) = identifiability(400, 600, &resumed);
    assert!(ok, "{err}");
    assert!(err.contains("resuming at step 200 of 400"), "{err}");
    assert_eq!(scores(&stdout), scores(&reference), "resumed run differs from the uninterrupted one");

    // Other data in the same folder, and a checkpoint further along than --steps: refused, unchanged.
    let (ok, _, err) = identifiability(400, 500, &resumed);
    assert!(!ok && err.contains("data.json") && err.contains("other data"), "{err}");
    let (ok, _, err) = identifiability(200, 600, &resumed);
    assert!(!ok && err.contains("beyond --steps") && !err.contains("panicked"), "{err}");
    let (ok, stdout, err) = identifiability(400, 600, &resumed);
    assert!(ok, "{err}");
    assert_eq!(scores(&stdout), scores(&reference), "a refused run changed the checkpoint");
}

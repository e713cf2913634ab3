//! Bad input reaches the user as one line naming the file and the problem, a non-zero exit
//! code, and never a panic.
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::tiny_gguf::{self, Value};

fn tcomm(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tcomm")).args(args).env("RUST_LOG", "error").output().expect("run tcomm");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Runs `tcomm logits` on `model` and checks the failure shape; returns the error line.
fn expect_failure(model: &str, needles: &[&str]) -> String {
    let (code, stdout, stderr) = tcomm(&["logits", "--model", model, "--text", "abc"]);
    assert_ne!(code, 0, "expected failure for {model}; stdout: {stdout}");
    assert!(!stderr.contains("panicked"), "panic for {model}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line for {model}, got: {stderr}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    for needle in needles {
        assert!(line.contains(needle), "error line '{line}' lacks '{needle}'");
    }
    line.to_string()
}

fn write_variant(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<(String, Value)>, &mut Vec<tiny_gguf::TensorSpec>)) -> PathBuf {
    let (mut metadata, mut tensors) = tiny_gguf::tiny_llama();
    edit(&mut metadata, &mut tensors);
    let path = dir.join(name);
    tiny_gguf::write(&path, &metadata, &tensors);
    path
}

#[test]
fn valid_tiny_gguf_runs() {
    // The control: the unbroken file loads and yields logits, so each failure below is caused
    // by its one defect.
    let dir = tempfile::tempdir().unwrap();
    let path = write_variant(dir.path(), "ok.gguf", |_, _| {});
    let (code, stdout, stderr) = tcomm(&["logits", "--model", path.to_str().unwrap(), "--text", "abc", "--top-k", "3", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(v["top"].as_array().map(Vec::len), Some(3));
}

#[test]
fn truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_variant(dir.path(), "cut.gguf", |_, _| {});
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 200]).unwrap();
    expect_failure(path.to_str().unwrap(), &["cut.gguf", "truncated"]);
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notgguf.gguf");
    std::fs::write(&path, b"PK\x03\x04 this is a zip, not a model").unwrap();
    expect_failure(path.to_str().unwrap(), &["notgguf.gguf", "not a GGUF file"]);
}

#[test]
fn unknown_quant_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_variant(dir.path(), "q99.gguf", |_, t| t[3].ggml_type = 99);
    expect_failure(path.to_str().unwrap(), &["q99.gguf", "99"]);
}

#[test]
fn tensor_shape_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_variant(dir.path(), "shape.gguf", |_, t| {
        t[3].dims = vec![8, 4];
        t[3].data.truncate(32 * 4);
    });
    expect_failure(path.to_str().unwrap(), &["shape.gguf", "blk.0.attn_q.weight", "shape"]);
}

#[test]
fn missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_variant(dir.path(), "missing.gguf", |_, t| {
        t.retain(|x| x.name != "blk.0.ffn_down.weight");
    });
    expect_failure(path.to_str().unwrap(), &["missing.gguf", "missing tensor", "ffn_down"]);
}

#[test]
fn unsupported_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_variant(dir.path(), "mamba.gguf", |m, _| {
        m[0].1 = Value::Str("mamba".into());
    });
    expect_failure(path.to_str().unwrap(), &["mamba.gguf", "unsupported architecture 'mamba'"]);
}

#[test]
fn missing_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_variant(dir.path(), "notok.gguf", |m, _| m.retain(|(k, _)| !k.starts_with("tokenizer.")));
    expect_failure(path.to_str().unwrap(), &["notok.gguf", "tokenizer"]);
}

#[test]
fn checkpoint_folder_without_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/fixtures/tiny/llama");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny.join(f), dir.path().join(f)).unwrap();
    }
    expect_failure(dir.path().to_str().unwrap(), &["tokenizer.json"]);
}

#[test]
fn unknown_model_name() {
    let line = expect_failure("llama-9000b", &["unknown model 'llama-9000b'"]);
    assert!(line.contains("smollm2-135m"), "the error lists the known names: {line}");
}

#[test]
fn bad_device() {
    let (code, _, stderr) = tcomm(&["logits", "--device", "tpu", "--text", "x"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("bad device 'tpu'"), "{stderr}");
}

#[test]
fn experiment_refuses_to_train_on_the_problems_it_evaluates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("x");
    let (code, _, stderr) = tcomm(&["experiment", "thoughtcomm-vs-text", "--dataset", "math", "--out", out.to_str().expect("utf-8 path")]);
    assert_ne!(code, 0);
    assert!(stderr.contains("evaluate on math500") && !stderr.contains("panicked"), "{stderr}");
    assert!(!out.join("pipeline").exists(), "nothing is trained before the refusal");
}

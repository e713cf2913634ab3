//! The three real GGUF models against transformers' outputs recorded by
//! `scripts/make_reference_outputs.py` (float32): identical token ids, the same top-10 ids in
//! the same order, logits within 1e-3, chat-template prompt ids, and greedy generation token
//! for token.
//! Needs the models from `scripts/setup`; fails (never skips) without them.
use std::path::PathBuf;

use runtime::generate::{generate, last_logits, SamplingParams};
use runtime::loader::{load, Model};
use serde::Deserialize;
use tch::{Device, Kind};

const LOGIT_TOLERANCE: f64 = 1e-3;

#[derive(Deserialize)]
struct Reference {
    logits: Vec<LogitsCase>,
    generate: Vec<GenerateCase>,
}

#[derive(Deserialize)]
struct LogitsCase {
    text: String,
    token_ids: Vec<u32>,
    top: Vec<Top>,
}

#[derive(Deserialize)]
struct Top {
    id: i64,
    logit: f64,
}

#[derive(Deserialize)]
struct GenerateCase {
    messages: Vec<runtime::tokenizer::ChatMessage>,
    prompt_ids: Vec<u32>,
    eos_token_ids: Vec<u32>,
    max_new_tokens: usize,
    new_ids: Vec<u32>,
}

fn setup(name: &str) -> (Model, Reference) {
    let model = load(name, Device::Cpu, Kind::Float).unwrap_or_else(|e| panic!("{e} (run scripts/setup first)"));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/reference/{name}.json"));
    let text = std::fs::read_to_string(&path).expect("reference json");
    (model, serde_json::from_str(&text).expect("reference format"))
}

fn check_model(name: &str) {
    let (model, reference) = setup(name);
    for case in &reference.logits {
        let ids = model.tokenizer.encode(&case.text, true).expect("encode");
        assert_eq!(ids, case.token_ids, "{name}: token ids of {:?}", case.text);
        let logits = last_logits(&model.network, &ids).expect("forward");
        let (values, indices) = logits.topk(case.top.len() as i64, -1, true, true);
        let values = Vec::<f64>::try_from(values.to_kind(Kind::Double)).expect("values");
        let indices = Vec::<i64>::try_from(indices).expect("indices");
        let expected_ids: Vec<i64> = case.top.iter().map(|t| t.id).collect();
        assert_eq!(indices, expected_ids, "{name}: top ids of {:?}", case.text);
        for (got, want) in values.iter().zip(&case.top) {
            assert!((got - want.logit).abs() < LOGIT_TOLERANCE, "{name}: logit {got} vs {} for {:?}", want.logit, case.text);
        }
    }
    for case in &reference.generate {
        // The chat template (gemma3's built-in one where the GGUF has none) gives the same ids.
        let prompt = model.tokenizer.encode_chat(&case.messages).expect("chat template");
        assert_eq!(prompt, case.prompt_ids, "{name}: chat prompt ids");
        let params = SamplingParams {
            max_new_tokens: case.max_new_tokens,
            stop_token_ids: case.eos_token_ids.clone(),
            ..Default::default()
        };
        let out = generate(&model.network, &case.prompt_ids, &params).expect("generate");
        assert_eq!(out.tokens, case.new_ids, "{name}: greedy generation");
    }
}

#[test]
fn smollm2_matches_transformers() {
    check_model("smollm2-135m");
}

#[test]
fn gemma3_matches_transformers() {
    check_model("gemma3-270m");
}

#[test]
fn qwen25_matches_transformers() {
    check_model("qwen2.5-0.5b");
}

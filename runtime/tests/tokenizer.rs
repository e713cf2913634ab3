//! `TextTokenizer` against Hugging Face transformers: every fixture under
//! `tests/fixtures/tokenizer/` holds what transformers produced (ids, decodes, rendered chat
//! templates and their ids) for the same strings and conversations; see
//! `scripts/make_tokenizer_fixtures.py`, which writes them. Each test reports how many cases
//! match and prints the first mismatches in full.

use std::path::{Path, PathBuf};

use runtime::gguf::GgufFile;
use runtime::tokenizer::{ChatMessage, TextTokenizer, TokenizerError};
use serde_json::Value;

const SHOWN_MISMATCHES: usize = 8;

fn models_dir() -> PathBuf {
    std::env::var_os("TCOMM_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("models")
        })
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join("tokenizer")
}

fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load_gguf(file: &str) -> TextTokenizer {
    let path = models_dir().join(file);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup to download the test models (or point TCOMM_MODELS at them)",
        path.display()
    );
    let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    TextTokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{e}"))
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("an id list")
        .iter()
        .map(|v| u32::try_from(v.as_u64().expect("an id")).expect("a u32 id"))
        .collect()
}

fn text(value: &Value) -> &str {
    value.as_str().expect("a string")
}

/// Each token of `ids` decoded on its own, to show where two id lists part.
fn pieces(tok: &TextTokenizer, ids: &[u32]) -> String {
    let pieces: Vec<String> = ids
        .iter()
        .map(|&id| format!("{id}:{:?}", tok.decode(&[id], false).unwrap_or_default()))
        .collect();
    pieces.join(" ")
}

/// Collects mismatches and fails at the end with a count and the first few in full.
struct Report {
    name: String,
    checked: usize,
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, ok: bool, describe: impl FnOnce() -> String) {
        self.checked += 1;
        if !ok {
            self.failures.push(describe());
        }
    }

    /// `what` as transformers has it against ours.
    fn same<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: impl FnOnce() -> String,
        theirs: T,
        ours: T,
    ) {
        let ok = theirs == ours;
        self.check(ok, || {
            format!(
                "{}:\n  transformers {theirs:?}\n  ours         {ours:?}",
                what()
            )
        });
    }

    fn finish(self) {
        let matched = self.checked - self.failures.len();
        eprintln!(
            "{}: {matched} of {} checks match transformers",
            self.name, self.checked
        );
        let shown: Vec<&str> = self
            .failures
            .iter()
            .take(SHOWN_MISMATCHES)
            .map(String::as_str)
            .collect();
        assert!(
            self.failures.is_empty(),
            "{}: {} of {} checks differ from transformers; the first {}:\n\n{}",
            self.name,
            self.failures.len(),
            self.checked,
            shown.len(),
            shown.join("\n\n")
        );
    }
}

/// Compares `tok` with the fixture `name` in every respect the fixture records; returns how many
/// strings and conversations it holds.
fn check_against_fixture(name: &str, tok: &mut TextTokenizer) -> (usize, usize) {
    let fx = fixture(name);
    let mut report = Report {
        name: name.to_owned(),
        checked: 0,
        failures: Vec::new(),
    };
    report.same(
        || "len(tok)".into(),
        fx["len"].as_u64(),
        Some(tok.vocab_size() as u64),
    );
    report.same(
        || "bos_token_id".into(),
        fx["bos_token_id"].as_u64(),
        tok.bos_token_id().map(u64::from),
    );
    let eos = tok.eos_token_ids().first().map(|&id| u64::from(id));
    report.same(|| "eos_token_id".into(), fx["eos_token_id"].as_u64(), eos);
    let map = fx["special_tokens_map"]
        .as_object()
        .expect("special_tokens_map");
    let mut theirs: Vec<(String, String)> = map
        .iter()
        .map(|(k, v)| (k.clone(), text(v).to_owned()))
        .collect();
    let mut ours = tok.special_tokens_map().clone();
    theirs.sort();
    ours.sort();
    report.same(|| "special_tokens_map".into(), theirs, ours);
    report.same(
        || "chat template".into(),
        fx["chat_template"].as_str(),
        tok.chat_template(),
    );

    let strings = fx["strings"].as_array().expect("strings");
    for case in strings {
        let input = text(&case["text"]);
        for (key, add_special) in [("ids", true), ("ids_no_special", false)] {
            let expected = ids(&case[key]);
            let got = tok.encode(input, add_special).map_err(|e| e.to_string());
            // Where the two part, token by token (only worth computing for a mismatch).
            let pieces = match &got {
                Ok(ours) if *ours != expected => format!(
                    "\n  transformers pieces {}\n  our pieces          {}",
                    pieces(tok, &expected),
                    pieces(tok, ours)
                ),
                _ => String::new(),
            };
            let what = || format!("encode({input:?}, add_special_tokens={add_special}){pieces}");
            report.same(what, Ok(expected), got);
        }
    }
    let decodes = fx["decodes"].as_array().expect("decodes");
    for case in strings.iter().chain(decodes) {
        let encoded = ids(&case["ids"]);
        for (key, skip) in [("decoded", false), ("decoded_skip_special", true)] {
            let got = tok.decode(&encoded, skip).map_err(|e| e.to_string());
            let what = || format!("decode({encoded:?}, skip_special_tokens={skip})");
            report.same(
                what,
                Ok(text(&case[key])),
                got.as_deref().map_err(String::as_str),
            );
        }
    }

    if !fx["chat_template_error"].is_null() {
        let got = tok.apply_chat_template(&[ChatMessage::new("user", "hi")], true);
        let ok = matches!(got, Err(TokenizerError::NoChatTemplate { .. }));
        report.check(ok, || {
            format!("transformers refuses to render without a template; ours: {got:?}")
        });
    }
    if let Some(template) = fx["template_override"].as_str() {
        tok.set_chat_template(Some(template.to_owned()));
    }
    let conversations = fx["conversations"].as_array().expect("conversations");
    for case in conversations {
        let chat: Vec<ChatMessage> =
            serde_json::from_value(case["messages"].clone()).expect("messages");
        if let Some(error) = case["error"].as_str() {
            let got = tok.apply_chat_template(&chat, true);
            let ok = matches!(&got, Err(TokenizerError::Template { message, .. }) if message.contains(error));
            report.check(ok, || {
                format!("chat {chat:?}: transformers raises {error:?}; ours {got:?}")
            });
            continue;
        }
        for (key, generation_prompt) in [("text", true), ("text_no_generation_prompt", false)] {
            let got = tok
                .apply_chat_template(&chat, generation_prompt)
                .map_err(|e| e.to_string());
            let what = || {
                format!("apply_chat_template({chat:?}, add_generation_prompt={generation_prompt})")
            };
            report.same(
                what,
                Ok(text(&case[key])),
                got.as_deref().map_err(String::as_str),
            );
        }
        let got = tok.encode_chat(&chat).map_err(|e| e.to_string());
        report.same(
            || format!("encode_chat({chat:?})"),
            Ok(ids(&case["ids"])),
            got,
        );
    }
    if !fx["empty_conversation"].is_null() {
        let got = tok.apply_chat_template(&[], true);
        let ok = matches!(got, Err(TokenizerError::EmptyConversation { .. }));
        report.check(ok, || {
            format!("empty conversation: transformers raises; ours {got:?}")
        });
    }
    let counts = (strings.len(), conversations.len());
    report.finish();
    counts
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let mut tok = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf");
    let (strings, conversations) = check_against_fixture("smollm2", &mut tok);
    assert!(strings >= 200 && conversations >= 50);
    // <|im_end|> is the eos; <|endoftext|> ends documents and is a stop token as well.
    assert_eq!(tok.eos_token_ids(), vec![2, 0]);
}

#[test]
fn gemma3_gguf_matches_transformers() {
    let mut tok = load_gguf("gemma-3-270m-q4_k_m.gguf");
    assert_eq!(
        tok.chat_template(),
        None,
        "this GGUF ships no chat template"
    );
    let (strings, conversations) = check_against_fixture("gemma3", &mut tok);
    assert!(strings >= 200 && conversations >= 50);
    assert_eq!(
        tok.eos_token_ids(),
        vec![1, 106],
        "<eos>, then <end_of_turn>"
    );
}

#[test]
fn qwen2_gguf_matches_transformers() {
    let mut tok = load_gguf("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    let (strings, conversations) = check_against_fixture("qwen2", &mut tok);
    assert!(strings >= 200 && conversations >= 50);
    assert_eq!(
        tok.eos_token_ids(),
        vec![151645, 151643],
        "<|im_end|>, then <|endoftext|>"
    );
}

fn load_synthetic_gguf(name: &str) -> TextTokenizer {
    let path = fixtures_dir().join("gguf").join(format!("{name}.gguf"));
    let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    TextTokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{e}"))
}

/// Llama-style SentencePiece (Metaspace, BOS added by default) with a template writing `<s>`.
#[test]
fn sentencepiece_llama_gguf_matches_transformers() {
    let mut tok = load_synthetic_gguf("spm_llama");
    check_against_fixture("spm_llama", &mut tok);
    let chat = [ChatMessage::new("user", "Hi")];
    let ids = tok.encode_chat(&chat).expect("encode_chat");
    assert_eq!(
        ids.iter()
            .filter(|&&id| Some(id) == tok.bos_token_id())
            .count(),
        1,
        "one BOS, from the template"
    );
}

/// Phi-3's SentencePiece variant: the prefix space comes from a normalizer.
#[test]
fn sentencepiece_phi3_gguf_matches_transformers() {
    let mut tok = load_synthetic_gguf("spm_phi3");
    check_against_fixture("spm_phi3", &mut tok);
}

/// Byte-level BPE with a Llama-3 split regex, `add_bos_token`, an eot id, a mislabelled control
/// token, and no `<|endoftext|>`, which transformers' GPT2Tokenizer appends as a new token.
#[test]
fn byte_level_llama3_gguf_matches_transformers() {
    let mut tok = load_synthetic_gguf("bpe_llama3");
    check_against_fixture("bpe_llama3", &mut tok);
    assert_eq!(tok.vocab_size(), 502);
    assert_eq!(
        tok.encode("<|endoftext|>", false).expect("encode"),
        vec![501]
    );
}

#[test]
fn hf_bytelevel_dir_matches_transformers() {
    let mut tok = TextTokenizer::from_hf_dir(&fixtures_dir().join("hf_bytelevel"))
        .unwrap_or_else(|e| panic!("{e}"));
    check_against_fixture("hf_bytelevel", &mut tok);
}

#[test]
fn hf_unigram_dir_matches_transformers() {
    let mut tok = TextTokenizer::from_hf_dir(&fixtures_dir().join("hf_unigram"))
        .unwrap_or_else(|e| panic!("{e}"));
    check_against_fixture("hf_unigram", &mut tok);
}

#[test]
fn text_tokenizer_is_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<TextTokenizer>();
}

#[test]
fn missing_tokenizer_json_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = TextTokenizer::from_hf_dir(dir.path()).expect_err("an empty folder has no tokenizer");
    let message = err.to_string();
    assert!(
        message.contains("no tokenizer.json")
            && message.contains(&dir.path().display().to_string()),
        "{message}"
    );
}

#[test]
fn malformed_tokenizer_config_is_reported() {
    let dir = copy_of("hf_bytelevel");
    std::fs::write(dir.path().join("tokenizer_config.json"), "{ not json").expect("write");
    let message = TextTokenizer::from_hf_dir(dir.path())
        .expect_err("broken config")
        .to_string();
    assert!(message.contains("tokenizer_config.json"), "{message}");
}

#[test]
fn chat_template_errors_are_clear() {
    let dir = copy_of("hf_bytelevel");
    let template = dir.path().join("chat_template.jinja");
    let hi = [ChatMessage::new("user", "hi")];
    std::fs::write(&template, "{% for m in messages %}{{ m.content }").expect("write");
    let tok =
        TextTokenizer::from_hf_dir(dir.path()).expect("a broken template does not stop loading");
    assert!(!tok
        .encode("hello", false)
        .expect("plain tokenization still works")
        .is_empty());
    let err = tok
        .apply_chat_template(&hi, true)
        .expect_err("cannot render");
    let message = err.to_string();
    assert!(matches!(err, TokenizerError::Template { .. }), "{message}");
    assert!(
        message.contains("chat template") && message.contains("does not compile"),
        "{message}"
    );
    assert!(!message.contains('\n'), "one-line message: {message}");

    std::fs::write(&template, "{{ raise_exception('no system prompts here') }}").expect("write");
    let tok = TextTokenizer::from_hf_dir(dir.path()).expect("loads");
    let message = tok
        .apply_chat_template(&hi, true)
        .expect_err("raises")
        .to_string();
    assert!(message.contains("no system prompts here"), "{message}");
}

/// A copy of a fixture folder to modify.
fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fixtures_dir().join(name)).expect("fixture folder") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("file name"))).expect("copy");
    }
    dir
}

/// A GGUF holding only string metadata and, optionally, a token list: enough to exercise the
/// tokenizer loader's errors.
fn write_gguf(path: &Path, strings: &[(&str, &str)], tokens: Option<&[&str]>) {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes()); // version
    out.extend(0u64.to_le_bytes()); // tensors
    out.extend((strings.len() as u64 + u64::from(tokens.is_some())).to_le_bytes());
    for (key, value) in strings {
        string(&mut out, key);
        out.extend(8u32.to_le_bytes()); // string
        string(&mut out, value);
    }
    if let Some(tokens) = tokens {
        string(&mut out, "tokenizer.ggml.tokens");
        out.extend(9u32.to_le_bytes()); // array
        out.extend(8u32.to_le_bytes()); // of strings
        out.extend((tokens.len() as u64).to_le_bytes());
        for token in tokens {
            string(&mut out, token);
        }
    }
    std::fs::write(path, out).expect("write gguf");
}

#[test]
fn gguf_tokenizer_errors_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let load = |name: &str, model: &str, tokens: Option<&[&str]>| {
        let path = dir.path().join(name);
        let strings = [
            ("general.architecture", "llama"),
            ("tokenizer.ggml.model", model),
        ];
        write_gguf(&path, &strings, tokens);
        let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        TextTokenizer::from_gguf(&gguf)
            .expect_err("cannot load")
            .to_string()
    };
    let bert = load("bert.gguf", "bert", Some(&["[PAD]", "[UNK]", "hello"]));
    assert_eq!(bert, "bert.gguf: unsupported tokenizer model 'bert'");
    assert_eq!(
        load("x.gguf", "gpt2", None),
        "x.gguf: tokenizer.ggml.tokens missing"
    );
}

//! A Hugging Face checkpoint folder's tokenizer, as transformers 5 loads it for a fast tokenizer
//! (`PreTrainedTokenizerBase.from_pretrained` → `TokenizersBackend.__init__`):
//! - `tokenizer.json` is the pipeline (model, normalizer, pre-tokenizer, decoder, post-processor);
//! - `tokenizer_config.json` names the special tokens (`bos_token`, ...; model-specific
//!   `*_token` keys too), lists extra added tokens (`added_tokens_decoder`) and may hold the chat
//!   template; `special_tokens_map.json` overrides the named tokens when the config has no
//!   `added_tokens_decoder` (transformers' legacy path);
//! - `chat_template.jinja` takes priority over the config's template;
//! - `add_bos_token` / `add_eos_token` in the config are ignored: transformers drops them when a
//!   `tokenizer.json` exists, whose post-processor decides. Only a `tokenizer.json` without one
//!   gets transformers' default, which adds nothing;
//! - `generation_config.json`'s `eos_token_id` (a number or a list) adds stop ids.
//!
//! Model-specific tokenizer classes may rebuild the normalizer / pre-tokenizer / decoder from
//! their own defaults instead of `tokenizer.json`'s; those defaults are written to match the
//! published `tokenizer.json` files, which are used here as they are.

use std::path::Path;

use serde_json::{Map, Value};
use tokenizers::{AddedToken, Tokenizer};

use super::vocab::post_processor;
use super::{Parts, TokenizerError};

/// transformers' `SPECIAL_TOKENS_ATTRIBUTES`, in its order.
const NAMED_TOKENS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

pub(crate) fn load(dir: &Path) -> Result<Parts, TokenizerError> {
    let source_name = dir.display().to_string();
    let tokenizer_path = dir.join("tokenizer.json");
    if !tokenizer_path.is_file() {
        return Err(TokenizerError::Missing {
            source_name,
            what: "no tokenizer.json".to_owned(),
        });
    }
    let mut tokenizer =
        Tokenizer::from_file(&tokenizer_path).map_err(|e| TokenizerError::Invalid {
            source_name: tokenizer_path.display().to_string(),
            message: format!("cannot load: {e}"),
        })?;
    let config = read_json_object(&dir.join("tokenizer_config.json"))?.unwrap_or_default();

    // Named special tokens: the config's, overridden by special_tokens_map.json on the legacy path.
    let mut named: Vec<(String, AddedToken)> = Vec::new();
    let mut set_named = |name: &str, value: &Value| {
        if let Some(token) = added_token(value, true) {
            match named.iter_mut().find(|(n, _)| n == name) {
                Some(entry) => entry.1 = token,
                None => named.push((name.to_owned(), token)),
            }
        }
    };
    for name in NAMED_TOKENS {
        if let Some(value) = config.get(name) {
            set_named(name, value);
        }
    }
    // Model-specific names (`image_token`, `boi_token`...) count as named too.
    let model_specific = config
        .iter()
        .filter(|(k, _)| k.ends_with("_token") && !NAMED_TOKENS.contains(&k.as_str()));
    let extra_named = config
        .get("extra_special_tokens")
        .and_then(Value::as_object)
        .into_iter()
        .flatten();
    for (name, value) in model_specific.chain(extra_named) {
        set_named(name, value);
    }
    if !config.contains_key("added_tokens_decoder") {
        if let Some(map) = read_json_object(&dir.join("special_tokens_map.json"))? {
            for (name, value) in map.iter().filter(|(k, _)| k.ends_with("_token")) {
                set_named(name, value);
            }
        }
    }

    // Tokens the config adds on top of tokenizer.json, by id, then the named ones still missing.
    let mut to_add: Vec<(u64, AddedToken)> = config
        .get("added_tokens_decoder")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(id, value)| Some((id.parse::<u64>().ok()?, added_token(value, false)?)))
        .collect();
    to_add.sort_by_key(|(id, _)| *id);
    let extra_list = ["extra_special_tokens", "additional_special_tokens"]
        .iter()
        .filter_map(|key| config.get(*key).and_then(Value::as_array))
        .flatten()
        .filter_map(|value| added_token(value, true));
    let candidates = to_add
        .into_iter()
        .map(|(_, t)| t)
        .chain(named.iter().map(|(_, t)| t.clone()))
        .chain(extra_list);
    for token in candidates {
        let present = tokenizer
            .get_added_tokens_decoder()
            .values()
            .any(|t| t.content == token.content);
        if !present {
            tokenizer.add_tokens(&[token]);
        }
    }

    let special_tokens: Vec<(String, String)> = named
        .into_iter()
        .map(|(name, token)| (name, token.content))
        .collect();
    if tokenizer.get_post_processor().is_none() {
        let processor =
            post_processor(&tokenizer, &special_tokens, false, false).map_err(|message| {
                TokenizerError::Invalid {
                    source_name: source_name.clone(),
                    message,
                }
            })?;
        tokenizer.with_post_processor(Some(processor));
    }

    let template_file = dir.join("chat_template.jinja");
    let chat_template = if template_file.is_file() {
        Some(
            std::fs::read_to_string(&template_file)
                .map_err(|error| io_error(&template_file, error))?,
        )
    } else {
        config_template(&config, &source_name)
    };

    let extra_eos_ids = match read_json_object(&dir.join("generation_config.json"))? {
        Some(generation) => match generation.get("eos_token_id") {
            Some(Value::Array(ids)) => ids.iter().filter_map(as_id).collect(),
            Some(id) => as_id(id).into_iter().collect(),
            None => Vec::new(),
        },
        None => Vec::new(),
    };

    Ok(Parts {
        inner: tokenizer,
        special_tokens,
        extra_eos_ids,
        chat_template,
        clean_up_tokenization_spaces: config
            .get("clean_up_tokenization_spaces")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        source_name,
    })
}

fn as_id(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|id| u32::try_from(id).ok())
}

/// The config's template: a string, or a list of named templates of which "default" is used.
fn config_template(config: &Map<String, Value>, source_name: &str) -> Option<String> {
    match config.get("chat_template")? {
        Value::String(template) => Some(template.clone()),
        Value::Array(named) => {
            let default = named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
            let template = default
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if template.is_none() {
                tracing::warn!("{source_name}: tokenizer_config.json has named chat templates but none called 'default'");
            }
            template
        }
        _ => None,
    }
}

/// A token as the config writes it: a string, or an `AddedToken` object with its flags.
/// `named` marks the named special tokens, which are special whatever the object says.
fn added_token(value: &Value, named: bool) -> Option<AddedToken> {
    match value {
        Value::String(content) => Some(AddedToken::from(content.clone(), true).normalized(false)),
        Value::Object(fields) => {
            let content = fields.get("content")?.as_str()?;
            let flag = |name: &str, default: bool| {
                fields.get(name).and_then(Value::as_bool).unwrap_or(default)
            };
            let special = named || flag("special", false);
            Some(
                AddedToken::from(content, special)
                    .single_word(flag("single_word", false))
                    .lstrip(flag("lstrip", false))
                    .rstrip(flag("rstrip", false))
                    .normalized(flag("normalized", !special)),
            )
        }
        _ => None,
    }
}

fn io_error(path: &Path, error: std::io::Error) -> TokenizerError {
    TokenizerError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// A JSON object file, `None` when the file does not exist.
fn read_json_object(path: &Path) -> Result<Option<Map<String, Value>>, TokenizerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(TokenizerError::Invalid {
            source_name: path.display().to_string(),
            message: "not a JSON object".to_owned(),
        }),
        Err(e) => Err(TokenizerError::Invalid {
            source_name: path.display().to_string(),
            message: e.to_string(),
        }),
    }
}

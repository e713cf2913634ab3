//! The tokenizer part of a GGUF file's metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`),
//! read and checked once, so that `gguf_convert` works on plain data.

use std::collections::BTreeMap;

use super::TokenizerError;
use crate::gguf::MetaValue;

/// The tokenizer part of a GGUF's metadata, read out once so the conversion does not depend on
/// the file.
#[derive(Debug)]
pub(crate) struct GgufVocab {
    pub source_name: String,
    pub architecture: String,
    /// `tokenizer.ggml.model`: "gpt2", "llama", ...
    pub model: String,
    /// `tokenizer.ggml.pre`: names the pre-tokenizer split regex of byte-level vocabularies.
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f64>>,
    pub token_types: Option<Vec<u64>>,
    pub merges: Option<Vec<String>>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    /// End-of-turn / end-of-message ids some files name; generation stops on them too.
    pub eot_id: Option<u32>,
    pub eom_id: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub chat_template: Option<String>,
}

impl GgufVocab {
    pub(crate) fn from_metadata(
        source_name: &str,
        architecture: &str,
        meta: &BTreeMap<String, MetaValue>,
    ) -> Result<Self, TokenizerError> {
        let reader = MetaReader { source_name, meta };
        let model = reader
            .string("tokenizer.ggml.model")?
            .ok_or_else(|| reader.missing("tokenizer.ggml.model"))?;
        let tokens = reader.array("tokenizer.ggml.tokens", |v| v.as_str().map(str::to_owned))?;
        let tokens = tokens.ok_or_else(|| reader.missing("tokenizer.ggml.tokens"))?;
        Ok(Self {
            source_name: source_name.to_owned(),
            architecture: architecture.to_owned(),
            model,
            pre: reader.string("tokenizer.ggml.pre")?,
            scores: reader.array("tokenizer.ggml.scores", MetaValue::as_f64)?,
            token_types: reader.array("tokenizer.ggml.token_type", MetaValue::as_u64)?,
            merges: reader.array("tokenizer.ggml.merges", |v| v.as_str().map(str::to_owned))?,
            bos_id: reader.token_id("tokenizer.ggml.bos_token_id", tokens.len())?,
            eos_id: reader.token_id("tokenizer.ggml.eos_token_id", tokens.len())?,
            unk_id: reader.token_id("tokenizer.ggml.unknown_token_id", tokens.len())?,
            pad_id: reader.token_id("tokenizer.ggml.padding_token_id", tokens.len())?,
            eot_id: reader.token_id("tokenizer.ggml.eot_token_id", tokens.len())?,
            eom_id: reader.token_id("tokenizer.ggml.eom_token_id", tokens.len())?,
            add_bos: reader.boolean("tokenizer.ggml.add_bos_token")?,
            add_eos: reader.boolean("tokenizer.ggml.add_eos_token")?,
            chat_template: reader.string("tokenizer.chat_template")?,
            tokens,
        })
    }

    pub(crate) fn invalid(&self, message: impl Into<String>) -> TokenizerError {
        TokenizerError::Invalid {
            source_name: self.source_name.clone(),
            message: message.into(),
        }
    }
}

struct MetaReader<'a> {
    source_name: &'a str,
    meta: &'a BTreeMap<String, MetaValue>,
}

impl MetaReader<'_> {
    fn missing(&self, key: &str) -> TokenizerError {
        TokenizerError::Missing {
            source_name: self.source_name.to_owned(),
            what: format!("{key} missing"),
        }
    }

    fn wrong_type(&self, key: &str, expected: &str) -> TokenizerError {
        TokenizerError::Invalid {
            source_name: self.source_name.to_owned(),
            message: format!("{key} is not {expected}"),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, TokenizerError> {
        self.meta
            .get(key)
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| self.wrong_type(key, "a string"))
            })
            .transpose()
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, TokenizerError> {
        self.meta
            .get(key)
            .map(|v| v.as_bool().ok_or_else(|| self.wrong_type(key, "a bool")))
            .transpose()
    }

    fn token_id(&self, key: &str, vocab_len: usize) -> Result<Option<u32>, TokenizerError> {
        let Some(value) = self.meta.get(key) else {
            return Ok(None);
        };
        let id = value
            .as_u64()
            .ok_or_else(|| self.wrong_type(key, "an unsigned integer"))?;
        match u32::try_from(id) {
            Ok(id) if (id as usize) < vocab_len => Ok(Some(id)),
            _ => Err(TokenizerError::Invalid {
                source_name: self.source_name.to_owned(),
                message: format!("{key} = {id} is outside the vocabulary of {vocab_len} tokens"),
            }),
        }
    }

    fn array<T>(
        &self,
        key: &str,
        item: impl Fn(&MetaValue) -> Option<T>,
    ) -> Result<Option<Vec<T>>, TokenizerError> {
        let Some(value) = self.meta.get(key) else {
            return Ok(None);
        };
        let items = value
            .as_array()
            .ok_or_else(|| self.wrong_type(key, "an array"))?;
        items
            .iter()
            .map(|v| item(v).ok_or_else(|| self.wrong_type(key, "an array of the expected type")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

//! Text tokenizers and chat templates that reproduce what Hugging Face transformers produces.
//!
//! The reference is transformers 5 (`AutoTokenizer.from_pretrained(dir, gguf_file=...)` for a GGUF,
//! `AutoTokenizer.from_pretrained(dir)` for a checkpoint folder): the same token ids for
//! `tok(text, add_special_tokens=...)`, the same strings for `tok.decode(...)` and
//! `tok.apply_chat_template(...)`. Encoding and decoding run on the `tokenizers` crate, the same
//! Rust code that backs transformers' fast tokenizers, configured with the components transformers
//! would put together (see `gguf_convert` for GGUF files, `hf_dir` for checkpoint folders).
//! Chat templates run on minijinja set up like transformers' Jinja environment (`chat_template`).
//! `tests/tokenizer.rs` checks all of this against fixtures written by
//! `scripts/make_tokenizer_fixtures.py`.

mod chat_template;
mod gguf_convert;
mod gguf_vocab;
mod hf_dir;
mod vocab;

use std::collections::BTreeSet;

use chat_template::ChatTemplate;
use tokenizers::models::ModelWrapper;
use tokenizers::Tokenizer;

/// Why a tokenizer could not be loaded or used. Every message is one line and names the file (or
/// model) it is about.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{source_name}: {what}")]
    Missing { source_name: String, what: String },
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: unsupported tokenizer model '{model}'")]
    Unsupported { source_name: String, model: String },
    #[error("{source_name}: {operation} failed: {message}")]
    Tokenizers {
        source_name: String,
        operation: &'static str,
        message: String,
    },
    #[error("{source_name}: no chat template (the model does not ship one)")]
    NoChatTemplate { source_name: String },
    #[error("{source_name}: cannot apply the chat template to an empty conversation")]
    EmptyConversation { source_name: String },
    #[error("{source_name}: chat template: {message}")]
    Template {
        source_name: String,
        message: String,
    },
}

/// One message of a conversation, as transformers' `apply_chat_template` takes it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Named special tokens as transformers' `special_tokens_map` lists them (`bos_token`,
/// `eos_token`, ...), in that order. The chat template sees each as a variable.
pub type SpecialTokensMap = Vec<(String, String)>;

/// A tokenizer plus the chat template of a model.
pub struct TextTokenizer {
    inner: Tokenizer,
    source_name: String,
    special_tokens: SpecialTokensMap,
    bos_token_id: Option<u32>,
    eos_token_ids: Vec<u32>,
    chat_template: Option<ChatTemplate>,
    /// transformers' `clean_up_tokenization_spaces`, which it only applies to non-BPE models.
    clean_up_tokenization_spaces: bool,
}

/// End-of-generation tokens the model may emit at the end of a turn besides its `eos_token`. The
/// list is llama.cpp's (`llama_vocab::impl::load`, "auto-detect special tokens" / EOG), which is
/// what GGUF runtimes stop on; a name counts only where the vocabulary has it as a special token.
const END_OF_TURN_TOKENS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// What a loader hands to [`TextTokenizer::assemble`].
struct Parts {
    inner: Tokenizer,
    source_name: String,
    special_tokens: SpecialTokensMap,
    /// Ids the model stops on beyond the eos token: GGUF `eot`/`eom` ids, `generation_config.json`.
    extra_eos_ids: Vec<u32>,
    chat_template: Option<String>,
    clean_up_tokenization_spaces: bool,
}

impl TextTokenizer {
    /// The tokenizer transformers builds from a GGUF file's metadata (`tokenizer.ggml.*`,
    /// `tokenizer.chat_template`).
    pub fn from_gguf(gguf: &crate::gguf::GgufFile) -> Result<Self, TokenizerError> {
        let source_name = gguf.path().file_name().map_or_else(
            || gguf.path().display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let architecture = gguf.architecture().map_err(|e| TokenizerError::Invalid {
            source_name: source_name.clone(),
            message: e.to_string(),
        })?;
        let spec =
            gguf_vocab::GgufVocab::from_metadata(&source_name, architecture, gguf.metadata())?;
        Ok(Self::assemble(gguf_convert::convert(&spec)?))
    }

    /// The tokenizer of a Hugging Face checkpoint folder: `tokenizer.json`, with
    /// `tokenizer_config.json`, `chat_template.jinja`, `special_tokens_map.json` and
    /// `generation_config.json` where present.
    pub fn from_hf_dir(dir: &std::path::Path) -> Result<Self, TokenizerError> {
        Ok(Self::assemble(hf_dir::load(dir)?))
    }

    fn assemble(parts: Parts) -> Self {
        let Parts {
            inner,
            source_name,
            special_tokens,
            extra_eos_ids,
            chat_template,
            clean_up_tokenization_spaces,
        } = parts;
        let named = |name: &str| {
            special_tokens
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, token)| inner.token_to_id(token))
        };
        let bos_token_id = named("bos_token");
        let special: BTreeSet<u32> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, token)| token.special)
            .map(|(id, _)| id)
            .collect();
        let end_of_turn = END_OF_TURN_TOKENS
            .iter()
            .filter_map(|name| inner.token_to_id(name))
            .filter(|id| special.contains(id));
        let mut eos_token_ids = Vec::new();
        for id in named("eos_token")
            .into_iter()
            .chain(extra_eos_ids)
            .chain(end_of_turn)
        {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        let chat_template = chat_template.map(|source| ChatTemplate::new(source, &source_name));
        Self {
            inner,
            source_name,
            special_tokens,
            bos_token_id,
            eos_token_ids,
            chat_template,
            clean_up_tokenization_spaces,
        }
    }

    /// `tok(text, add_special_tokens=...)["input_ids"]`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| self.tokenizers_error("encode", e))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// `tok.decode(ids, skip_special_tokens=...)`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        let text = self
            .inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.tokenizers_error("decode", e))?;
        // transformers skips the clean-up for BPE models even when the config asks for it, because it
        // deletes real spaces before punctuation there.
        let is_bpe = matches!(self.inner.get_model(), ModelWrapper::BPE(_));
        if self.clean_up_tokenization_spaces && !is_bpe {
            return Ok(clean_up_tokenization(&text));
        }
        Ok(text)
    }

    /// `len(tok)`: the vocabulary including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// `tok.bos_token_id`.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// The ids generation stops on, `tok.eos_token_id` first. After it: for a GGUF,
    /// `tokenizer.ggml.eot_token_id` / `eom_token_id`; for a checkpoint folder, the ids of
    /// `generation_config.json`'s `eos_token_id`; for both, the end-of-turn tokens llama.cpp
    /// recognises by name (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`, `<|endoftext|>`, ...) where
    /// the vocabulary has them as special tokens.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_ids.clone()
    }

    /// transformers' `special_tokens_map`: the named special tokens, which templates see as variables.
    pub fn special_tokens_map(&self) -> &SpecialTokensMap {
        &self.special_tokens
    }

    /// The template `apply_chat_template` renders, if the model has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_ref().map(ChatTemplate::source)
    }

    /// Replaces the model's chat template (or sets one where the model has none), like assigning
    /// `tok.chat_template` in transformers.
    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template.map(|source| ChatTemplate::new(source, &self.source_name));
    }

    /// `tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template =
            self.chat_template
                .as_ref()
                .ok_or_else(|| TokenizerError::NoChatTemplate {
                    source_name: self.source_name.clone(),
                })?;
        if messages.is_empty() {
            return Err(TokenizerError::EmptyConversation {
                source_name: self.source_name.clone(),
            });
        }
        template
            .render(messages, add_generation_prompt, &self.special_tokens)
            .map_err(|message| TokenizerError::Template {
                source_name: self.source_name.clone(),
                message,
            })
    }

    /// `tok.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]`: the rendered
    /// prompt encoded without adding special tokens, since the template writes its own.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, TokenizerError> {
        let text = self.apply_chat_template(messages, true)?;
        self.encode(&text, false)
    }

    fn tokenizers_error(
        &self,
        operation: &'static str,
        error: tokenizers::Error,
    ) -> TokenizerError {
        TokenizerError::Tokenizers {
            source_name: self.source_name.clone(),
            operation,
            message: error.to_string(),
        }
    }
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("source", &self.source_name)
            .field("vocab_size", &self.vocab_size())
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_ids", &self.eos_token_ids)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish()
    }
}

/// transformers' `clean_up_tokenization`: drops the space a word-piece decode leaves before
/// punctuation and English contractions.
fn clean_up_tokenization(text: &str) -> String {
    const REPLACEMENTS: [(&str, &str); 10] = [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ];
    REPLACEMENTS
        .iter()
        .fold(text.to_owned(), |acc, (from, to)| acc.replace(from, to))
}

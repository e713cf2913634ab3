//! A GGUF file's tokenizer, built the way transformers 5 builds it
//! (`transformers/integrations/gguf/gguf_tokenizer_mapping.py`: `get_gguf_tokenizer`,
//! `convert_gguf_tokenizer`), followed by what the tokenizer class `AutoTokenizer` then picks does
//! on top (`TokenizersBackend.__init__`: named special tokens, post-processor).
//!
//! The steps, in transformers' order, because the order decides the ids of tokens the vocabulary
//! lacks:
//! 1. a "builder" by `tokenizer.ggml.model` and architecture: byte-level BPE (GPT2Tokenizer),
//!    SentencePiece-as-BPE (LlamaTokenizer), Gemma's and Phi-3's variants of it. Each class adds
//!    its default special tokens (`<|endoftext|>`, `<s>`...) as it is constructed;
//! 2. the tokens the file marks CONTROL become special added tokens, USER_DEFINED ones plain
//!    added tokens;
//! 3. `tokenizer.ggml.pre` may swap in the split regex the merges were learned with;
//! 4. the named special tokens (from the `*_token_id` keys) are added if still missing, and BOS /
//!    EOS are prepended / appended by a `TemplateProcessing` as `add_bos_token` / `add_eos_token` say.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::gguf_vocab::GgufVocab;
use super::vocab::{bytes_to_unicode, generate_merges, is_python_space, post_processor, PyDict};
use super::{Parts, TokenizerError};

/// llama.cpp's `llama_token_type` values that matter here.
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// The tokenizer class transformers hands the vocabulary to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Builder {
    /// GPT2Tokenizer: byte-level BPE.
    ByteLevel,
    /// A SentencePiece vocabulary run as BPE with byte fallback.
    SentencePiece(Flavor),
}

/// The SentencePiece classes, which differ in normalizer, pre-tokenizer and decoder.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Flavor {
    /// LlamaTokenizer: `Metaspace` adds the prefix space.
    Llama,
    /// LlamaTokenizer with the prefix space from a normalizer (`phi3_tokenizer`).
    Phi3,
    /// GemmaTokenizer, after respelling space-run tokens (`gemma_tokenizer`).
    Gemma,
    /// GemmaTokenizer on the vocabulary as it is (`tokenizer.ggml.model` "gemma4").
    Gemma4,
}

impl Builder {
    fn select(spec: &GgufVocab) -> Result<Self, TokenizerError> {
        match (spec.model.as_str(), spec.architecture.as_str()) {
            ("llama", "gemma" | "gemma2" | "gemma3") => Ok(Self::SentencePiece(Flavor::Gemma)),
            ("llama", "phi3") => Ok(Self::SentencePiece(Flavor::Phi3)),
            ("llama", _) => Ok(Self::SentencePiece(Flavor::Llama)),
            ("gemma4", _) => Ok(Self::SentencePiece(Flavor::Gemma4)),
            ("gpt2", _) => Ok(Self::ByteLevel),
            // "t5" (Unigram) is transformers' only other kind; it serves encoder-decoder models,
            // which this engine does not run.
            (model, _) => Err(TokenizerError::Unsupported {
                source_name: spec.source_name.clone(),
                model: model.to_owned(),
            }),
        }
    }

    /// The special tokens the class's constructor defaults add, in transformers'
    /// `SPECIAL_TOKENS_ATTRIBUTES` order (bos, eos, unk, pad, mask).
    fn default_special_tokens(self) -> &'static [&'static str] {
        match self {
            Self::ByteLevel => &["<|endoftext|>"],
            Self::SentencePiece(Flavor::Llama | Flavor::Phi3) => &["<s>", "</s>", "<unk>"],
            Self::SentencePiece(Flavor::Gemma | Flavor::Gemma4) => {
                &["<bos>", "<eos>", "<unk>", "<pad>", "<mask>"]
            }
        }
    }
}

/// The split regexes of `GGUF_PRE_TOKENIZER_SPLITS`, by `tokenizer.ggml.pre`.
fn split_regex(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3,
        "tekken" => TEKKEN,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2,
        "qwen35" => QWEN35,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O,
        _ => return None,
    })
}

/// Builds the tokenizer of `spec` (see the module comment for the steps).
pub(crate) fn convert(spec: &GgufVocab) -> Result<Parts, TokenizerError> {
    let builder = Builder::select(spec)?;
    let tokenizer_error =
        |e: tokenizers::Error| spec.invalid(format!("building the tokenizer failed: {e}"));

    // Step 1: the builder class.
    let mut tokenizer = match builder {
        Builder::ByteLevel => byte_level_tokenizer(spec)?,
        Builder::SentencePiece(flavor) => sentencepiece_tokenizer(spec, flavor)?,
    };
    add_missing_special(
        &mut tokenizer,
        builder.default_special_tokens().iter().copied(),
    );

    // Step 2: CONTROL and USER_DEFINED tokens. In a byte-level vocabulary every real token is
    // spelled in the byte alphabet; a CONTROL token using any other character is a llama.cpp
    // mislabel that transformers skips (adding it would grow the vocabulary).
    if let Some(types) = &spec.token_types {
        let alphabet = (builder == Builder::ByteLevel).then(bytes_to_unicode);
        let control: Vec<AddedToken> = spec
            .tokens
            .iter()
            .zip(types)
            .filter(|(token, ty)| {
                **ty == TOKEN_TYPE_CONTROL
                    && alphabet
                        .as_ref()
                        .is_none_or(|a| token.chars().all(|c| a.contains(&c)))
            })
            .map(|(token, _)| AddedToken::from(token.clone(), true).normalized(false))
            .collect();
        tokenizer.add_special_tokens(&control);
        let user_defined: Vec<AddedToken> = spec
            .tokens
            .iter()
            .zip(types)
            .filter(|(token, ty)| {
                **ty == TOKEN_TYPE_USER_DEFINED && tokenizer.token_to_id(token).is_some()
            })
            .map(|(token, _)| AddedToken::from(token.clone(), false).normalized(false))
            .collect();
        tokenizer.add_tokens(&user_defined);
    }

    // Step 3: the pre-tokenizer split regex the file names.
    if let Some(regex) = spec.pre.as_deref().and_then(split_regex) {
        let split = Split::new(
            SplitPattern::Regex(regex.to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tokenizer_error)?;
        tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])));
    }

    // Step 4: named special tokens and BOS/EOS. transformers defaults add_bos_token to true for a
    // SentencePiece ("llama") vocabulary that does not say, as llama.cpp does; Gemma 4's template
    // writes `<bos>` itself, so it never adds one.
    let token_of = |id: Option<u32>| id.and_then(|id| spec.tokens.get(id as usize)).cloned();
    let mut special_tokens: Vec<(String, String)> = [
        ("bos_token", token_of(spec.bos_id)),
        ("eos_token", token_of(spec.eos_id)),
        ("unk_token", token_of(spec.unk_id)),
        ("pad_token", token_of(spec.pad_id)),
    ]
    .into_iter()
    .filter_map(|(name, token)| token.map(|t| (name.to_owned(), t)))
    .collect();
    if builder == Builder::SentencePiece(Flavor::Gemma) {
        // GemmaTokenizer, the class AutoTokenizer picks for these architectures, has a mask token
        // by default, which the GGUF does not name.
        special_tokens.push(("mask_token".to_owned(), "<mask>".to_owned()));
    }
    add_missing_special(
        &mut tokenizer,
        special_tokens.iter().map(|(_, t)| t.as_str()),
    );
    let add_bos = match spec.model.as_str() {
        "gemma4" => false,
        "llama" => spec.add_bos.unwrap_or(true),
        _ => spec.add_bos.unwrap_or(false),
    };
    let add_eos = spec.add_eos.unwrap_or(false);
    let processor = post_processor(&tokenizer, &special_tokens, add_bos, add_eos)
        .map_err(|e| spec.invalid(e))?;
    tokenizer.with_post_processor(Some(processor));

    let extra_eos_ids = [spec.eot_id, spec.eom_id].into_iter().flatten().collect();
    Ok(Parts {
        inner: tokenizer,
        source_name: spec.source_name.clone(),
        special_tokens,
        extra_eos_ids,
        chat_template: spec.chat_template.clone(),
        clean_up_tokenization_spaces: false,
    })
}

/// Adds each token that is not an added token yet as a special one, as transformers does for a
/// tokenizer's named special tokens (an existing vocabulary entry keeps its id).
fn add_missing_special<'a>(tokenizer: &mut Tokenizer, tokens: impl Iterator<Item = &'a str>) {
    for token in tokens {
        let added = tokenizer
            .get_added_tokens_decoder()
            .values()
            .any(|t| t.content == token);
        if !added {
            tokenizer.add_special_tokens(&[AddedToken::from(token, true).normalized(false)]);
        }
    }
}

/// The merges as the file lists them ("a b"), or derived from the vocabulary when it has none,
/// ranked by `ranks` (`get_merges`).
fn merges(
    spec: &GgufVocab,
    vocab: &PyDict,
    ranks: Option<&[f64]>,
) -> Result<Vec<(String, String)>, TokenizerError> {
    if let Some(merges) = &spec.merges {
        return merges
            .iter()
            .map(|m| match m.split(' ').collect::<Vec<_>>().as_slice() {
                [a, b] => Ok(((*a).to_owned(), (*b).to_owned())),
                _ => {
                    Err(spec.invalid(format!("tokenizer.ggml.merges has a malformed merge {m:?}")))
                }
            })
            .collect();
    }
    let scores = match ranks {
        Some(ranks) => ranks,
        None => spec.scores.as_deref().ok_or_else(|| {
            spec.invalid("neither tokenizer.ggml.merges nor tokenizer.ggml.scores present")
        })?,
    };
    if scores.len() != spec.tokens.len() {
        return Err(
            spec.invalid("tokenizer.ggml.scores and tokenizer.ggml.tokens differ in length")
        );
    }
    Ok(generate_merges(vocab, scores))
}

fn byte_level_tokenizer(spec: &GgufVocab) -> Result<Tokenizer, TokenizerError> {
    // Tokens the file stores as text rather than in the byte alphabet get respelled.
    let spelling = bytes_to_unicode();
    let respelled: Vec<String> = spec
        .tokens
        .iter()
        .map(|t| {
            if t.chars().all(|c| spelling.contains(&c)) {
                t.clone()
            } else {
                t.bytes().map(|b| spelling[b as usize]).collect()
            }
        })
        .collect();
    let merges = merges(spec, &PyDict::new(&spec.tokens), None)?;
    let bpe = BPE::builder()
        .vocab_and_merges(PyDict::new(&respelled).into_vocab(), merges)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(String::new())
        .fuse_unk(false)
        .build()
        .map_err(|e| spec.invalid(format!("building the BPE model failed: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    Ok(tokenizer)
}

/// LlamaTokenizer / GemmaTokenizer over a SentencePiece vocabulary (`sentencepiece_tokenizer`,
/// `gemma_tokenizer`, `phi3_tokenizer`).
fn sentencepiece_tokenizer(spec: &GgufVocab, flavor: Flavor) -> Result<Tokenizer, TokenizerError> {
    let failed = |e: tokenizers::Error| spec.invalid(format!("building the tokenizer failed: {e}"));
    let (tokens, ranks): (Vec<String>, Option<Vec<f64>>) = if flavor == Flavor::Gemma {
        // Gemma stores runs of spaces as real spaces while GemmaTokenizer looks them up as "▁▁";
        // and its scores do not follow its merge order, the token order does.
        let tokens = spec
            .tokens
            .iter()
            .map(|t| {
                if t.contains(' ') && t.chars().all(is_python_space) {
                    "\u{2581}".repeat(t.chars().count())
                } else {
                    t.clone()
                }
            })
            .collect();
        (
            tokens,
            Some((0..spec.tokens.len()).map(|i| -(i as f64)).collect()),
        )
    } else {
        (spec.tokens.clone(), None)
    };
    let vocab = PyDict::new(&tokens);
    let merges = merges(spec, &vocab, ranks.as_deref())?;
    let gemma = matches!(flavor, Flavor::Gemma | Flavor::Gemma4);
    let mut bpe = BPE::builder()
        .vocab_and_merges(vocab.into_vocab(), merges)
        .fuse_unk(true)
        .byte_fallback(true);
    if gemma {
        bpe = bpe.unk_token("<unk>".to_owned());
    }
    let bpe = bpe.build().map_err(failed)?;
    let mut tokenizer = Tokenizer::new(bpe);
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("\u{2581}", " ").map_err(failed)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    match flavor {
        Flavor::Gemma | Flavor::Gemma4 => {
            tokenizer.with_normalizer(Some(Replace::new(" ", "\u{2581}").map_err(failed)?));
            tokenizer.with_pre_tokenizer(Some(
                Split::new(
                    SplitPattern::String(" ".to_owned()),
                    SplitDelimiterBehavior::MergedWithPrevious,
                    false,
                )
                .map_err(failed)?,
            ));
        }
        Flavor::Llama => {
            tokenizer.with_pre_tokenizer(Some(Metaspace::new(
                '\u{2581}',
                PrependScheme::First,
                false,
            )));
            decoders.push(Strip::new(' ', 1, 0).into());
        }
        Flavor::Phi3 => {
            tokenizer.with_normalizer(Some(NormalizerSequence::new(vec![
                Prepend::new("\u{2581}".to_owned()).into(),
                Replace::new(" ", "\u{2581}").map_err(failed)?.into(),
            ])));
            decoders.push(Strip::new(' ', 1, 0).into());
        }
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

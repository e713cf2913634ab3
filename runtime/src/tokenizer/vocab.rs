//! Small pieces of transformers' tokenizer code that the GGUF and checkpoint loaders share,
//! reproduced with Python's semantics where they decide the result.

use std::collections::HashMap;

use tokenizers::models::bpe::Vocab;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::Tokenizer;

/// `{token: index for index, token in enumerate(tokens)}`: a Python dict keeps the first
/// occurrence's position in its key order and the last occurrence's index as the value. Both
/// matter when a vocabulary repeats a token: the order for derived merges, the value for the id.
pub(crate) struct PyDict<'a> {
    keys: Vec<&'a str>,
    index: HashMap<&'a str, u32>,
}

impl<'a> PyDict<'a> {
    pub(crate) fn new(tokens: &'a [String]) -> Self {
        let mut keys = Vec::with_capacity(tokens.len());
        let mut index = HashMap::with_capacity(tokens.len());
        for (i, token) in tokens.iter().enumerate() {
            if index.insert(token.as_str(), i as u32).is_none() {
                keys.push(token.as_str());
            }
        }
        Self { keys, index }
    }

    fn get(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    pub(crate) fn into_vocab(self) -> Vocab {
        self.index
            .into_iter()
            .map(|(token, id)| (token.to_owned(), id))
            .collect()
    }
}

/// transformers' `generate_merges(vocab, vocab_scores)`: every split of a token into two tokens
/// of the vocabulary is a merge, ranked by the token's score (`scores[index]`, highest first),
/// then by the lengths of the two halves (longest first), ties kept in vocabulary order.
pub(crate) fn generate_merges(vocab: &PyDict, scores: &[f64]) -> Vec<(String, String)> {
    struct Merge<'a> {
        left: &'a str,
        right: &'a str,
        score: f64,
        left_chars: usize,
        right_chars: usize,
    }
    let mut merges = Vec::new();
    let mut local: Vec<(u32, u32, &str, &str)> = Vec::new();
    for &token in &vocab.keys {
        let Some(index) = vocab.get(token) else {
            continue;
        };
        let score = scores[index as usize];
        local.clear();
        // Python slices by code point, so split at every char boundary but the ends.
        for (at, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(at);
            if let (Some(l), Some(r)) = (vocab.get(left), vocab.get(right)) {
                local.push((l, r, left, right));
            }
        }
        local.sort_by_key(|&(l, r, _, _)| (l, r));
        merges.extend(local.iter().map(|&(_, _, left, right)| Merge {
            left,
            right,
            score,
            left_chars: left.chars().count(),
            right_chars: right.chars().count(),
        }));
    }
    // `sorted(..., reverse=True)` is stable: equal keys keep their order. So is `sort_by`.
    merges.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    merges
        .into_iter()
        .map(|m| (m.left.to_owned(), m.right.to_owned()))
        .collect()
}

/// GPT-2's byte alphabet (`bytes_to_unicode`): printable Latin-1 bytes stand for themselves, the
/// others for the code points from U+0100 on, in byte order.
pub(crate) fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        table[b as usize] = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or(char::REPLACEMENT_CHARACTER);
            next += 1;
            c
        };
    }
    table
}

/// Python's `str.isspace` for one character: Unicode White_Space plus the ASCII information
/// separators U+001C..U+001F, which Python counts and Rust does not.
pub(crate) fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// transformers' `update_post_processor`: BOS before and EOS after the text as the tokenizer's
/// `add_bos_token` / `add_eos_token` say (dropped when the token is not named).
pub(crate) fn post_processor(
    tokenizer: &Tokenizer,
    special_tokens: &[(String, String)],
    add_bos: bool,
    add_eos: bool,
) -> Result<TemplateProcessing, String> {
    let named = |name: &str| -> Result<Option<(String, u32)>, String> {
        let Some((_, token)) = special_tokens.iter().find(|(n, _)| n == name) else {
            return Ok(None);
        };
        let id = tokenizer
            .token_to_id(token)
            .ok_or_else(|| format!("{name} {token:?} is not in the vocabulary"))?;
        Ok(Some((token.clone(), id)))
    };
    let bos = if add_bos { named("bos_token")? } else { None };
    let eos = if add_eos { named("eos_token")? } else { None };
    let mut single = String::new();
    let mut pair = String::new();
    if let Some((token, _)) = &bos {
        single.push_str(&format!("{token}:0 "));
    }
    single.push_str("$A:0");
    if let Some((token, _)) = &eos {
        single.push_str(&format!(" {token}:0"));
    }
    pair.push_str(&single);
    if let Some((token, _)) = &bos {
        pair.push_str(&format!(" {token}:1"));
    }
    pair.push_str(" $B:1");
    if let Some((token, _)) = &eos {
        pair.push_str(&format!(" {token}:1"));
    }
    let specials: Vec<(String, u32)> = bos.into_iter().chain(eos).collect();
    TemplateProcessing::builder()
        .try_single(single)
        .and_then(|b| b.try_pair(pair))
        .map_err(|e| format!("invalid BOS/EOS template: {e}"))?
        .special_tokens(specials)
        .build()
        .map_err(|e| format!("invalid BOS/EOS template: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_matches_gpt2() {
        let table = bytes_to_unicode();
        assert_eq!(table[b' ' as usize], '\u{120}'); // "Ġ"
        assert_eq!(table[b'\n' as usize], '\u{10a}'); // "Ċ"
        assert_eq!(table[b'a' as usize], 'a');
        let mut sorted = table.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }

    #[test]
    fn merges_follow_python_dict_and_sort_semantics() {
        let tokens: Vec<String> = ["a", "b", "ab", "ba", "aba", "a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let vocab = PyDict::new(&tokens);
        // "a" repeats: its id is the last index (5), its place in the order the first.
        assert_eq!(vocab.get("a"), Some(5));
        let scores = [0.0, 0.0, -1.0, -2.0, -1.0, 0.0];
        let merges = generate_merges(&vocab, &scores);
        let pairs: Vec<(&str, &str)> = merges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        // "ab" and "aba" tie on score -1: "aba"'s halves are longer ("ab"+"a" before "a"+"ba").
        assert_eq!(
            pairs,
            vec![("ab", "a"), ("a", "ba"), ("a", "b"), ("b", "a")]
        );
    }
}

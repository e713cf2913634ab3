//! GSM8K answers: a number pulled out of free-form model text, compared exactly as a rational.
//!
//! Where the answer is taken from, first match wins:
//! 1. the last `\boxed{...}` (the format the debate prompts ask for): the last number inside it;
//! 2. the text after the last `####` (the dataset's own format): the first number there;
//! 3. the line after the last "final answer" (any case): the first number there;
//! 4. otherwise the last number in the response.
//!
//! A number is `[-]digits[,ddd...][.digits][/digits]`, optionally after `$`. Commas are read as
//! thousands separators only in well-formed groups (`1,000` but not `1,2,3`); a trailing period
//! (`42.`), units (`12 dollars`) and `%` are ignored, `3/4` and `\frac{3}{4}` become 0.75.

use super::number::Rational;
use super::{braced, extract_boxed};

/// The model's numeric answer in canonical form (`"1234"`, `"-3.5"`, `"0.75"`, `"1/3"`),
/// or `None` when the response holds no (parsable) number.
pub fn extract_gsm8k(response: &str) -> Option<String> {
    extract_value(response).map(|value| value.to_string())
}

/// Whether two answers are the same number. Each side must be a single number, possibly
/// dressed (`"$1,234.00"`, `"#### 72"`, `"3/4"`); anything else compares unequal.
pub fn gsm8k_equal(pred: &str, gold: &str) -> bool {
    match (single_value(pred), single_value(gold)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Canonical form of a text holding exactly one number (`"1,000"` -> `"1000"`), else `None`.
pub fn normalize_gsm8k(text: &str) -> Option<String> {
    single_value(text).map(|value| value.to_string())
}

fn extract_value(response: &str) -> Option<Rational> {
    let text = prepare(response);
    if let Some(content) = extract_boxed(&text) {
        // An explicit final answer without a number is no answer: do not guess from the working.
        return numbers(&content).pop().flatten();
    }
    if let Some(at) = text.rfind("####") {
        if let Some(first) = numbers(&text[at + 4..]).into_iter().next() {
            return first;
        }
    }
    // ASCII lowercasing keeps byte offsets valid for `text`.
    if let Some(at) = text.to_ascii_lowercase().rfind("final answer") {
        let line = text[at..].lines().next().unwrap_or_default();
        if let Some(first) = numbers(line).into_iter().next() {
            return first;
        }
    }
    numbers(&text).pop().flatten()
}

fn single_value(text: &str) -> Option<Rational> {
    match numbers(&prepare(text)).as_slice() {
        [only] => *only,
        _ => None,
    }
}

/// Rewrites LaTeX number spellings into plain text the scanner reads: `1{,}000` and `1\,000`
/// (thousands separators), `\!`, and `\frac{a}{b}` with numeric a and b into `a/b`.
fn prepare(text: &str) -> String {
    let text = text
        .replace("{,}", ",")
        .replace("\\,", ",")
        .replace("\\!", "")
        .replace("\\dfrac", "\\frac")
        .replace("\\tfrac", "\\frac");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("\\frac") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "\\frac".len()..];
        let simple = |s: &str| !s.trim().is_empty() && s.chars().all(|c| c.is_ascii_digit() || ".,- ".contains(c));
        match braced(after).and_then(|(num, tail)| Some((num, braced(tail)?))) {
            Some((num, (den, tail))) if simple(num) && simple(den) => {
                out.push_str(&format!("{}/{}", num.trim(), den.trim()));
                rest = tail;
            }
            _ => {
                out.push_str("\\frac");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every number in `text`, in order; `None` for a number too large to represent.
fn numbers(text: &str) -> Vec<Option<Rational>> {
    let chars: Vec<char> = text.chars().collect();
    let digit_at = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        // A leading '.' starts a number (".5") only when it does not end a word or number.
        let leading_point = chars[i] == '.' && digit_at(i + 1) && (i == 0 || !chars[i - 1].is_alphanumeric());
        if !chars[i].is_ascii_digit() && !leading_point {
            i += 1;
            continue;
        }
        let negative = has_sign(&chars, i);
        let (numerator, end) = read_decimal(&chars, i);
        let mut value = Rational::parse_decimal(&numerator);
        i = end;
        if let Some((denominator, den_end)) = read_denominator(&chars, end) {
            let quotient = value.zip(Rational::parse_decimal(&denominator)).and_then(|(n, d)| n.div(d));
            // "3/0" is no fraction: keep the numerator and read the "0" as its own number.
            if quotient.is_some() {
                value = quotient;
                i = den_end;
            }
        }
        found.push(value.map(|v| if negative { v.neg() } else { v }));
    }
    found
}

/// Whether the number starting at `start` carries a minus sign: `-5`, `-$5`, `$-5`, `−5`.
/// A hyphen after a word, number or `)` is a dash or a subtraction (`10-3`), not a sign.
fn has_sign(chars: &[char], start: usize) -> bool {
    let mut at = start;
    if at > 0 && chars[at - 1] == '$' {
        at -= 1;
    }
    if at == 0 || !matches!(chars[at - 1], '-' | '\u{2212}') {
        return false;
    }
    let minus = at - 1;
    minus == 0 || !(chars[minus - 1].is_alphanumeric() || chars[minus - 1] == ')')
}

/// Reads `digits[,ddd...][.digits]` from `start`; returns it without commas and the end index.
fn read_decimal(chars: &[char], start: usize) -> (String, usize) {
    let digit_at = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let mut text = String::new();
    let mut i = start;
    while digit_at(i) {
        text.push(chars[i]);
        i += 1;
    }
    // Thousands groups only after a 1-3 digit lead, each exactly three digits long.
    if (1..=3).contains(&text.len()) {
        while chars.get(i) == Some(&',') && (1..=3).all(|k| digit_at(i + k)) && !digit_at(i + 4) {
            text.extend(&chars[i + 1..i + 4]);
            i += 4;
        }
    }
    // A point followed by a digit is a decimal point; "42." ends a sentence.
    if chars.get(i) == Some(&'.') && digit_at(i + 1) {
        text.push('.');
        i += 1;
        while digit_at(i) {
            text.push(chars[i]);
            i += 1;
        }
    }
    (text, i)
}

/// Reads `/number` (spaces allowed around `/`) after a numerator ending at `end`.
fn read_denominator(chars: &[char], end: usize) -> Option<(String, usize)> {
    let skip_spaces = |mut i: usize| {
        while chars.get(i) == Some(&' ') {
            i += 1;
        }
        i
    };
    let slash = skip_spaces(end);
    if chars.get(slash) != Some(&'/') {
        return None;
    }
    let start = skip_spaces(slash + 1);
    if !chars.get(start).is_some_and(char::is_ascii_digit) {
        return None;
    }
    Some(read_decimal(chars, start))
}

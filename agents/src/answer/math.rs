//! MATH answers: a faithful port of Hendrycks et al.'s `is_equiv` / `_strip_string`
//! (`modeling/math_equivalence.py` in github.com/hendrycks/math, MIT).
//!
//! Being faithful matters more than being clever: MATH accuracies in the literature are computed
//! with this exact normalization, so ours stay comparable. Its quirks are kept on purpose:
//! a bare `%` is not removed (only `\%`), `\text{cm}` without a space is not treated as a unit,
//! `"5.0"` differs from `"5"`, and list order matters. Where the Python code raises (a second
//! `\text{ `, a trailing `\sqrt` or `\frac`), `is_equiv` falls back to comparing the raw strings;
//! [`normalize_math`] returns `None` there and [`math_equal`] does the same fallback.
//! Python indexes strings by code point, so the single-character steps below work on `char`s.

/// Hendrycks' `is_equiv(pred, gold)` for two extracted answers.
pub fn math_equal(pred: &str, gold: &str) -> bool {
    match (normalize_math(pred), normalize_math(gold)) {
        (Some(a), Some(b)) => a == b,
        _ => pred == gold,
    }
}

/// Hendrycks' `_strip_string`; `None` where the Python function raises an exception.
pub fn normalize_math(answer: &str) -> Option<String> {
    let mut s = answer
        .replace('\n', "")
        .replace("\\!", "")
        .replace("\\\\", "\\")
        .replace("tfrac", "frac")
        .replace("dfrac", "frac")
        .replace("\\left", "")
        .replace("\\right", "")
        .replace("^{\\circ}", "")
        .replace("^\\circ", "")
        .replace("\\$", "");
    s = remove_right_units(&s)?;
    // The Python removes "\\%" and then "\%", which is the same two-character string.
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.");
    if s.is_empty() {
        return Some(s);
    }
    if s.starts_with('.') {
        s.insert(0, '0');
    }
    // Drop a short left-hand side such as "x = " or "k=".
    let sides: Vec<&str> = s.split('=').collect();
    if let [lhs, rhs] = sides.as_slice() {
        if lhs.chars().count() <= 2 {
            s = rhs.to_string();
        }
    }
    s = fix_sqrt(&s)?;
    s = s.replace(' ', "");
    s = fix_fracs(&s)?;
    if s == "0.5" {
        s = "\\frac{1}{2}".to_string();
    }
    Some(fix_a_slash_b(&s))
}

/// `_remove_right_units`: everything before `\text{ ` (units are written `10\text{ cm}`).
/// The Python asserts there is only one such group.
fn remove_right_units(s: &str) -> Option<String> {
    if !s.contains("\\text{ ") {
        return Some(s.to_string());
    }
    match s.split("\\text{ ").collect::<Vec<_>>().as_slice() {
        [value, _unit] => Some(value.to_string()),
        _ => None,
    }
}

/// `_fix_sqrt`: `\sqrt3` -> `\sqrt{3}` (one character only, as in the original).
fn fix_sqrt(s: &str) -> Option<String> {
    let mut parts = s.split("\\sqrt");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        let mut chars = part.chars();
        // An empty piece is `split[0]` on "" in Python: IndexError.
        let first = chars.next()?;
        if first == '{' {
            out.push_str("\\sqrt");
            out.push_str(part);
        } else {
            out.push_str("\\sqrt{");
            out.push(first);
            out.push('}');
            out.push_str(chars.as_str());
        }
    }
    Some(out)
}

/// `_fix_fracs`: `\frac12` -> `\frac{1}{2}`, `\frac1{72}` -> `\frac{1}{72}`, `\frac34i` ->
/// `\frac{3}{4}i`. A `\frac` followed by a single character makes the original give up and
/// return its input unchanged; one followed by nothing raises.
fn fix_fracs(s: &str) -> Option<String> {
    let mut parts = s.split("\\frac");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        out.push_str("\\frac");
        let mut chars = part.chars();
        let a = chars.next()?;
        if a == '{' {
            out.push_str(part);
            continue;
        }
        let Some(b) = chars.next() else {
            return Some(s.to_string());
        };
        let rest = chars.as_str();
        if b == '{' {
            out.push_str(&format!("{{{a}}}{{{rest}"));
        } else {
            out.push_str(&format!("{{{a}}}{{{b}}}{rest}"));
        }
    }
    Some(out)
}

/// `_fix_a_slash_b`: `3/4` -> `\frac{3}{4}` when both sides are integers written exactly as
/// Python's `str(int(x))` would write them (so not `03/4`, `-0/4` or `1.5/2`).
fn fix_a_slash_b(s: &str) -> String {
    match s.split('/').collect::<Vec<_>>().as_slice() {
        [a, b] if is_canonical_int(a) && is_canonical_int(b) => format!("\\frac{{{a}}}{{{b}}}"),
        _ => s.to_string(),
    }
}

fn is_canonical_int(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let well_formed = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    well_formed && (s == "0" || !digits.starts_with('0'))
}

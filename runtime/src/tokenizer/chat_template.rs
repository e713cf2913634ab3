//! Chat templates rendered like transformers renders them (`utils/chat_template_utils.py`,
//! `_compile_jinja_template` and `render_jinja_template`): Jinja with `trim_blocks` and
//! `lstrip_blocks`, no kept trailing newline, transformers' own `tojson`, `raise_exception` and
//! `strftime_now`, Python string / dict / list methods (minijinja-contrib's pycompat), and the
//! `{% generation %}` block transformers' AssistantTracker extension defines (rendered as its
//! content, which is all it does outside assistant-mask tracking). The template sees
//! `messages`, `tools` and `documents` (none), `add_generation_prompt` and the named special
//! tokens (`bos_token`, `eos_token`, ...).

use std::fmt::Write;

use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};

use super::ChatMessage;

const TEMPLATE_NAME: &str = "chat_template";

pub(crate) struct ChatTemplate {
    source: String,
    /// The compiled template, or why it does not compile. Kept rather than failing the load: a
    /// broken template only stops chat rendering, like in transformers, which compiles lazily.
    compiled: Result<Environment<'static>, String>,
}

impl ChatTemplate {
    pub(crate) fn new(source: String, source_name: &str) -> Self {
        let compiled = compile(&source).map_err(|e| e.to_string());
        if let Err(e) = &compiled {
            tracing::warn!("{source_name}: the chat template does not compile: {e}");
        }
        Self { source, compiled }
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        special_tokens: &[(String, String)],
    ) -> Result<String, String> {
        let env = self
            .compiled
            .as_ref()
            .map_err(|e| format!("does not compile: {e}"))?;
        let template = env.get_template(TEMPLATE_NAME).map_err(|e| e.to_string())?;
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| Value::from_iter([("role", m.role.as_str()), ("content", m.content.as_str())]))
            .collect();
        let mut context: Vec<(String, Value)> = special_tokens
            .iter()
            .map(|(name, token)| (name.clone(), Value::from(token.as_str())))
            .collect();
        context.push(("messages".to_owned(), Value::from(messages)));
        context.push(("tools".to_owned(), Value::from(())));
        context.push(("documents".to_owned(), Value::from(())));
        context.push((
            "add_generation_prompt".to_owned(),
            Value::from(add_generation_prompt),
        ));
        template
            .render(Value::from_iter(context))
            .map_err(|e| e.to_string())
    }
}

fn compile(source: &str) -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    // Jinja built-ins minijinja keeps in its contrib crate.
    env.add_filter("truncate", minijinja_contrib::filters::truncate);
    env.add_filter("striptags", minijinja_contrib::filters::striptags);
    env.add_filter("filesizeformat", minijinja_contrib::filters::filesizeformat);
    env.add_function("cycler", minijinja_contrib::globals::cycler);
    env.add_function("joiner", minijinja_contrib::globals::joiner);
    // transformers' additions.
    env.add_filter("tojson", tojson);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_template_owned(TEMPLATE_NAME, without_generation_tags(source))?;
    Ok(env)
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `datetime.now().strftime(format)`: local time, C-locale names.
fn strftime_now(format: String) -> Result<String, Error> {
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format {format:?}"),
        )
    })?;
    Ok(out)
}

/// `{% generation %}` ... `{% endgeneration %}` → `{% if true %}` ... `{% endif %}`, keeping the
/// whitespace-control markers, so trimming around the tags stays what Jinja does.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        match rewrite_generation_tag(tag) {
            Some((replacement, consumed)) => {
                out.push_str(&replacement);
                rest = &tag[consumed..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// For a tag at the start of `tag` that is `generation` / `endgeneration`: its replacement and
/// its length.
fn rewrite_generation_tag(tag: &str) -> Option<(String, usize)> {
    let inner_start = 2;
    let end = tag.find("%}")?;
    let inner = &tag[inner_start..end];
    let (left, inner) = match inner.strip_prefix(['-', '+']) {
        Some(stripped) => (&inner[..1], stripped),
        None => ("", inner),
    };
    let (inner, right) = match inner.strip_suffix(['-', '+']) {
        Some(stripped) => (stripped, &inner[inner.len() - 1..]),
        None => (inner, ""),
    };
    let keyword = match inner.trim() {
        "generation" => "if true",
        "endgeneration" => "endif",
        _ => return None,
    };
    Some((format!("{{%{left} {keyword} {right}%}}"), end + 2))
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`,
/// i.e. Python's `json.dumps` (no HTML escaping, unlike Jinja's own `tojson`).
fn tojson(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let positional = |i: usize| args.get(i).cloned();
    let option = |i: usize, name: &str| -> Result<Option<Value>, Error> {
        let named: Option<Value> = kwargs.get(name)?;
        Ok(named
            .or_else(|| positional(i))
            .filter(|v| !v.is_none() && !v.is_undefined()))
    };
    let ensure_ascii = option(0, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let indent = match option(1, "indent")? {
        None => None,
        Some(v) if v.kind() == ValueKind::Number => {
            let n = i64::try_from(v)?;
            Some(" ".repeat(usize::try_from(n).unwrap_or(0)))
        }
        Some(v) => Some(
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| type_error("indent must be an int or str"))?,
        ),
    };
    let (mut item_sep, mut key_sep) = (
        if indent.is_some() { "," } else { ", " }.to_owned(),
        ": ".to_owned(),
    );
    if let Some(separators) = option(2, "separators")? {
        let parts: Vec<Value> = separators.try_iter()?.collect();
        match parts.as_slice() {
            [item, key] => {
                item_sep = item
                    .as_str()
                    .ok_or_else(|| type_error("separators must be strings"))?
                    .to_owned();
                key_sep = key
                    .as_str()
                    .ok_or_else(|| type_error("separators must be strings"))?
                    .to_owned();
            }
            _ => return Err(type_error("separators must be a pair")),
        }
    }
    let sort_keys = option(3, "sort_keys")?.is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let options = JsonOptions {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    write_json(&mut out, value, &options, 0)?;
    Ok(Value::from(out))
}

fn type_error(message: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("tojson: {message}"))
}

struct JsonOptions {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn write_json(
    out: &mut String,
    value: &Value,
    options: &JsonOptions,
    depth: usize,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => out.push_str(&value.to_string()),
        ValueKind::Number => out.push_str(&python_float_repr(f64::try_from(value.clone())?)),
        ValueKind::String => write_json_string(
            out,
            value.as_str().unwrap_or_default(),
            options.ensure_ascii,
        ),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, '[', ']', &items, options, depth, |out, item, depth| {
                write_json(out, item, options, depth)
            })?;
        }
        ValueKind::Map => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if options.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(
                out,
                '{',
                '}',
                &entries,
                options,
                depth,
                |out, (key, item), depth| {
                    write_json_string(out, key, options.ensure_ascii);
                    out.push_str(&options.key_sep);
                    write_json(out, item, options, depth)
                },
            )?;
        }
        _ => {
            return Err(type_error(&format!(
                "object of type {} is not JSON serializable",
                value.kind()
            )))
        }
    }
    Ok(())
}

fn write_container<T>(
    out: &mut String,
    open: char,
    close: char,
    items: &[T],
    options: &JsonOptions,
    depth: usize,
    write_item: impl Fn(&mut String, &T, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&options.item_sep);
        }
        if let Some(indent) = &options.indent {
            out.push('\n');
            out.push_str(&indent.repeat(depth + 1));
        }
        write_item(out, item, depth + 1)?;
    }
    if let Some(indent) = &options.indent {
        out.push('\n');
        out.push_str(&indent.repeat(depth));
    }
    out.push(close);
    Ok(())
}

/// A dict key as `json.dumps` writes it: strings as they are, numbers, booleans and None as text.
fn json_key(key: &Value) -> Result<String, Error> {
    Ok(match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_owned(),
        ValueKind::None => "null".to_owned(),
        ValueKind::Bool => if key.is_true() { "true" } else { "false" }.to_owned(),
        ValueKind::Number if key.is_integer() => key.to_string(),
        ValueKind::Number => python_float_repr(f64::try_from(key.clone())?),
        kind => {
            return Err(type_error(&format!(
                "keys must be str, int, float, bool or None, not {kind}"
            )))
        }
    })
}

fn write_json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    // Infallible: writing to a String.
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` as `json.dumps` writes it: the shortest round-tripping digits, in
/// positional notation for exponents -4..16 and scientific (`1e+16`, `1.5e-07`) outside.
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` gives the same shortest digits: "-1.2345e-5".
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa
        .strip_prefix('-')
        .map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
        } else if digits.len() <= point as usize {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let fraction = if digits.len() > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{sign}{}{fraction}e{exp_sign}{:02}",
            &digits[..1],
            exponent.abs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python() {
        for (f, expected) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (123456789.0, "123456789.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-0.0, "-0.0"),
            (std::f64::consts::PI, "3.141592653589793"),
        ] {
            assert_eq!(python_float_repr(f), expected, "{f}");
        }
    }

    #[test]
    fn generation_tags_become_plain_blocks() {
        assert_eq!(
            without_generation_tags("a{%- generation %}b{% endgeneration -%}c{% if x %}"),
            "a{%- if true %}b{% endif -%}c{% if x %}"
        );
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let template = ChatTemplate::new(
            "{{ {'b': [1, 2.0, none, true], 'a': 'é\"<>\\n'} | tojson }}|{{ [1, {'x': 'y'}] | tojson(indent=2) }}|\
             {{ 'é' | tojson(ensure_ascii=true) }}|{{ {'b': 1, 'a': 2} | tojson(sort_keys=true, separators=[',', ':']) }}"
                .to_owned(),
            "test",
        );
        let out = template
            .render(&[ChatMessage::new("user", "hi")], false, &[])
            .expect("renders");
        assert_eq!(
            out,
            "{\"b\": [1, 2.0, null, true], \"a\": \"é\\\"<>\\n\"}|[\n  1,\n  {\n    \"x\": \"y\"\n  }\n]|\"\\u00e9\"|{\"a\":2,\"b\":1}"
        );
    }
}

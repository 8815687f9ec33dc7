//! Splits a source text into tokens that remember their byte offset.

use serde_json::{Number, Value};

use super::{FeelError, error_at};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok<'s> {
    Number(Value),
    Str(String),
    /// A name or keyword.
    Name(&'s str),
    Symbol(&'static str),
    End,
}

#[derive(Debug, Clone)]
pub(super) struct Token<'s> {
    pub tok: Tok<'s>,
    /// Byte offset into the source.
    pub at: usize,
}

/// Longest first, so `**` wins over `*`.
const SYMBOLS: [&str; 21] = [
    "**", "!=", "<=", ">=", "..", "+", "-", "*", "/", "(", ")", "[", "]", "{", "}", ",", ".", ":",
    "=", "<", ">",
];

fn is_name_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}

fn is_name_part(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// The tokens of `source`, ending with [`Tok::End`].
pub(super) fn tokenize(source: &str) -> Result<Vec<Token<'_>>, FeelError> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(c) = source.get(at..).and_then(|rest| rest.chars().next()) {
        let rest = &source[at..];
        if c.is_whitespace() {
            at += c.len_utf8();
        } else if rest.starts_with("//") {
            at += rest.find('\n').unwrap_or(rest.len());
        } else if let Some(comment) = rest.strip_prefix("/*") {
            let Some(end) = comment.find("*/") else {
                return Err(error_at(source, at, "unterminated comment"));
            };
            at += end + 4;
        } else if c.is_ascii_digit()
            || (c == '.' && bytes.get(at + 1).is_some_and(u8::is_ascii_digit))
        {
            let (value, end) = number(source, at)?;
            tokens.push(Token {
                tok: Tok::Number(value),
                at,
            });
            at = end;
        } else if c == '"' {
            let (text, end) = string(source, at)?;
            tokens.push(Token {
                tok: Tok::Str(text),
                at,
            });
            at = end;
        } else if is_name_start(c) {
            let len = rest.find(|c: char| !is_name_part(c)).unwrap_or(rest.len());
            tokens.push(Token {
                tok: Tok::Name(&rest[..len]),
                at,
            });
            at += len;
        } else if let Some(symbol) = SYMBOLS.iter().find(|symbol| rest.starts_with(**symbol)) {
            tokens.push(Token {
                tok: Tok::Symbol(symbol),
                at,
            });
            at += symbol.len();
        } else {
            return Err(error_at(source, at, format!("unexpected character '{c}'")));
        }
    }
    tokens.push(Token {
        tok: Tok::End,
        at: source.len(),
    });
    Ok(tokens)
}

/// The number starting at `start` and the offset after it.
fn number(source: &str, start: usize) -> Result<(Value, usize), FeelError> {
    let bytes = source.as_bytes();
    let digits_end = |mut end: usize| {
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        end
    };
    let mut end = digits_end(start);
    let decimal =
        bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit);
    if decimal {
        end = digits_end(end + 1);
    }
    let text = &source[start..end];
    let value = number_from_text(text)
        .ok_or_else(|| error_at(source, start, format!("number '{text}' is too large")))?;
    Ok((value, end))
}

/// Reads `123`, `-4`, `1.5`, `.5` as a JSON number: an integer when it has no fraction and fits
/// in an `i64`, else a float. `None` for anything else (including exponents, `inf`, `NaN`).
pub(super) fn number_from_text(text: &str) -> Option<Value> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty()
        || !all_digits(whole)
        || !all_digits(fraction)
        || unsigned.ends_with('.')
    {
        return None;
    }
    if !unsigned.contains('.')
        && let Ok(integer) = text.parse::<i64>()
    {
        return Some(Value::from(integer));
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
}

/// The string literal starting at the `"` at `start` and the offset after its closing `"`.
fn string(source: &str, start: usize) -> Result<(String, usize), FeelError> {
    let mut text = String::new();
    let mut chars = source[start + 1..]
        .char_indices()
        .map(|(offset, c)| (start + 1 + offset, c));
    loop {
        match chars.next() {
            None => return Err(error_at(source, start, "unterminated string")),
            Some((offset, '"')) => return Ok((text, offset + 1)),
            Some((offset, '\\')) => {
                let escaped = match chars.next().map(|(_, c)| c) {
                    Some('"') => '"',
                    Some('\\') => '\\',
                    Some('/') => '/',
                    Some('\'') => '\'',
                    Some('n') => '\n',
                    Some('r') => '\r',
                    Some('t') => '\t',
                    Some('u') => unicode_escape(source, offset, &mut chars)?,
                    Some(other) => {
                        return Err(error_at(
                            source,
                            offset,
                            format!("unknown escape '\\{other}'"),
                        ));
                    }
                    None => return Err(error_at(source, start, "unterminated string")),
                };
                text.push(escaped);
            }
            Some((_, c)) => text.push(c),
        }
    }
}

/// The character of `\uXXXX` (after the `u`), joining a surrogate pair `\uD83D\uDE00`.
fn unicode_escape(
    source: &str,
    at: usize,
    chars: &mut impl Iterator<Item = (usize, char)>,
) -> Result<char, FeelError> {
    let invalid = || error_at(source, at, "invalid \\u escape: expected four hex digits");
    let hex4 = |chars: &mut dyn Iterator<Item = (usize, char)>| {
        let mut code = 0_u32;
        for _ in 0..4 {
            let digit = chars
                .next()
                .and_then(|(_, c)| c.to_digit(16))
                .ok_or_else(invalid)?;
            code = code * 16 + digit;
        }
        Ok::<u32, FeelError>(code)
    };
    let first = hex4(chars)?;
    let code = if (0xD800..0xDC00).contains(&first) {
        let lone = || error_at(source, at, "invalid \\u escape: unpaired surrogate");
        if chars.next().map(|(_, c)| c) != Some('\\') || chars.next().map(|(_, c)| c) != Some('u') {
            return Err(lone());
        }
        let second = hex4(chars)?;
        if !(0xDC00..0xE000).contains(&second) {
            return Err(lone());
        }
        0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
    } else {
        first
    };
    char::from_u32(code)
        .ok_or_else(|| error_at(source, at, "invalid \\u escape: unpaired surrogate"))
}

//! Bounds on the JSON the engine takes in: the variables documents commands carry (instance
//! creation, job completion, message publication, set variables, a correlated message's
//! variables) and the values mappings produce before they become variables.
//!
//! A document is measured before it is parsed: its length in bytes, then its nesting, with a
//! scan that counts brackets outside strings, so a deep or huge document costs one pass and no
//! allocation before it is refused.

use std::io;

use serde_json::{Map, Value};

use super::{Engine, describe};

/// The deepest nesting the engine accepts whatever its configuration says:
/// [`super::EngineConfig::variables_nesting_max`] is capped here. `serde_json` refuses to parse
/// text nested deeper than 128 levels, so a deeper value written to the log would read back as
/// something else on a replica that replays it.
pub const VARIABLES_NESTING_CEILING: u32 = 100;

impl Engine {
    /// The nesting limit in force.
    fn nesting_max(&self) -> u32 {
        self.config
            .variables_nesting_max
            .min(VARIABLES_NESTING_CEILING)
    }

    /// Parses a variables document: empty text is no variables; otherwise a JSON object within
    /// the configured size and nesting.
    pub(super) fn parse_document(&self, text: &str) -> Result<Map<String, Value>, String> {
        if text.trim().is_empty() {
            return Ok(Map::new());
        }
        let bytes_max = self.config.variables_document_bytes_max;
        if text.len() > bytes_max {
            return Err(format!(
                "Expected the variables document to be at most {bytes_max} bytes, but it has {} \
                 bytes; send fewer or smaller variables (the limit is the broker's \
                 engine.variables.documentSizeMax)",
                text.len()
            ));
        }
        let nesting_max = self.nesting_max();
        if text_nesting_exceeds(text, nesting_max) {
            return Err(format!(
                "Expected the variables document to nest objects and arrays at most \
                 {nesting_max} levels deep, but it nests deeper; flatten the document (the limit \
                 is the broker's engine.variables.nestingMax)"
            ));
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(format!(
                "Expected document to be a root level object, but was '{}'",
                describe(&other)
            )),
            Err(error) => Err(format!(
                "Expected variables to be a JSON object, but it is not valid JSON: {error}"
            )),
        }
    }

    /// Checks a value about to become the variable `name` (a mapping's result): within the
    /// document size and nesting a command's variables must keep.
    pub(super) fn check_variable_value(&self, name: &str, value: &Value) -> Result<(), String> {
        let nesting_max = self.nesting_max();
        if value_nesting_exceeds(value, nesting_max) {
            return Err(format!(
                "Expected the value of variable '{name}' to nest objects and arrays at most \
                 {nesting_max} levels deep, but it nests deeper; flatten the value"
            ));
        }
        let bytes_max = self.config.variables_document_bytes_max;
        if json_bytes_exceed(value, bytes_max) {
            return Err(format!(
                "Expected the value of variable '{name}' to be at most {bytes_max} bytes as \
                 JSON, but it is larger; map a smaller value"
            ));
        }
        Ok(())
    }
}

/// Whether JSON text nests arrays and objects deeper than `max` levels (a scalar is level 0,
/// `{}` level 1). Brackets inside strings do not count. Stops at the first level too deep.
pub(super) fn text_nesting_exceeds(text: &str, max: u32) -> bool {
    let mut depth = 0_u32;
    let mut in_string = false;
    let mut escaped = false;
    for byte in text.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Whether a value nests arrays and objects deeper than `max` levels. Walks without recursion.
pub(super) fn value_nesting_exceeds(value: &Value, max: u32) -> bool {
    let mut pending: Vec<(&Value, u32)> = vec![(value, 0)];
    while let Some((value, depth)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(members) => Box::new(members.values()),
            _ => continue,
        };
        let depth = depth + 1;
        if depth > max {
            return true;
        }
        pending.extend(children.map(|child| (child, depth)));
    }
    false
}

/// Counts bytes written and fails once there are more than `max`.
struct CountingWriter {
    bytes: usize,
    max: usize,
}

impl io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes = self.bytes.saturating_add(buf.len());
        if self.bytes > self.max {
            return Err(io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether the JSON text of `value` is longer than `max` bytes. Writes into a counter that stops
/// at the limit: nothing is allocated.
pub(super) fn json_bytes_exceed(value: &Value, max: usize) -> bool {
    serde_json::to_writer(&mut CountingWriter { bytes: 0, max }, value).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_nesting_counts_brackets_outside_strings() {
        assert!(!text_nesting_exceeds(r#"{"a":[1,{"b":2}]}"#, 3));
        assert!(text_nesting_exceeds(r#"{"a":[1,{"b":2}]}"#, 2));
        assert!(!text_nesting_exceeds(r#"{"a":"[[[[{{{{\"[["}"#, 1));
        assert!(!text_nesting_exceeds("1", 0));
    }

    #[test]
    fn value_nesting_matches_text_nesting() {
        for text in [
            r#"{"a":[1,{"b":2}]}"#,
            "[[[[]]]]",
            "{}",
            "3",
            r#"{"a":{},"b":[[1]]}"#,
        ] {
            let value: Value = serde_json::from_str(text).expect("valid JSON");
            for max in 0..6 {
                assert_eq!(
                    value_nesting_exceeds(&value, max),
                    text_nesting_exceeds(text, max),
                    "{text} at {max}"
                );
            }
        }
    }

    #[test]
    fn json_bytes_are_counted_exactly() {
        let value: Value = serde_json::from_str(r#"{"a":"xyz","b":[1,2]}"#).expect("valid");
        let bytes = value.to_string().len();
        assert!(!json_bytes_exceed(&value, bytes));
        assert!(json_bytes_exceed(&value, bytes - 1));
    }

    #[test]
    fn serde_reads_back_the_deepest_value_the_ceiling_allows() {
        let depth = usize::try_from(VARIABLES_NESTING_CEILING).expect("fits");
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(serde_json::from_str::<Value>(&text).is_ok());
    }
}

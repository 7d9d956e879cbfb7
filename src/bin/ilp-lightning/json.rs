//! A few lines of hand-written JSON output: objects with string, number, boolean and nested
//! values, strings escaped per RFC 8259.

use std::fmt::Write as _;

/// Appends `text` as a JSON string literal, quotes included.
pub fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            // Other control characters, and the two line separators that break JavaScript
            // parsers which take JSON for a script.
            c if c < ' ' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON object being written, keys in insertion order.
pub struct Object {
    out: String,
    empty: bool,
}

impl Object {
    /// `{`
    pub fn new() -> Self {
        Object {
            out: String::from("{"),
            empty: true,
        }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        write_string(&mut self.out, key);
        self.out.push(':');
    }

    /// `"key":"value"`
    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        write_string(&mut self.out, value);
        self
    }

    /// `"key":"hex"`, lowercase.
    pub fn hex(&mut self, key: &str, bytes: &[u8]) -> &mut Self {
        self.string(key, &hex::encode(bytes))
    }

    /// `"key":123`
    pub fn number(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    /// `"key":-123` (a signed amount).
    pub fn integer(&mut self, key: &str, value: i128) -> &mut Self {
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    /// `"key":1.25`, rounded to `decimals` places; `null` for a value that is not finite.
    pub fn decimal(&mut self, key: &str, value: f64, decimals: usize) -> &mut Self {
        self.key(key);
        if value.is_finite() {
            let _ = write!(self.out, "{value:.decimals$}");
        } else {
            self.out.push_str("null");
        }
        self
    }

    /// `"key":true`
    pub fn boolean(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    /// `"key":{...}`
    pub fn object(&mut self, key: &str, value: Object) -> &mut Self {
        self.key(key);
        self.out.push_str(&value.finish());
        self
    }

    /// `"key":[{...},...]`
    pub fn objects(&mut self, key: &str, values: impl IntoIterator<Item = Object>) -> &mut Self {
        self.key(key);
        self.out.push('[');
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(&value.finish());
        }
        self.out.push(']');
        self
    }

    /// The object's text, `}` included.
    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_requires() {
        let mut out = String::new();
        write_string(&mut out, "a\"b\\c\nd\u{1}é\u{2028}");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é\u2028""#);
    }

    #[test]
    fn writes_nested_objects() {
        let mut inner = Object::new();
        inner.number("n", 7);
        let mut outer = Object::new();
        outer
            .string("s", "x")
            .boolean("b", false)
            .object("o", inner)
            .objects("a", [Object::new(), Object::new()]);
        assert_eq!(
            outer.finish(),
            r#"{"s":"x","b":false,"o":{"n":7},"a":[{},{}]}"#
        );
    }
}

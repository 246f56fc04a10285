//! A small JSON (RFC 8259) parser and serializer, enough for ABI envelopes.
//!
//! Objects keep their members in document order. Key lookup is case-insensitive because
//! the ABI says so: hosts and plugins written against Go's encoding/json spell field
//! names freely (`Payload`, `payload`).

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub offset: usize,
    pub message: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

/// Deep enough for any real envelope; the limit exists because a stack overflow from
/// hostile nesting aborts the whole host process (catch_unwind cannot stop it).
const MAX_DEPTH: usize = 128;

/// Parses one JSON document from raw bytes (which must be UTF-8).
pub fn parse_bytes(input: &[u8]) -> Result<Value, ParseError> {
    match std::str::from_utf8(input) {
        Ok(text) => parse(text),
        Err(e) => Err(ParseError {
            offset: e.valid_up_to(),
            message: "invalid UTF-8",
        }),
    }
}

/// Parses one JSON document; only whitespace may follow it.
pub fn parse(input: &str) -> Result<Value, ParseError> {
    let mut p = Parser {
        src: input.as_bytes(),
        pos: 0,
        depth: 0,
    };
    p.skip_ws();
    let value = p.value()?;
    p.skip_ws();
    if p.pos != p.src.len() {
        return Err(p.err("trailing characters after the JSON value"));
    }
    Ok(value)
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, message: &'static str) -> ParseError {
        ParseError {
            offset: self.pos,
            message,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect_literal(&mut self, word: &'static str, value: Value) -> Result<Value, ParseError> {
        if self.src[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.expect_literal("true", Value::Bool(true)),
            Some(b'f') => self.expect_literal("false", Value::Bool(false)),
            Some(b'n') => self.expect_literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn nested(
        &mut self,
        f: fn(&mut Self) -> Result<Value, ParseError>,
    ) -> Result<Value, ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn object(&mut self) -> Result<Value, ParseError> {
        self.pos += 1; // '{'
        let mut members = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value()?;
            members.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self) -> Result<Value, ParseError> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        // RFC 8259: no leading zeros, no bare '.', no '+' sign on the mantissa.
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        // The slice is ASCII by construction, and Rust's float grammar is a superset.
        let text = std::str::from_utf8(&self.src[start..self.pos])
            .map_err(|_| self.err("invalid number"))?;
        text.parse::<f64>()
            .map(Value::Number)
            .map_err(|_| self.err("invalid number"))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn hex4(&mut self) -> Result<u16, ParseError> {
        let end = self.pos + 4;
        if end > self.src.len() {
            return Err(self.err("truncated \\u escape"));
        }
        let mut n: u16 = 0;
        for &b in &self.src[self.pos..end] {
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(self.err("invalid \\u escape")),
            };
            n = n << 4 | u16::from(d);
        }
        self.pos = end;
        Ok(n)
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            // Copy the run of plain characters in one go; the input is valid UTF-8 and
            // '"' and '\\' are ASCII, so the run ends on a character boundary.
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(
                std::str::from_utf8(&self.src[run_start..self.pos])
                    .map_err(|_| self.err("invalid UTF-8"))?,
            );
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escape = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                    self.pos += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }

    /// After `\u`: one code point, joining a surrogate pair. A lone surrogate becomes
    /// U+FFFD, as Go's encoding/json does, rather than failing the whole request.
    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let first = self.hex4()?;
        match first {
            0xD800..=0xDBFF => {
                if self.src[self.pos..].starts_with(b"\\u") {
                    let save = self.pos;
                    self.pos += 2;
                    let second = self.hex4()?;
                    if (0xDC00..=0xDFFF).contains(&second) {
                        let c = 0x10000
                            + ((u32::from(first) - 0xD800) << 10)
                            + (u32::from(second) - 0xDC00);
                        return Ok(char::from_u32(c).unwrap_or('\u{FFFD}'));
                    }
                    // Not a low surrogate: leave it to be read as its own escape.
                    self.pos = save;
                }
                Ok('\u{FFFD}')
            }
            0xDC00..=0xDFFF => Ok('\u{FFFD}'),
            _ => Ok(char::from_u32(u32::from(first)).unwrap_or('\u{FFFD}')),
        }
    }
}

/// Case-insensitive key equality (Unicode lowercase, close to Go's EqualFold for the
/// ASCII names the ABI uses).
fn key_matches(a: &str, b: &str) -> bool {
    a == b
        || a.chars()
            .flat_map(char::to_lowercase)
            .eq(b.chars().flat_map(char::to_lowercase))
}

impl Value {
    /// Object member by case-insensitive key. When several keys match, the last one wins,
    /// which is what Go's decoder ends up with for duplicate or differently-cased keys.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members
                .iter()
                .rev()
                .find(|(k, _)| key_matches(k, key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Value::Object(_))
    }

    /// Serializes to compact JSON.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_to(&mut out);
        out
    }

    pub fn write_to(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Number(n) => write_number(*n, out),
            Value::String(s) => write_string(s, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_to(out);
                }
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(k, out);
                    out.push(':');
                    v.write_to(out);
                }
                out.push('}');
            }
        }
    }
}

fn write_number(n: f64, out: &mut String) {
    use fmt::Write;
    if !n.is_finite() {
        // JSON has no NaN or infinity.
        out.push_str("null");
    } else if n.fract() == 0.0 && n.abs() < 1e15 {
        // Integral values print without a fraction ("200", not "200.0").
        let _ = write!(out, "{}", n as i64);
    } else {
        // Rust's Display for f64 is the shortest round-tripping form and never uses an
        // exponent, so it is always valid JSON.
        let _ = write!(out, "{}", n);
    }
}

/// Writes `s` as a JSON string literal, escaping quotes, backslashes and all control
/// characters.
pub fn write_string(s: &str, out: &mut String) {
    use fmt::Write;
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
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            // U+2028/2029 are valid JSON but break JavaScript embedding; Go escapes them too.
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

// Small constructors that keep response-building code readable.

pub fn s(text: impl Into<String>) -> Value {
    Value::String(text.into())
}

pub fn obj<const N: usize>(members: [(&str, Value); N]) -> Value {
    Value::Object(
        members
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

pub fn arr<const N: usize>(items: [Value; N]) -> Value {
    Value::Array(items.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scalars() {
        assert_eq!(parse("null").unwrap(), Value::Null);
        assert_eq!(parse(" true ").unwrap(), Value::Bool(true));
        assert_eq!(parse("false").unwrap(), Value::Bool(false));
        assert_eq!(parse("0").unwrap(), Value::Number(0.0));
        assert_eq!(parse("-12.5e2").unwrap(), Value::Number(-1250.0));
        assert_eq!(parse("1E-2").unwrap(), Value::Number(0.01));
        assert_eq!(parse("\"hi\"").unwrap(), s("hi"));
    }

    #[test]
    fn parses_nested() {
        let v = parse(r#"{"a":[1,{"b":null}],"c":{"d":"e"}, "f" : [] , "g":{}}"#).unwrap();
        assert_eq!(
            v.get("a"),
            Some(&arr([Value::Number(1.0), obj([("b", Value::Null)])]))
        );
        assert_eq!(
            v.get("c").and_then(|c| c.get("d")).and_then(Value::as_str),
            Some("e")
        );
        assert_eq!(v.get("f"), Some(&Value::Array(vec![])));
        assert_eq!(v.get("g"), Some(&Value::Object(vec![])));
    }

    #[test]
    fn string_escapes() {
        let v = parse(r#""a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00""#).unwrap();
        assert_eq!(v, s("a\"b\\c/d\u{8}\u{c}\n\r\té😀"));
        // Lone surrogates become U+FFFD instead of failing.
        assert_eq!(parse(r#""\ud800x""#).unwrap(), s("\u{FFFD}x"));
        assert_eq!(parse(r#""\udc00""#).unwrap(), s("\u{FFFD}"));
        assert_eq!(parse(r#""\ud800\u0041""#).unwrap(), s("\u{FFFD}A"));
        // Raw multi-byte UTF-8 passes through.
        assert_eq!(parse("\"日本\"").unwrap(), s("日本"));
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "",
            " ",
            "{",
            "}",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "{\"a\" 1}",
            "01",
            "1.",
            ".5",
            "+1",
            "-",
            "1e",
            "tru",
            "nul",
            "\"abc",
            "\"a\nb\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12G4\"",
            "[1 2]",
            "{} {}",
            "'a'",
            "NaN",
            "[",
            "[1,",
            "{\"a\":}",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
        assert!(parse_bytes(b"\"\xff\"").is_err());
    }

    #[test]
    fn depth_limit() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).is_err());
        // Far too deep must fail cleanly, not overflow the stack.
        assert!(parse(&"[".repeat(1_000_000)).is_err());
    }

    #[test]
    fn case_insensitive_lookup() {
        let v = parse(r#"{"Model":"m","PAYLOAD":"p","body":"b"}"#).unwrap();
        assert_eq!(v.get("model").and_then(Value::as_str), Some("m"));
        assert_eq!(v.get("Payload").and_then(Value::as_str), Some("p"));
        assert_eq!(v.get("Body").and_then(Value::as_str), Some("b"));
        assert_eq!(v.get("missing"), None);
        assert_eq!(s("x").get("x"), None);
        // The last matching key wins.
        let dup = parse(r#"{"model":"a","Model":"b"}"#).unwrap();
        assert_eq!(dup.get("MODEL").and_then(Value::as_str), Some("b"));
    }

    #[test]
    fn serializes() {
        let v = obj([
            ("s", s("q\"b\\n\nt\tc\u{1}\u{7f}é\u{2028}")),
            ("n", Value::Number(200.0)),
            ("f", Value::Number(-1.5)),
            ("big", Value::Number(1e300)),
            ("nan", Value::Number(f64::NAN)),
            ("a", arr([Value::Bool(true), Value::Null])),
            ("o", Value::Object(vec![])),
        ]);
        let text = v.to_json();
        assert_eq!(
            text,
            r#"{"s":"q\"b\\n\nt\tc\u0001\u007fé\u2028","n":200,"f":-1.5,"big":"#.to_string()
                + &format!("{}", 1e300f64)
                + r#","nan":null,"a":[true,null],"o":{}}"#
        );
        // Round trip (NaN aside).
        let back = parse(&text).unwrap();
        assert_eq!(back.get("s"), v.get("s"));
        assert_eq!(back.get("big"), v.get("big"));
    }

    #[test]
    fn round_trips_all_control_chars() {
        let all: String = (0u32..0x80).filter_map(char::from_u32).collect();
        let text = s(all.clone()).to_json();
        assert_eq!(parse(&text).unwrap(), s(all));
    }
}

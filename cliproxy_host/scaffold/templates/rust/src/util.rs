//! Just enough JSON, base64 and YAML for the plugin's requests, without dependencies.
//!
//! Not general parsers: `field` finds a top-level key of a JSON object and hands back
//! its raw text, `yaml_scalar` reads a top-level `key: value`. Swap in real crates
//! when the plugin outgrows them (and drop `--offline` from the Makefile if you do).

/// The raw text of the top-level `key` of the JSON object `json` (a string keeps its
/// quotes). Keys match ASCII case-insensitively, as the Go host's decoder does; an
/// exact match wins. Err when `json` is not a well-formed object.
pub fn field<'a>(json: &'a str, key: &str) -> Result<Option<&'a str>, String> {
    let bad = || "the request must be a JSON object".to_string();
    let b = json.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err(bad());
    }
    i = skip_ws(b, i + 1);
    let mut exact = None;
    let mut folded = None;
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let key_end = skip_string(b, i).ok_or_else(bad)?;
            let name = unescape(&json[i + 1..key_end - 1]).ok_or_else(bad)?;
            i = skip_ws(b, key_end);
            if b.get(i) != Some(&b':') {
                return Err(bad());
            }
            let start = skip_ws(b, i + 1);
            let end = skip_value(b, start).ok_or_else(bad)?;
            if exact.is_none() && name == key {
                exact = Some(&json[start..end]);
            } else if folded.is_none() && name.eq_ignore_ascii_case(key) {
                folded = Some(&json[start..end]);
            }
            i = skip_ws(b, end);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err(bad()),
            }
        }
    }
    if skip_ws(b, i) != b.len() {
        return Err(bad());
    }
    Ok(exact.or(folded))
}

/// A string field's raw JSON text (quotes included); None when absent or null.
pub fn string_field<'a>(json: &'a str, key: &str) -> Result<Option<&'a str>, String> {
    match field(json, key)? {
        None | Some("null") => Ok(None),
        Some(raw) if raw.starts_with('"') => Ok(Some(raw)),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

/// The text of a raw JSON string value (with its quotes), unescaped.
pub fn string_value(raw: &str) -> Option<String> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    unescape(inner)
}

/// `s` as a quoted JSON string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Just past the closing quote of the string starting at `i`.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            c if c < 0x20 => return None,
            _ => i += 1,
        }
    }
    None
}

/// Just past the value starting at `i`. Skips, does not validate: brackets are counted
/// outside strings, iteratively, so deep nesting cannot overflow the stack.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    if !s.contains('\\') {
        return Some(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                if hex.len() != 4 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                let mut code = u32::from_str_radix(&hex, 16).ok()?;
                if (0xD800..0xDC00).contains(&code) {
                    let rest = chars.as_str();
                    if let Some(low) = rest
                        .strip_prefix("\\u")
                        .and_then(|r| r.get(..4))
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .filter(|low| (0xDC00..0xE000).contains(low))
                    {
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                        chars = rest[6..].chars();
                    }
                }
                // A lone surrogate becomes U+FFFD, as Go's decoder does.
                out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
            _ => return None,
        }
    }
    Some(out)
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let v = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for (n, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if n <= chunk.len() {
                out.push(ALPHABET[(v >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64; padding is optional. None on anything outside the alphabet.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6 | v) & 0xFFFFFF;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    (text.len() % 4 != 1).then_some(out)
}

/// A top-level `key: value` scalar of a YAML mapping (quotes stripped, a trailing
/// ` # comment` dropped); None when absent, null or not a one-line scalar. What the
/// host writes for simple settings; not a YAML parser.
pub fn yaml_scalar(yaml: &str, key: &str) -> Option<String> {
    for line in yaml.lines() {
        if line.starts_with([' ', '\t', '#', '-']) {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.trim().trim_matches(|c| c == '"' || c == '\'') != key {
            continue;
        }
        let value = value.trim();
        if let Some(quoted) = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        {
            return Some(quoted.to_string());
        }
        let value = value.split(" #").next().unwrap_or("").trim();
        return match value {
            "" | "~" | "null" => None,
            v if v.starts_with(['|', '>', '{', '[']) => None,
            v => Some(v.to_string()),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields_case_insensitively() {
        let json = r#"{"body": "YQ==", "Body": "Yg==", "n": [1, {"x": "}"}], "m": null}"#;
        assert_eq!(field(json, "Body"), Ok(Some("\"Yg==\"")));
        assert_eq!(field(json, "N"), Ok(Some("[1, {\"x\": \"}\"}]")));
        assert_eq!(string_field(json, "m"), Ok(None));
        assert!(string_field(json, "n").is_err());
        assert!(field("[]", "a").is_err());
        assert!(field("{\"a\": 1} x", "a").is_err());
    }

    #[test]
    fn base64_round_trips() {
        for data in [&b""[..], b"a", b"ab", b"abc", b"abcd"] {
            assert_eq!(base64_decode(&base64_encode(data)).as_deref(), Some(data));
        }
        assert_eq!(base64_encode(b"hi"), "aGk=");
        assert_eq!(base64_decode("!!"), None);
    }

    #[test]
    fn reads_yaml_scalars() {
        let yaml = "enabled: true\nverbose: 'yes'\nnested:\n  verbose: false\nurl: http://a:1 # c\n";
        assert_eq!(yaml_scalar(yaml, "verbose").as_deref(), Some("yes"));
        assert_eq!(yaml_scalar(yaml, "url").as_deref(), Some("http://a:1"));
        assert_eq!(yaml_scalar(yaml, "missing"), None);
    }

    #[test]
    fn quotes_and_unescapes() {
        assert_eq!(quote("a\"b\n"), r#""a\"b\n""#);
        assert_eq!(string_value(r#""a\u00e9\ud83d\ude00""#).as_deref(), Some("aé😀"));
    }
}

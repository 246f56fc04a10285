//! The plugin's own configuration, read from the `config_yaml` the host sends.
//!
//! Not a YAML parser: it reads only top-level `key: value` scalars (plain, 'single' or
//! "double" quoted, on one line). Nested mappings, sequences, block scalars and
//! multi-line values are skipped. That is all this plugin's two settings need and keeps
//! the crate free of dependencies.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Upper,
    Lower,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Upper => "upper",
            Mode::Lower => "lower",
        }
    }

    /// ASCII case mapping only: it works on arbitrary bytes (payloads need not be
    /// UTF-8) and never changes their length.
    pub fn apply(self, data: &mut [u8]) {
        match self {
            Mode::Upper => data.make_ascii_uppercase(),
            Mode::Lower => data.make_ascii_lowercase(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    pub upstream_url: Option<String>,
}

impl Config {
    pub const DEFAULT: Config = Config {
        mode: Mode::Upper,
        upstream_url: None,
    };

    pub fn from_yaml(yaml: &str) -> Result<Config, String> {
        let mut config = Config::DEFAULT;
        for (key, value) in top_level_scalars(yaml) {
            match key.as_str() {
                "mode" => {
                    config.mode = match value {
                        Scalar::Null => Mode::Upper,
                        Scalar::Text(t) if t.eq_ignore_ascii_case("upper") => Mode::Upper,
                        Scalar::Text(t) if t.eq_ignore_ascii_case("lower") => Mode::Lower,
                        Scalar::Text(t) => {
                            return Err(format!("mode must be \"upper\" or \"lower\", not {t:?}"))
                        }
                        Scalar::Unsupported => {
                            return Err("mode must be a single-line scalar".to_string())
                        }
                    }
                }
                "upstream_url" => {
                    config.upstream_url = match value {
                        Scalar::Null => None,
                        Scalar::Text(t) if t.is_empty() => None,
                        Scalar::Text(t) => Some(t),
                        Scalar::Unsupported => {
                            return Err("upstream_url must be a single-line scalar".to_string())
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(config)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    /// Empty value, `~` or `null`.
    Null,
    Text(String),
    /// Something this reader does not handle (a block scalar, a flow collection, an
    /// anchor or tag, an unterminated quote).
    Unsupported,
}

/// The top-level `key: value` pairs of a YAML mapping, in document order.
pub fn top_level_scalars(yaml: &str) -> Vec<(String, Scalar)> {
    let yaml = yaml.strip_prefix('\u{feff}').unwrap_or(yaml);
    let mut out = Vec::new();
    for raw in yaml.lines() {
        let line = raw.trim_end();
        // Indented lines belong to a nested value; '#' starts a comment; '-' a sequence
        // item or a document marker.
        if line.is_empty() || line.starts_with([' ', '\t', '#', '-']) || line == "..." {
            continue;
        }
        let Some((key, rest)) = split_key(line) else {
            continue;
        };
        out.push((unquote_key(key), parse_scalar(rest)));
    }
    out
}

/// Splits at the first `:` that is followed by a space or ends the line, so a plain
/// value may itself contain colons (`http://host:8080`).
fn split_key(line: &str) -> Option<(&str, &str)> {
    let bytes = line.as_bytes();
    let mut in_quote: Option<u8> = None;
    for (i, &b) in bytes.iter().enumerate() {
        match in_quote {
            Some(q) if b == q => in_quote = None,
            Some(_) => {}
            None if (b == b'"' || b == b'\'') && i == 0 => in_quote = Some(b),
            None if b == b':' && matches!(bytes.get(i + 1), None | Some(b' ' | b'\t')) => {
                return Some((line[..i].trim_end(), &line[i + 1..]));
            }
            None => {}
        }
    }
    None
}

fn unquote_key(key: &str) -> String {
    match parse_scalar(key) {
        Scalar::Text(t) => t,
        _ => key.to_string(),
    }
}

fn parse_scalar(rest: &str) -> Scalar {
    let value = rest.trim_start();
    match value.as_bytes().first() {
        None | Some(b'#') => Scalar::Null,
        Some(b'"') => double_quoted(&value[1..]),
        Some(b'\'') => single_quoted(&value[1..]),
        Some(b'|' | b'>' | b'[' | b'{' | b'&' | b'*' | b'!' | b'@' | b'`') => Scalar::Unsupported,
        Some(_) => {
            // A plain scalar ends at " #" (a comment).
            let end = value
                .find(" #")
                .or_else(|| value.find("\t#"))
                .unwrap_or(value.len());
            let text = value[..end].trim_end();
            match text {
                "~" | "null" | "Null" | "NULL" => Scalar::Null,
                _ => Scalar::Text(text.to_string()),
            }
        }
    }
}

/// What follows a closing quote may only be blank or a comment.
fn only_comment(tail: &str) -> bool {
    let tail = tail.trim_start();
    tail.is_empty() || tail.starts_with('#')
}

fn single_quoted(body: &str) -> Scalar {
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().map(|&(_, n)| n) == Some('\'') {
                out.push('\'');
                chars.next();
                continue;
            }
            return if only_comment(&body[i + 1..]) {
                Scalar::Text(out)
            } else {
                Scalar::Unsupported
            };
        }
        out.push(c);
    }
    Scalar::Unsupported
}

fn double_quoted(body: &str) -> Scalar {
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                return if only_comment(&body[i + 1..]) {
                    Scalar::Text(out)
                } else {
                    Scalar::Unsupported
                };
            }
            '\\' => {
                let Some((_, e)) = chars.next() else {
                    return Scalar::Unsupported;
                };
                let hex_len = match e {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => 0,
                };
                if hex_len > 0 {
                    let hex: String = chars.by_ref().take(hex_len).map(|(_, h)| h).collect();
                    match u32::from_str_radix(&hex, 16)
                        .ok()
                        .filter(|_| hex.len() == hex_len)
                        .and_then(char::from_u32)
                    {
                        Some(ch) => out.push(ch),
                        None => return Scalar::Unsupported,
                    }
                    continue;
                }
                out.push(match e {
                    '0' => '\0',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    't' | '\t' => '\t',
                    'n' => '\n',
                    'v' => '\u{b}',
                    'f' => '\u{c}',
                    'r' => '\r',
                    'e' => '\u{1b}',
                    ' ' => ' ',
                    '"' => '"',
                    '/' => '/',
                    '\\' => '\\',
                    'N' => '\u{85}',
                    '_' => '\u{a0}',
                    'L' => '\u{2028}',
                    'P' => '\u{2029}',
                    _ => return Scalar::Unsupported,
                });
            }
            c => out.push(c),
        }
    }
    Scalar::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Scalar {
        Scalar::Text(t.to_string())
    }

    #[test]
    fn reads_top_level_scalars() {
        let yaml = "\u{feff}---\n# comment\nenabled: true\npriority: 10\nmode: lower # why not\n\
                    nested:\n  mode: upper\n  - x\nlist:\n- a\nupstream_url: http://127.0.0.1:8080/x?a=b#frag\n\
                    empty:\nnull_value: ~\r\n...\n";
        assert_eq!(
            top_level_scalars(yaml),
            vec![
                ("enabled".to_string(), text("true")),
                ("priority".to_string(), text("10")),
                ("mode".to_string(), text("lower")),
                ("nested".to_string(), Scalar::Null),
                ("list".to_string(), Scalar::Null),
                (
                    "upstream_url".to_string(),
                    text("http://127.0.0.1:8080/x?a=b#frag")
                ),
                ("empty".to_string(), Scalar::Null),
                ("null_value".to_string(), Scalar::Null),
            ]
        );
    }

    #[test]
    fn quoted_scalars() {
        let yaml = "a: 'it''s # not a comment'\nb: \"x\\ty\\\"z\\u00e9\\x41\" # c\n\"q:k\": v\nc: 'open\nd: \"bad\" tail\ne: \"\\q\"\n";
        assert_eq!(
            top_level_scalars(yaml),
            vec![
                ("a".to_string(), text("it's # not a comment")),
                ("b".to_string(), text("x\ty\"zéA")),
                ("q:k".to_string(), text("v")),
                ("c".to_string(), Scalar::Unsupported),
                ("d".to_string(), Scalar::Unsupported),
                ("e".to_string(), Scalar::Unsupported),
            ]
        );
    }

    #[test]
    fn unsupported_forms() {
        let v = top_level_scalars("a: |\n  text\nb: [1, 2]\nc: {x: 1}\nd: &anchor v\n");
        assert!(v.iter().all(|(_, s)| *s == Scalar::Unsupported), "{v:?}");
    }

    #[test]
    fn config_defaults_and_values() {
        assert_eq!(Config::from_yaml("").unwrap(), Config::DEFAULT);
        assert_eq!(
            Config::from_yaml("enabled: false\npriority: 0\n").unwrap(),
            Config::DEFAULT
        );
        let c =
            Config::from_yaml("mode: lower\nupstream_url: \"https://example.test/v1\"\n").unwrap();
        assert_eq!(c.mode, Mode::Lower);
        assert_eq!(c.upstream_url.as_deref(), Some("https://example.test/v1"));
        assert_eq!(
            Config::from_yaml("mode: UPPER\nupstream_url: ''\n").unwrap(),
            Config::DEFAULT
        );
        assert_eq!(
            Config::from_yaml("mode: ~\nupstream_url: null\n").unwrap(),
            Config::DEFAULT
        );
        // A nested `mode` is someone else's key.
        assert_eq!(
            Config::from_yaml("other:\n  mode: lower\n").unwrap().mode,
            Mode::Upper
        );
        assert!(Config::from_yaml("mode: sideways\n").is_err());
        assert!(Config::from_yaml("mode: [upper]\n").is_err());
    }

    #[test]
    fn mode_applies_ascii_only() {
        let mut data = b"HeLLo \xc3\xa9 \xff".to_vec();
        Mode::Upper.apply(&mut data);
        assert_eq!(data, b"HELLO \xc3\xa9 \xff");
        Mode::Lower.apply(&mut data);
        assert_eq!(data, b"hello \xc3\xa9 \xff");
    }
}

//! Standard base64 (RFC 4648 section 4, `+` `/` and `=` padding), the encoding the ABI
//! uses for every byte field.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub offset: usize,
    pub message: &'static str,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid base64: {} at offset {}",
            self.message, self.offset
        )
    }
}

pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        out.push(ALPHABET[(n >> 18) as usize & 63] as char);
        out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

fn sextet(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

/// Decodes standard base64. Like Go's `base64.StdEncoding`, CR and LF are skipped;
/// padding may be omitted, but if present it must be correct and final.
pub fn decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut count = 0usize; // sextets in the current quantum
    let mut padding = 0usize;
    for (i, &c) in text.as_bytes().iter().enumerate() {
        if c == b'\r' || c == b'\n' {
            continue;
        }
        if c == b'=' {
            // Padding only completes a quantum that has 2 or 3 sextets.
            if count + padding < 2 || count + padding >= 4 {
                return Err(DecodeError {
                    offset: i,
                    message: "misplaced padding",
                });
            }
            padding += 1;
            continue;
        }
        if padding > 0 {
            return Err(DecodeError {
                offset: i,
                message: "data after padding",
            });
        }
        let v = sextet(c).ok_or(DecodeError {
            offset: i,
            message: "illegal character",
        })?;
        acc = acc << 6 | v;
        count += 1;
        if count == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            acc = 0;
            count = 0;
        }
    }
    match (count, padding) {
        (0, 0) => {}
        (2, 0) | (2, 2) => out.push((acc >> 4) as u8),
        (3, 0) | (3, 1) => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        (1, _) => {
            return Err(DecodeError {
                offset: text.len(),
                message: "truncated input",
            })
        }
        _ => {
            return Err(DecodeError {
                offset: text.len(),
                message: "wrong amount of padding",
            })
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4648 section 10 test vectors.
    const VECTORS: [(&str, &str); 7] = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn rfc_vectors() {
        for (plain, coded) in VECTORS {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn all_bytes_round_trip() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for n in 0..data.len() {
            assert_eq!(decode(&encode(&data[..n])).unwrap(), &data[..n]);
        }
        assert!(encode(&[0xfb, 0xff]).contains('+') || encode(&[0xfb, 0xff]).contains('/'));
    }

    #[test]
    fn lenient_forms() {
        assert_eq!(decode("Zm9vYg").unwrap(), b"foob");
        assert_eq!(decode("Zm9vYmE").unwrap(), b"fooba");
        assert_eq!(decode("Zm9v\r\nYmFy\n").unwrap(), b"foobar");
        assert_eq!(decode("SGVMTG8=").unwrap(), b"HeLLo");
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "Z",
            "Zm9vY",
            "Zg=",
            "Zg===",
            "Z===",
            "=",
            "Zm9v=",
            "Zg==Zg==",
            "Zm-v",
            "Zm9v YmFy",
            "Zm_v",
            "é",
        ] {
            assert!(decode(bad).is_err(), "accepted {bad:?}");
        }
    }
}

//! Base64 both ways: standard with padding for `Authorization: Basic`, URL-safe for reading JWT
//! payloads. Small enough that a dependency would cost the component more than it saves.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4).
pub fn encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);

    for chunk in input.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let group = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        for position in 0..4 {
            if position <= chunk.len() {
                let index = (group >> (18 - 6 * position)) & 0x3f;
                out.push(ALPHABET[index as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes URL-safe base64 (RFC 4648 §5), padded or not; `None` for anything else.
pub fn decode_url_safe(input: &str) -> Option<Vec<u8>> {
    let input = input.trim_end_matches('=');
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;

    for byte in input.bytes() {
        buffer = (buffer << 6) | u32::from(url_safe_value(byte)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn url_safe_value(byte: u8) -> Option<u8> {
    match byte {
        b'A'..=b'Z' => Some(byte - b'A'),
        b'a'..=b'z' => Some(byte - b'a' + 26),
        b'0'..=b'9' => Some(byte - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn encoding_matches_the_rfc_4648_vectors() {
        for (plain, encoded) in VECTORS {
            assert_eq!(encode(plain.as_bytes()), encoded, "encoding {plain:?}");
        }
        assert_eq!(encode(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn url_safe_decoding_inverts_the_vectors_with_or_without_padding() {
        for (plain, encoded) in VECTORS {
            let decoded = decode_url_safe(encoded).unwrap();
            assert_eq!(decoded, plain.as_bytes(), "decoding {encoded:?}");
            let unpadded = encoded.trim_end_matches('=');
            assert_eq!(decode_url_safe(unpadded).unwrap(), plain.as_bytes());
        }
        assert_eq!(decode_url_safe("-_8").unwrap(), [0xfb, 0xff]);
    }

    #[test]
    fn url_safe_decoding_refuses_foreign_characters_and_impossible_lengths() {
        assert_eq!(decode_url_safe("+/8="), None);
        assert_eq!(decode_url_safe("abcde"), None);
        assert_eq!(decode_url_safe("ab c"), None);
    }
}

//! Base64 (RFC 4648 §4) and base64url (§5): the one implementation the crate uses, for BTP
//! account names (`btp::auth`) and LND key material (`lnd::grpc`). A leaf: it imports nothing
//! from the crate.

use std::fmt;

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Standard base64 with `=` padding (RFC 4648 §4).
///
/// ```
/// use ilp_plugin_lightning::encoding::base64;
/// assert_eq!(base64(b"foobar"), "Zm9vYmFy");
/// assert_eq!(base64(b"fo"), "Zm8=");
/// assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
/// ```
pub fn base64(bytes: &[u8]) -> String {
    encode(bytes, STANDARD, true)
}

/// Base64url without padding (RFC 4648 §5), as btp-packet's `base64url` writes it.
///
/// ```
/// use ilp_plugin_lightning::encoding::base64url;
/// assert_eq!(base64url(b""), "");
/// assert_eq!(base64url(b"f"), "Zg");
/// assert_eq!(base64url(b"foob"), "Zm9vYg");
/// assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
/// ```
pub fn base64url(bytes: &[u8]) -> String {
    encode(bytes, URL_SAFE, false)
}

fn encode(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        // A chunk of k bytes carries 8k bits: k + 1 characters.
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
        if pad {
            for _ in chars..4 {
                out.push('=');
            }
        }
    }
    out
}

/// Why a text is not base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base64Error {
    /// A character of neither alphabet.
    InvalidCharacter {
        /// The character.
        character: char,
        /// Its byte offset in the text.
        position: usize,
    },
    /// Something other than padding or white space follows `=`, at this byte offset.
    DataAfterPadding {
        /// Byte offset of the first such character.
        position: usize,
    },
    /// The text stops inside a byte, or has more than two `=`.
    Truncated,
    /// The last character has bits set that no byte uses (not canonical base64).
    NonZeroTrailingBits,
}

impl fmt::Display for Base64Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Base64Error::InvalidCharacter {
                character,
                position,
            } => write!(f, "character {character:?} at position {position}"),
            Base64Error::DataAfterPadding { position } => {
                write!(f, "data after padding at position {position}")
            }
            Base64Error::Truncated => f.write_str("truncated input"),
            Base64Error::NonZeroTrailingBits => f.write_str("non-zero trailing bits"),
        }
    }
}

impl std::error::Error for Base64Error {}

/// Decodes standard or URL-safe base64, padded or not, skipping ASCII white space (PEM-style
/// line breaks). An empty text decodes to no bytes.
///
/// ```
/// use ilp_plugin_lightning::encoding::decode_base64;
/// assert_eq!(decode_base64("Zm9vYg==").unwrap(), b"foob");
/// assert_eq!(decode_base64("Zm9v\nYg").unwrap(), b"foob");
/// assert_eq!(decode_base64("-_8").unwrap(), [0xfb, 0xff]);
/// assert!(decode_base64("Zm9v!").is_err());
/// ```
pub fn decode_base64(text: &str) -> Result<Vec<u8>, Base64Error> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut padding = 0usize;
    for (position, character) in text.char_indices() {
        if character.is_ascii_whitespace() {
            continue;
        }
        if character == '=' {
            padding += 1;
            continue;
        }
        if padding > 0 {
            return Err(Base64Error::DataAfterPadding { position });
        }
        let value = match character {
            'A'..='Z' => character as u32 - 'A' as u32,
            'a'..='z' => character as u32 - 'a' as u32 + 26,
            '0'..='9' => character as u32 - '0' as u32 + 52,
            '+' | '-' => 62,
            '/' | '_' => 63,
            _ => {
                return Err(Base64Error::InvalidCharacter {
                    character,
                    position,
                })
            }
        };
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if padding > 2 || bits >= 6 {
        return Err(Base64Error::Truncated);
    }
    if acc != 0 {
        return Err(Base64Error::NonZeroTrailingBits);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_alphabets_match_rfc4648_vectors() {
        for (input, padded, unpadded) in [
            (&b""[..], "", ""),
            (b"f", "Zg==", "Zg"),
            (b"fo", "Zm8=", "Zm8"),
            (b"foo", "Zm9v", "Zm9v"),
            (b"foob", "Zm9vYg==", "Zm9vYg"),
            (b"fooba", "Zm9vYmE=", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input), padded);
            assert_eq!(base64url(input), unpadded);
            assert_eq!(decode_base64(padded).unwrap(), input);
            assert_eq!(decode_base64(unpadded).unwrap(), input);
        }
        assert_eq!(base64(&[0xff, 0xef, 0xbe]), "/+++");
        assert_eq!(base64url(&[0xff, 0xef, 0xbe]), "_---");
    }

    #[test]
    fn decode_inverts_both_encoders_at_every_length() {
        for len in 0..40usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode_base64(&base64(&data)).unwrap(), data, "len {len}");
            assert_eq!(decode_base64(&base64url(&data)).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn decode_says_what_is_wrong_and_where() {
        assert_eq!(
            decode_base64("Zm9v!mFy"),
            Err(Base64Error::InvalidCharacter {
                character: '!',
                position: 4
            })
        );
        assert_eq!(
            decode_base64("Zm8=Zm8="),
            Err(Base64Error::DataAfterPadding { position: 4 })
        );
        assert_eq!(decode_base64("Z"), Err(Base64Error::Truncated));
        assert_eq!(decode_base64("Zg==="), Err(Base64Error::Truncated));
        assert_eq!(decode_base64("Zm9="), Err(Base64Error::NonZeroTrailingBits));
        assert_eq!(
            decode_base64("Zm9v!").unwrap_err().to_string(),
            "character '!' at position 4"
        );
    }
}

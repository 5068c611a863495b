//! Binary-safe output in JSON: text when it is valid UTF-8, base64 beside it when it is not.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Output as it appears in JSON: `text` always (lossy when the bytes are not UTF-8), and
/// `base64` holding the exact bytes only when they are not valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextOrBase64 {
    /// The bytes as text, with invalid sequences replaced.
    pub text: String,
    /// The exact bytes, base64-encoded, present only when `text` is not exact.
    pub base64: Option<String>,
}

/// Splits bytes into their JSON representation.
pub fn encode(bytes: &[u8]) -> TextOrBase64 {
    match std::str::from_utf8(bytes) {
        Ok(text) => TextOrBase64 {
            text: text.to_string(),
            base64: None,
        },
        Err(_) => TextOrBase64 {
            text: String::from_utf8_lossy(bytes).into_owned(),
            base64: Some(STANDARD.encode(bytes)),
        },
    }
}

/// Recovers the exact bytes: from base64 when present, else from the text.
pub fn decode(text: &str, base64: Option<&str>) -> Result<Vec<u8>, base64::DecodeError> {
    match base64 {
        Some(encoded) => STANDARD.decode(encoded),
        None => Ok(text.as_bytes().to_vec()),
    }
}

/// Encodes bytes as base64 (for protocol chunks that are always binary).
pub fn to_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes base64.
pub fn from_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stays_text_and_binary_round_trips() {
        let t = encode(b"hello\n");
        assert_eq!(t.base64, None);
        assert_eq!(
            decode(&t.text, t.base64.as_deref()).ok(),
            Some(b"hello\n".to_vec())
        );
        let raw = [0xffu8, 0x00, b'a', 0xc3];
        let b = encode(&raw);
        assert!(b.base64.is_some());
        assert_eq!(
            decode(&b.text, b.base64.as_deref()).ok(),
            Some(raw.to_vec())
        );
    }
}

//! Framing: a stream of JSON objects, back to back (as Go's encoder writes them) or separated by
//! whitespace and newlines. Unknown message types are skipped; anything that is not a JSON object
//! is an error that ends the connection.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use crate::message::Message;

/// Largest message accepted (a task with its files, a result with its output).
pub const DEFAULT_MAX_MESSAGE: usize = 256 << 20;

/// Why the byte stream cannot be read further.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or not an object.
    #[error("invalid JSON at byte {offset}: {detail}")]
    Invalid {
        /// Bytes consumed on the connection before the bad message.
        offset: u64,
        /// What the parser said.
        detail: String,
    },
    /// A known message type with fields of the wrong type.
    #[error("malformed `{kind}` message: {detail}")]
    Malformed {
        /// The message type.
        kind: String,
        /// What is wrong.
        detail: String,
    },
    /// A message larger than the limit.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

/// What one decoded object turned out to be.
// Frames live for one loop iteration; boxing the message would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A message this crate knows.
    Message(Message),
    /// An object whose `message` type is unknown (or absent): to be ignored.
    Unknown(String),
}

/// Incremental decoder: feed it bytes as they arrive, take frames out.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the undecoded bytes of `buf` begin.
    start: usize,
    consumed: u64,
    max: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_MESSAGE)
    }
}

impl Decoder {
    /// A decoder refusing messages larger than `max` bytes.
    pub fn new(max: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            start: 0,
            consumed: 0,
            max,
        }
    }

    /// Adds bytes read from the connection.
    pub fn feed(&mut self, data: &[u8]) {
        // Drop what has been decoded once it is most of the buffer (amortised: no memmove per
        // message).
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let pending = &self.buf[self.start..];
        let skip = pending
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(pending.len());
        self.start += skip;
        self.consumed += skip as u64;
        let pending = &self.buf[self.start..];
        let Some(&first) = pending.first() else {
            self.buf.clear();
            self.start = 0;
            return Ok(None);
        };
        if first != b'{' {
            return Err(DecodeError::Invalid {
                offset: self.consumed,
                detail: format!("expected `{{`, found byte 0x{first:02x}"),
            });
        }
        // Find where the object ends without building it.
        let mut stream = serde_json::Deserializer::from_slice(pending).into_iter::<IgnoredAny>();
        match stream.next() {
            None => return Ok(None),
            Some(Ok(_)) => {}
            Some(Err(e)) if e.is_eof() => {
                if pending.len() > self.max {
                    return Err(DecodeError::TooLarge { limit: self.max });
                }
                return Ok(None);
            }
            Some(Err(e)) => {
                return Err(DecodeError::Invalid {
                    offset: self.consumed,
                    detail: e.to_string(),
                })
            }
        }
        let used = stream.byte_offset();
        let object = &pending[..used];
        self.start += used;
        self.consumed += used as u64;
        classify(object).map(Some)
    }
}

#[derive(Deserialize)]
struct Kind {
    #[serde(default)]
    message: Option<Value>,
}

fn classify(object: &[u8]) -> Result<Frame, DecodeError> {
    let kind = match serde_json::from_slice::<Kind>(object) {
        Ok(Kind {
            message: Some(Value::String(kind)),
        }) => kind,
        Ok(_) => return Ok(Frame::Unknown(String::new())),
        Err(e) => {
            return Err(DecodeError::Malformed {
                kind: String::new(),
                detail: e.to_string(),
            })
        }
    };
    if !Message::is_known(&kind) {
        return Ok(Frame::Unknown(kind));
    }
    serde_json::from_slice(object)
        .map(Frame::Message)
        .map_err(|e| DecodeError::Malformed {
            kind,
            detail: e.to_string(),
        })
}

/// A message as bytes on the wire: one JSON object and a newline.
pub fn encode(message: &Message) -> Vec<u8> {
    // Serializing these types cannot fail: every map key is a string and no value is a float
    // from outside; fall back to a keep-alive rather than panic if it ever did.
    let mut out =
        serde_json::to_vec(message).unwrap_or_else(|_| br#"{"message":"keep-alive"}"#.to_vec());
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Done, Launch};

    fn frames(chunks: &[&[u8]]) -> Result<Vec<Frame>, String> {
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        for chunk in chunks {
            d.feed(chunk);
            while let Some(f) = d.next_frame().map_err(|e| e.to_string())? {
                out.push(f);
            }
        }
        Ok(out)
    }

    #[test]
    fn back_to_back_newlines_and_split_reads() {
        let go = br#"{"message":"register-pool","capacity":2}{"message":"keep-alive"}"#;
        assert_eq!(
            frames(&[go]),
            Ok(vec![
                Frame::Message(Message::RegisterPool { capacity: 2 }),
                Frame::Message(Message::KeepAlive)
            ])
        );
        let text = b"{\"message\":\"abort\",\"id\":\"7\"}\n\n  {\"message\":\"done\",\"id\":\"7\",\"status\":\"abort\"}\n";
        for split in 1..text.len() {
            let got = frames(&[&text[..split], &text[split..]]);
            assert_eq!(
                got,
                Ok(vec![
                    Frame::Message(Message::Abort { id: "7".into() }),
                    Frame::Message(Message::Done(Done {
                        id: "7".into(),
                        status: "abort".into(),
                        output: String::new()
                    })),
                ]),
                "split at {split}"
            );
        }
    }

    #[test]
    fn unknown_types_are_frames_to_ignore() {
        let got =
            frames(&[br#"{"message":"-future","x":1}{"other":true}{"message":"launch","id":"a"}"#]);
        assert_eq!(
            got,
            Ok(vec![
                Frame::Unknown("-future".into()),
                Frame::Unknown(String::new()),
                Frame::Message(Message::Launch(Launch {
                    id: "a".into(),
                    ..Launch::default()
                })),
            ])
        );
    }

    #[test]
    fn garbage_and_wrong_types_are_errors() {
        assert!(frames(&[b"hello"]).is_err());
        assert!(frames(&[b"[1,2]"]).is_err());
        assert!(frames(&[b"{\"message\":\"register-pool\",\"capacity\":\"two\"}"]).is_err());
        assert!(frames(&[b"{\"message\":\"keep-alive\"} {oops}"]).is_err());
        let mut d = Decoder::new(16);
        d.feed(b"{\"message\":\"keep-alive\",\"padding\":\"");
        assert!(matches!(d.next_frame(), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn encoded_messages_decode() {
        let msgs = [
            Message::KeepAlive,
            Message::Output(crate::message::OutputData {
                id: "1".into(),
                stream: warren_core::task::OutputStream::Stdout,
                data: vec![0, 0xff, b'\n'],
            }),
            Message::Ack { id: "9".into() },
        ];
        let bytes: Vec<u8> = msgs.iter().flat_map(encode).collect();
        let got = frames(&[&bytes]);
        assert_eq!(got, Ok(msgs.into_iter().map(Frame::Message).collect()));
    }
}

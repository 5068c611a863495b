//! Warren's worker/queue wire protocol.
//!
//! Pythia's message protocol is the base: a stream of JSON objects with the message types
//! `keep-alive`, `register-pool`, `launch`, `done` and `abort`. Warren's additions are message
//! types whose names begin with a hyphen (`-register`, `-launch`, `-output`, `-stats`, `-done`,
//! `-ack`, `-refused`); a plain Pythia peer ignores them, and this crate ignores types it does not
//! know, so either side can grow.
//!
//! ```
//! use warren_proto::{encode, Decoder, Frame, Message};
//! let mut decoder = Decoder::default();
//! // Go's encoder writes objects back to back; newline-separated works too.
//! decoder.feed(br#"{"message":"register-pool","capacity":2}{"message":"-new-thing"}"#);
//! assert_eq!(decoder.next_frame().unwrap(), Some(Frame::Message(Message::RegisterPool { capacity: 2 })));
//! assert_eq!(decoder.next_frame().unwrap(), Some(Frame::Unknown("-new-thing".into())));
//! assert_eq!(encode(&Message::KeepAlive), b"{\"message\":\"keep-alive\"}\n");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
pub mod conn;
pub mod message;

pub use codec::{encode, DecodeError, Decoder, Frame};
pub use conn::{spawn_writer, MessageReader, MessageSender, ReadError, DEFAULT_KEEPALIVE};
pub use message::{
    hook, Done, HookReport, Launch, Message, OutputData, PythiaLimits, PythiaStatus, PythiaTask,
    Register, RunTask,
};

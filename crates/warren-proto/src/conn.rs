//! One connection's two halves: a reader that decodes frames and closes a connection silent for
//! three keep-alive intervals, and a writer task that sends queued messages and a keep-alive only
//! after an idle interval.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::codec::{encode, DecodeError, Decoder, Frame};
use crate::message::Message;

/// Pythia's default keep-alive interval.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

/// Why reading a connection stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// The peer sent something that is not the protocol.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Nothing arrived for this long.
    #[error("silent for {0:?} (three keep-alive intervals)")]
    Silent(Duration),
}

/// Reads messages from one connection.
#[derive(Debug)]
pub struct MessageReader<R> {
    reader: R,
    decoder: Decoder,
    silence: Duration,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// A reader that gives up after `3 * keepalive` without a byte.
    pub fn new(reader: R, keepalive: Duration) -> MessageReader<R> {
        MessageReader {
            reader,
            decoder: Decoder::default(),
            silence: keepalive.saturating_mul(3),
            buf: vec![0; 64 << 10],
        }
    }

    /// The next message; `Ok(None)` when the peer closed the connection. Unknown message types
    /// are skipped (logged at debug level).
    pub async fn next(&mut self) -> Result<Option<Message>, ReadError> {
        loop {
            match self.decoder.next_frame()? {
                Some(Frame::Message(message)) => return Ok(Some(message)),
                Some(Frame::Unknown(kind)) => {
                    tracing::debug!(kind, "ignoring unknown message type");
                    continue;
                }
                None => {}
            }
            let n = match tokio::time::timeout(self.silence, self.reader.read(&mut self.buf)).await
            {
                Err(_) => return Err(ReadError::Silent(self.silence)),
                Ok(read) => read?,
            };
            if n == 0 {
                return Ok(None);
            }
            self.decoder.feed(&self.buf[..n]);
        }
    }
}

/// Queues messages for a connection's writer task. Cheap to clone; sending never blocks.
#[derive(Debug, Clone)]
pub struct MessageSender {
    tx: mpsc::UnboundedSender<Message>,
}

impl MessageSender {
    /// Queues a message; false when the connection's writer has stopped.
    pub fn send(&self, message: Message) -> bool {
        self.tx.send(message).is_ok()
    }

    /// Whether the writer has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// A sender and the receiving end, for tests and in-process peers.
    pub fn pair() -> (MessageSender, mpsc::UnboundedReceiver<Message>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (MessageSender { tx }, rx)
    }
}

/// Starts the writer task of a connection. It ends (shutting the write half down) when every
/// [`MessageSender`] is dropped or the socket fails.
pub fn spawn_writer<W>(
    writer: W,
    keepalive: Duration,
) -> (MessageSender, JoinHandle<io::Result<()>>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (sender, rx) = MessageSender::pair();
    let handle = tokio::spawn(write_loop(writer, rx, keepalive));
    (sender, handle)
}

async fn write_loop<W: AsyncWrite + Unpin>(
    writer: W,
    mut rx: mpsc::UnboundedReceiver<Message>,
    keepalive: Duration,
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(64 << 10, writer);
    loop {
        match tokio::time::timeout(keepalive, rx.recv()).await {
            Err(_) => out.write_all(&encode(&Message::KeepAlive)).await?,
            Ok(None) => break,
            Ok(Some(message)) => {
                out.write_all(&encode(&message)).await?;
                // Coalesce whatever else is queued into the same write.
                let mut batch = 0;
                while let Ok(message) = rx.try_recv() {
                    out.write_all(&encode(&message)).await?;
                    batch += 1;
                    if batch >= 1024 {
                        break;
                    }
                }
            }
        }
        out.flush().await?;
    }
    out.flush().await?;
    out.shutdown().await
}

//! [`Output`]: a task's output as the coordinator pushes it, chunk by chunk.

use std::collections::VecDeque;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use reqwest::Response;
use warren_core::task::{OutputChunk, OutputStream, TaskId, TaskView};

use crate::client::{Client, Retry};
use crate::error::{describe, Error, Result};
use crate::sse;

/// One piece of output, with its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Which stream it was written to.
    pub stream: OutputStream,
    /// The bytes, exactly as the program wrote them.
    pub data: Vec<u8>,
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// How the coordinator frames the stream: server-sent events (one `output` event per chunk, an
/// `end` event when the task ends), or one JSON chunk per line.
#[derive(Debug)]
enum Framing {
    Sse(sse::Parser),
    JsonLines(Vec<u8>),
}

/// The output of one task, from its first byte; returned by [`Client::output`].
///
/// Call [`Output::next`] until it returns `None`: that happens when the task has ended and
/// every byte it wrote has been delivered.
///
/// When the connection breaks (the coordinator restarts), the stream is opened again, with
/// back-off for up to [`crate::RECONNECT_BUDGET`]; since the coordinator replays a task's output
/// from its first byte, the bytes already delivered are skipped, so nothing is repeated or lost.
pub struct Output {
    client: Client,
    id: TaskId,
    follow: bool,
    request: String,
    body: ByteStream,
    framing: Framing,
    pending: VecDeque<Chunk>,
    ended: bool,
    /// Bytes handed out so far, per stream (stdout, stderr).
    delivered: [usize; 2],
    /// Bytes of each stream still to drop: already delivered before a reconnection.
    skip: [usize; 2],
    /// The finished task, when the stream's `end` event carried it.
    finished: Option<TaskView>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("request", &self.request)
            .field("framing", &self.framing)
            .field("pending", &self.pending.len())
            .field("ended", &self.ended)
            .finish()
    }
}

fn framing_of(response: &Response) -> Framing {
    let is_sse = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if is_sse {
        Framing::Sse(sse::Parser::new())
    } else {
        Framing::JsonLines(Vec::new())
    }
}

impl Output {
    pub(crate) async fn open(client: Client, id: TaskId, follow: bool) -> Result<Output> {
        let (request, response) = client.output_response(id, follow).await?;
        Ok(Output {
            client,
            id,
            follow,
            request,
            framing: framing_of(&response),
            body: Box::pin(response.bytes_stream()),
            pending: VecDeque::new(),
            ended: false,
            delivered: [0; 2],
            skip: [0; 2],
            finished: None,
        })
    }

    /// Opens the stream again after it broke with `err`, skipping what was delivered.
    async fn reopen(&mut self, err: Error) -> Result<()> {
        let mut retry = Retry::new();
        let mut last = err;
        loop {
            retry.pause(last).await?;
            match self.client.output_response(self.id, self.follow).await {
                Ok((_, response)) => {
                    self.framing = framing_of(&response);
                    self.body = Box::pin(response.bytes_stream());
                    self.skip = self.delivered;
                    return Ok(());
                }
                Err(err) if err.is_transient() => last = err,
                Err(err) => return Err(err),
            }
        }
    }

    /// The next chunk, as soon as the coordinator pushes it; `None` once the task has ended and
    /// all of its output was delivered.
    pub async fn next(&mut self) -> Result<Option<Chunk>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Ok(Some(chunk));
            }
            if self.ended {
                return Ok(None);
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.feed(&bytes)?,
                Some(Err(e)) => {
                    let err = Error::Protocol {
                        request: self.request.clone(),
                        reason: format!("the output stream broke: {}", describe(&e)),
                    };
                    self.reopen(err).await?;
                }
                None => {
                    self.ended = true;
                    if let Framing::JsonLines(rest) = &mut self.framing {
                        let line = std::mem::take(rest);
                        self.json_line(&line)?;
                    }
                }
            }
        }
    }

    /// The finished task, once [`Output::next`] has returned `None` and the coordinator sent
    /// the task with the end of the stream (saves a [`Client::wait`]).
    pub fn finished(&self) -> Option<&TaskView> {
        self.finished
            .as_ref()
            .filter(|view| view.state.is_terminal())
    }

    /// Reads the whole output: every chunk until the task ends, in order.
    pub async fn collect(mut self) -> Result<Vec<Chunk>> {
        let mut chunks = Vec::new();
        while let Some(chunk) = self.next().await? {
            chunks.push(chunk);
        }
        Ok(chunks)
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.framing {
            Framing::Sse(parser) => {
                for event in parser.feed(bytes) {
                    match event.event.as_str() {
                        "output" | "message" => {
                            let chunk = self.decode(event.data.as_bytes())?;
                            self.deliver(chunk);
                        }
                        "end" => {
                            // The coordinator sends the finished task with it.
                            self.finished = serde_json::from_str(&event.data).ok();
                            self.ended = true;
                        }
                        // State changes, keep-alives and anything newer: not output.
                        _ => {}
                    }
                    if self.ended {
                        break;
                    }
                }
            }
            Framing::JsonLines(buffer) => {
                buffer.extend_from_slice(bytes);
                let mut lines = Vec::new();
                while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                    lines.push(buffer.drain(..=end).collect::<Vec<u8>>());
                }
                for line in lines {
                    self.json_line(&line)?;
                }
            }
        }
        Ok(())
    }

    fn json_line(&mut self, line: &[u8]) -> Result<()> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let chunk = self.decode(line)?;
        self.deliver(chunk);
        Ok(())
    }

    /// Queues a chunk, less what a previous connection already delivered.
    fn deliver(&mut self, mut chunk: Chunk) {
        let index = usize::from(chunk.stream == OutputStream::Stderr);
        let skipped = self.skip[index].min(chunk.data.len());
        self.skip[index] -= skipped;
        chunk.data.drain(..skipped);
        if !chunk.data.is_empty() {
            self.delivered[index] += chunk.data.len();
            self.pending.push_back(chunk);
        }
    }

    fn decode(&self, json: &[u8]) -> Result<Chunk> {
        let bad = |reason: String| Error::Protocol {
            request: self.request.clone(),
            reason,
        };
        let chunk: OutputChunk = serde_json::from_slice(json)
            .map_err(|e| bad(format!("an output chunk that is not JSON ({e})")))?;
        let data = chunk
            .bytes()
            .map_err(|e| bad(format!("an output chunk with bad base64 ({e})")))?;
        Ok(Chunk {
            stream: chunk.stream,
            data,
        })
    }
}

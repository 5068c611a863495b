//! An incremental parser for server-sent events (the `text/event-stream` format), fed with the
//! body of a response as it arrives in chunks of any size.

/// One event: its type (`message` when the stream does not name one), its data lines joined
/// with `\n`, and its id when the stream gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, or `message`.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The last `id:` field seen, if any.
    pub id: Option<String>,
}

/// Accumulates bytes and yields complete events.
#[derive(Debug, Default)]
pub struct Parser {
    buffer: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    /// A `\r` ended the previous chunk: a `\n` starting the next one belongs to it.
    skip_lf: bool,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Feeds the next bytes of the stream, returning the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut bytes = bytes;
        if self.skip_lf {
            self.skip_lf = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        self.buffer.extend_from_slice(bytes);
        let mut start = 0;
        let mut i = 0;
        while i < self.buffer.len() {
            let byte = self.buffer[i];
            if byte == b'\n' || byte == b'\r' {
                let line = String::from_utf8_lossy(&self.buffer[start..i]).into_owned();
                if let Some(event) = self.line(&line) {
                    events.push(event);
                }
                i += 1;
                if byte == b'\r' {
                    if i == self.buffer.len() {
                        self.skip_lf = true;
                    } else if self.buffer[i] == b'\n' {
                        i += 1;
                    }
                }
                start = i;
            } else {
                i += 1;
            }
        }
        self.buffer.drain(..start);
        events
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let data = self.data.take();
            let event = self.event.take();
            return data.map(|data| Event {
                event: event.unwrap_or_else(|| "message".to_string()),
                data,
                id: self.id.clone(),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str, id: Option<&str>) -> Event {
        Event {
            event: event.to_string(),
            data: data.to_string(),
            id: id.map(str::to_string),
        }
    }

    /// Feeds `input` cut into pieces of every size from 1 byte up, expecting the same events.
    fn check(input: &str, expected: &[Event]) {
        for piece in 1..=input.len().max(1) {
            let mut parser = Parser::new();
            let mut got = Vec::new();
            for chunk in input.as_bytes().chunks(piece) {
                got.extend(parser.feed(chunk));
            }
            assert_eq!(got, expected, "pieces of {piece} bytes of {input:?}");
        }
    }

    #[test]
    fn events_in_any_chunking() {
        check("data: hello\n\n", &[event("message", "hello", None)]);
        check(
            "event: stdout\ndata: a\ndata: b\n\n",
            &[event("stdout", "a\nb", None)],
        );
        check(
            "id: 7\nevent: end\ndata: {}\r\n\r\n",
            &[event("end", "{}", Some("7"))],
        );
        check(
            "data:x\r\rdata:y\n\n",
            &[event("message", "x", None), event("message", "y", None)],
        );
        check(
            ": keep-alive\n\ndata: z\n\n",
            &[event("message", "z", None)],
        );
        check("event: stdout\n\n", &[]);
        check("data: unfinished\n", &[]);
        check("data\n\n", &[event("message", "", None)]);
        check(
            "id: 1\ndata: a\n\ndata: b\n\n",
            &[
                event("message", "a", Some("1")),
                event("message", "b", Some("1")),
            ],
        );
    }
}

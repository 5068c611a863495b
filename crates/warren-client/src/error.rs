//! What can go wrong talking to a coordinator.

/// An error of the client: the coordinator could not be reached, refused the request, or
/// answered something this client does not understand.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The coordinator URL given is not a usable `http://` or `https://` URL.
    #[error("invalid coordinator URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No HTTP answer at all: connection refused, DNS failure, timeout, TLS failure.
    #[error("cannot reach the Warren coordinator at {url}: {reason}")]
    Unreachable {
        /// The coordinator's base URL.
        url: String,
        /// The underlying cause, in words (e.g. `connection failed: Connection refused`).
        reason: String,
        /// Whether the request may have reached the coordinator: the connection was made and
        /// broke before a whole answer came back.
        sent: bool,
    },
    /// The coordinator answered with an error status; `message` is its own explanation.
    #[error("the coordinator refused {request}: {status} {message}")]
    Api {
        /// The method and path, e.g. `GET /v1/tasks/42`.
        request: String,
        /// The HTTP status code.
        status: u16,
        /// The error message from the response body (or the body itself when it is not JSON).
        message: String,
    },
    /// The answer could not be read or decoded.
    #[error("unexpected answer to {request}: {reason}")]
    Protocol {
        /// The method and path.
        request: String,
        /// What was wrong with the answer.
        reason: String,
    },
}

impl Error {
    /// The HTTP status of an [`Error::Api`], e.g. 404 for an unknown task.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: the coordinator is unreachable (restarting) or
    /// answered 502, 503 or 504.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Api { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }

    /// Whether the request never got an answer (the coordinator is down or unreachable).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}

/// A reqwest error in a few words: what failed and its innermost cause, without the URL it
/// repeats.
pub(crate) fn describe(err: &reqwest::Error) -> String {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "reading the answer failed"
    } else {
        "request failed"
    };
    let mut innermost = None;
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        innermost = Some(cause);
        source = cause.source();
    }
    match innermost {
        Some(cause) => format!("{what}: {cause}"),
        None => what.to_string(),
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

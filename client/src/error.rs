//! The one error type of the client.

use std::fmt;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP server answered with an error status; `message` is the text of
    /// its `{"error": ...}` body (or the raw body when it is not JSON).
    #[error("HTTP {status}: {message}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// The server's error message.
        message: String,
    },
    /// The gRPC call ended with a non-OK status.
    #[error("gRPC {code:?}: {message}")]
    Grpc {
        /// gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// The call did not finish within the client's timeout
    /// ([`ClientOptions`](crate::ClientOptions)): connecting took longer than
    /// `connect_timeout`, or the whole request longer than `request_timeout`.
    #[error("{phase} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        phase: TimeoutPhase,
        /// The timeout that expired.
        after: Duration,
    },
    /// The server could not be reached, the TLS handshake failed, or the URL
    /// is invalid.
    #[error("transport: {0}")]
    Transport(String),
    /// Data that cannot be converted: a malformed response, or a tensor or
    /// parameter that has no representation in the chosen wire form.
    #[error("decode: {0}")]
    Decode(String),
    /// A caller's request that cannot work as given, such as a load-generator
    /// configuration or inputs that do not fit the model.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// The part of a call that [`ClientError::Timeout`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// Establishing the connection (TCP, and TLS where used).
    Connect,
    /// The request, from sending it to the end of the response.
    Request,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::Request => "request",
        })
    }
}

impl From<tonic::Status> for ClientError {
    /// The status's code and message; for a status made on this side (a
    /// transport failure) the message also carries the causes, such as the
    /// TLS alert that ended the connection.
    fn from(s: tonic::Status) -> ClientError {
        let mut message = s.message().to_string();
        append_sources(&mut message, std::error::Error::source(&s));
        ClientError::Grpc {
            code: s.code(),
            message,
        }
    }
}

/// Appends each error of the chain from `source` that `message` does not
/// already say.
fn append_sources(message: &mut String, mut source: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
}

impl ClientError {
    /// A transport error carrying `e` and every error in its source chain
    /// (reqwest and tonic put the useful part, such as "connection refused",
    /// in the sources).
    pub(crate) fn transport(e: &(dyn std::error::Error + 'static)) -> ClientError {
        let mut message = e.to_string();
        append_sources(&mut message, e.source());
        ClientError::Transport(message)
    }
}

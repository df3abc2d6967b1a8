//! The one error type of the core, and the one table that maps each kind of
//! error to an HTTP status, a gRPC code and a metric label, so the three can
//! never drift apart.

use std::fmt;

/// What went wrong, as far as a client is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or does not match the model (400 / INVALID_ARGUMENT).
    InvalidArgument,
    /// Unknown model or version (404 / NOT_FOUND).
    NotFound,
    /// The model is not ready, the server is shutting down, or the queue is
    /// full (503 / UNAVAILABLE). Clients may retry elsewhere or later.
    Unavailable,
    /// The request is larger than a configured limit (413 / RESOURCE_EXHAUSTED).
    TooLarge,
    /// The request waited longer than its timeout (504 / DEADLINE_EXCEEDED).
    Timeout,
    /// The client sent its request too slowly (408 / DEADLINE_EXCEEDED).
    ClientTimeout,
    /// The caller went away before the request was computed (499 / CANCELLED).
    Cancelled,
    /// The feature exists in the protocol but not in this server (501 / UNIMPLEMENTED).
    Unsupported,
    /// A failure inside the server or the runtime (500 / INTERNAL).
    Internal,
    /// An admin operation without a valid token.
    Unauthenticated,
    /// An admin operation on a listener that may not run it.
    PermissionDenied,
    /// The operation conflicts with the current state (e.g. a label naming a version that is not loaded).
    FailedPrecondition,
    /// A restricted API group without its header (`--http-restricted-api`,
    /// `--grpc-restricted-protocol`). Triton's answers, matched as they are:
    /// HTTP 403 and gRPC UNAVAILABLE (not PERMISSION_DENIED).
    Restricted,
    /// An HTTP endpoint called with a method it does not take (405; gRPC has no such case).
    MethodNotAllowed,
}

/// One row of the error table.
#[derive(Debug, Clone, Copy)]
pub struct ErrorMapping {
    /// HTTP status code.
    pub http_status: u16,
    /// Canonical gRPC status code (`google.rpc.Code` numbering).
    pub grpc_code: i32,
    /// Value of the `reason` label on error metrics.
    pub label: &'static str,
}

impl ErrorKind {
    /// The table: the only place where protocol codes for errors are decided.
    pub const fn mapping(self) -> ErrorMapping {
        let (http_status, grpc_code, label) = match self {
            ErrorKind::InvalidArgument => (400, 3, "invalid_argument"),
            ErrorKind::NotFound => (404, 5, "not_found"),
            ErrorKind::Unavailable => (503, 14, "unavailable"),
            ErrorKind::TooLarge => (413, 8, "too_large"),
            ErrorKind::Timeout => (504, 4, "timeout"),
            ErrorKind::ClientTimeout => (408, 4, "client_timeout"),
            ErrorKind::Cancelled => (499, 1, "cancelled"),
            ErrorKind::Unsupported => (501, 12, "unsupported"),
            ErrorKind::Internal => (500, 13, "internal"),
            ErrorKind::Unauthenticated => (401, 16, "unauthenticated"),
            ErrorKind::PermissionDenied => (403, 7, "permission_denied"),
            ErrorKind::FailedPrecondition => (409, 9, "failed_precondition"),
            ErrorKind::Restricted => (403, 14, "restricted"),
            ErrorKind::MethodNotAllowed => (405, 12, "method_not_allowed"),
        };
        ErrorMapping {
            http_status,
            grpc_code,
            label,
        }
    }
}

/// An error with a message meant for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Classification; decides status codes and metric labels.
    pub kind: ErrorKind,
    /// Human-readable explanation, returned to the client as is.
    pub message: String,
}

impl Error {
    /// Builds an error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    /// 400 / INVALID_ARGUMENT.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    /// 404 / NOT_FOUND.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// 503 / UNAVAILABLE.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    /// 413 / RESOURCE_EXHAUSTED.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, message)
    }
    /// 504 / DEADLINE_EXCEEDED.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }
    /// 500 / INTERNAL.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// 501 / UNIMPLEMENTED.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Result with the core error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Longest error message sent to a client: a message quoting client input
/// (a 1 MB model name) must not come back at full length (gRPC clients
/// reject over-long `grpc-message` headers; logs and metrics stay readable).
pub const MAX_MESSAGE_BYTES: usize = 1024;

impl Error {
    /// The message as sent to clients: at most [`MAX_MESSAGE_BYTES`].
    pub fn client_message(&self) -> std::borrow::Cow<'_, str> {
        if self.message.len() <= MAX_MESSAGE_BYTES {
            std::borrow::Cow::Borrowed(&self.message)
        } else {
            std::borrow::Cow::Owned(clip(&self.message, MAX_MESSAGE_BYTES))
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_triton_status_mapping() {
        assert_eq!(ErrorKind::InvalidArgument.mapping().http_status, 400);
        assert_eq!(ErrorKind::NotFound.mapping().http_status, 404);
        assert_eq!(ErrorKind::Unavailable.mapping().http_status, 503);
        assert_eq!(ErrorKind::Internal.mapping().http_status, 500);
        assert_eq!(ErrorKind::Unsupported.mapping().grpc_code, 12);
        assert_eq!(ErrorKind::TooLarge.mapping().grpc_code, 8);
    }
}

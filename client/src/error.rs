//! The one error type of the client.

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
    /// The server could not be reached, or the URL is invalid.
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

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> ClientError {
        ClientError::Grpc {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

impl ClientError {
    /// A transport error carrying `e` and every error in its source chain
    /// (reqwest and tonic put the useful part, such as "connection refused",
    /// in the sources).
    pub(crate) fn transport(e: &(dyn std::error::Error + 'static)) -> ClientError {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        ClientError::Transport(message)
    }
}

//! The error every request path ends in: a canonical code plus a message written for the
//! person who sent the request. Each layer has its own `thiserror` enum that converts into
//! this; each transport owns exactly one table from [`Code`] to its own status codes
//! (`transport::grpc::status_code`, `transport::rest::http_status`).
//! It must not depend on a transport: wire codes and HTTP statuses belong to the transports'
//! tables, and each layer's own errors stay in that layer.

use std::fmt;

/// The canonical error codes of gRPC / `tensorflow.error.Code`, limited to the ones this
/// server produces. The numbers are the wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
}

impl Code {
    /// The `tensorflow.error.Code` / gRPC number of this code.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The upper-case name used by gRPC and by TF Serving's JSON (`"INVALID_ARGUMENT"`).
    pub fn name(self) -> &'static str {
        match self {
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A request failed. `message` is complete on its own: it names the model, the version and
/// the cause, because it is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ServingError {
    pub code: Code,
    pub message: String,
    /// The request is refused for its size (an INVALID_ARGUMENT that REST answers with 413).
    pub too_large: bool,
}

impl ServingError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ServingError {
            code,
            message: message.into(),
            too_large: false,
        }
    }

    /// A request beyond an admission limit: INVALID_ARGUMENT, and 413 over REST when it is
    /// its size that is refused.
    pub fn over_limit(error: &crate::admission::LimitError, prefix: impl fmt::Display) -> Self {
        ServingError {
            too_large: error.is_too_large(),
            ..Self::invalid_argument(format!("{prefix}: {error}"))
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, message)
    }

    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(Code::Unimplemented, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(Code::ResourceExhausted, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    /// Prefixes the message with where the error happened, keeping the code.
    pub fn context(self, prefix: impl fmt::Display) -> Self {
        ServingError {
            message: format!("{prefix}: {}", self.message),
            ..self
        }
    }
}

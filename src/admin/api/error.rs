//! Every way an API request can fail, each with its one answer: an HTTP
//! status and a JSON error body whose `code` is the wire protocol's error
//! code where the fault is one the wire knows (100 to 110), and the HTTP
//! status itself where only HTTP has it (a path, a method, a header, a
//! body's size or type). docs/API.md has the table.

use hyper::header::{HeaderValue, ALLOW, CONNECTION};
use hyper::StatusCode;

use crate::admin::{json, AdminResponse};
use crate::engine::EngineError;
use crate::protocol::{ErrorCode, Outcome};

/// Why an API request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApiError {
    /// `api_key` is empty: the API is off, not open.
    #[error("the HTTP API is off: set api_key to turn it on")]
    Off,
    /// No `X-API-Key` header, or not the configured key.
    #[error("a valid X-API-Key header is required")]
    Unauthorized,
    /// No such endpoint.
    #[error("no endpoint {method} {path}")]
    NotFound { method: String, path: String },
    /// The endpoint exists, with another method.
    #[error("{path} answers {allow} only")]
    MethodNotAllowed { path: String, allow: &'static str },
    /// The body is over `api_max_body_bytes`, or a payload over
    /// `max_message_size`.
    #[error("{what} is over the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        limit: usize,
        /// The body was not read to its end: the connection must close.
        unread: bool,
    },
    /// A body that is neither JSON nor MessagePack.
    #[error("send Content-Type: application/json or application/msgpack (got {0:?})")]
    UnsupportedMediaType(String),
    /// The body or query does not decode, or a value has the wrong type or
    /// is out of range.
    #[error("invalid field: {0}")]
    InvalidField(String),
    /// An operation of a batch that names no operation this API knows.
    #[error("unknown operation {0:?}")]
    UnknownOperation(String),
    /// A room name outside the rules (docs/PROTOCOL.md, Room names); the
    /// text says which name and why.
    #[error("invalid room: {0}")]
    InvalidRoom(String),
    /// The node is draining.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The router's answer was an error (106, 110, ...).
    #[error("{message}")]
    Refused { code: u32, message: String },
    /// The cores did not answer within the API's own deadline.
    #[error("no answer within {0:?}; a publish may or may not have been stored: retry it with its idempotency key")]
    NoAnswer(std::time::Duration),
}

impl ApiError {
    /// The error from a router outcome that is one.
    pub(crate) fn refused(code: u32, message: String) -> ApiError {
        ApiError::Refused { code, message }
    }

    /// The wire's error code, or the HTTP status for faults only HTTP has.
    pub(crate) fn code(&self) -> u32 {
        let wire = |code: ErrorCode| code.code();
        match self {
            ApiError::Off | ApiError::NotFound { .. } => 404,
            ApiError::Unauthorized => 401,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::TooLarge { .. } => 413,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::InvalidField(_) => wire(ErrorCode::InvalidField),
            ApiError::UnknownOperation(_) => wire(ErrorCode::UnknownOperation),
            ApiError::InvalidRoom(_) => wire(ErrorCode::InvalidRoom),
            ApiError::ShuttingDown => wire(ErrorCode::ShuttingDown),
            ApiError::Refused { code, .. } => *code,
            ApiError::NoAnswer(_) => wire(ErrorCode::Unavailable),
        }
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Off | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidField(_)
            | ApiError::UnknownOperation(_)
            | ApiError::InvalidRoom(_) => StatusCode::BAD_REQUEST,
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Refused { code, message } => refused_status(*code, message),
            ApiError::NoAnswer(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The whole answer.
    pub(crate) fn response(&self) -> AdminResponse {
        #[derive(serde::Serialize)]
        struct ErrorBody {
            error: ErrorFields,
        }
        let body = ErrorBody {
            error: ErrorFields::from(self),
        };
        let mut response = json(self.status(), &body);
        let headers = response.headers_mut();
        match self {
            ApiError::MethodNotAllowed { allow, .. } => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::TooLarge { unread: true, .. } => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// An error as an answer carries it, alone (`{"error": {...}}`) or as one
/// result of a broadcast or a batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ErrorFields {
    pub(crate) code: u32,
    pub(crate) message: String,
}

impl From<&ApiError> for ErrorFields {
    fn from(error: &ApiError) -> ErrorFields {
        ErrorFields {
            code: error.code(),
            message: error.to_string(),
        }
    }
}

/// The status of an error the router answered: 422 for a room that keeps
/// no history or presence (106), 503 for a store that cannot be reached
/// or a node shutting down, 504 for a store that did not answer in time
/// (both 110), 400 for the rest (faults of the request).
fn refused_status(code: u32, message: &str) -> StatusCode {
    match ErrorCode::from_code(code) {
        Some(ErrorCode::NotEnabled) => StatusCode::UNPROCESSABLE_ENTITY,
        Some(ErrorCode::ShuttingDown) => StatusCode::SERVICE_UNAVAILABLE,
        Some(ErrorCode::Unavailable) if message == EngineError::Timeout.to_string() => {
            StatusCode::GATEWAY_TIMEOUT
        }
        Some(ErrorCode::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The error a router outcome carries, if it is one.
pub(crate) fn outcome_error(outcome: &Outcome) -> Option<ApiError> {
    match outcome {
        Outcome::Error { code, message } => Some(ApiError::refused(*code, message.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_one_status_and_code_and_the_wire_codes_where_the_wire_has_them() {
        let cases = [
            (ApiError::Off, 404, 404),
            (ApiError::Unauthorized, 401, 401),
            (ApiError::InvalidField("x".into()), 400, 101),
            (ApiError::UnknownOperation("x".into()), 400, 100),
            (ApiError::InvalidRoom("room name is empty".into()), 400, 102),
            (ApiError::ShuttingDown, 503, 105),
            (ApiError::refused(106, "no history".into()), 422, 106),
            (
                ApiError::refused(110, EngineError::Timeout.to_string()),
                504,
                110,
            ),
            (
                ApiError::refused(110, EngineError::Unavailable("down".into()).to_string()),
                503,
                110,
            ),
            (
                ApiError::NoAnswer(std::time::Duration::from_secs(1)),
                504,
                110,
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert_eq!(error.code(), code, "{error}");
        }
    }
}

//! The API's error answer: an [`ErrorCode`] (which fixes the HTTP status),
//! and a message safe to show a client; internal detail goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::wire::{ErrorBody, ErrorCode, ErrorDetail};
use crate::client::ClientError;

/// An API error: stable code, HTTP status, message safe for clients.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// The batch position of the workflow refused (`error.index`).
    pub index: Option<usize>,
}

impl ApiError {
    /// An error answered with its code's status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(code.status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            index: None,
        }
    }

    /// The same error, about the workflow at `index` of a batch.
    pub fn at_index(mut self, index: Option<usize>) -> Self {
        self.index = index;
        self
    }

    /// The same error answered with another status (a forward that could
    /// not relay its answer: 502).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::NotFound, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                index: self.index,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        use ClientError::*;
        let code = match &e {
            InvalidWorkflow(_) => ErrorCode::InvalidWorkflow,
            UnknownHandler(_) => ErrorCode::UnknownHandler,
            UnknownRegion(_) => ErrorCode::UnknownRegion,
            InvalidRequest(_) => ErrorCode::InvalidRequest,
            InvalidToken(_) => ErrorCode::InvalidToken,
            NotFound(_) => ErrorCode::NotFound,
            InvalidState(_) => ErrorCode::InvalidState,
            WriteUnavailable(_) => ErrorCode::WriteUnavailable,
            Unavailable(_) => ErrorCode::RegionUnavailable,
            Internal(_) => ErrorCode::Internal,
            TooManyQueues(_) => ErrorCode::TooManyQueues,
            AlreadyExists(_) => ErrorCode::AlreadyExists,
        };
        if code.status() >= 500 {
            tracing::warn!(code = code.as_str(), error = %e, "request failed");
        }
        let message = match &e {
            Internal(_) => "internal error; see the node's log".to_string(),
            other => other.to_string(),
        };
        ApiError::new(code, message)
    }
}

/// What a handler returns.
pub type ApiResult = Result<Response, ApiError>;

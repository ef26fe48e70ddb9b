//! Request bodies read up to the configured limit (413 `payload_too_large`
//! past it), and the request headers handlers parse.

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::Request;
use axum::http::HeaderMap;

use crate::api::error::ApiError;
use crate::api::wire::{ErrorCode, H_TOKEN};
use crate::model::token::Token;

/// Reads a request body of at most `limit` bytes (refused up front when
/// its declared length is already over), or 413 `payload_too_large`.
pub async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let (parts, body) = req.into_parts();
    read_parts_body(&parts.headers, body, limit).await
}

pub async fn read_parts_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    to_bytes(body, limit).await.map_err(|_| too_large(limit))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("request body exceeds the limit of {limit} bytes (limits.max_body_bytes)"),
    )
}

/// The request's consistency token, if any; a malformed one is refused.
pub fn read_token(h: &HeaderMap) -> Result<Option<Token>, ApiError> {
    match h.get(H_TOKEN) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidToken,
                    "malformed swf-consistency-token header (expected <epoch>-<LSN>, as a write answered)",
                )
            }),
    }
}

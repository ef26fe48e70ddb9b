//! Request bodies read up to the configured limit (413 `payload_too_large`
//! past it), and the request headers handlers parse.

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::Request;
use axum::http::HeaderMap;

use crate::api::error::ApiError;
use crate::api::wire::{ErrorCode, H_TOKEN};
use crate::model::token::{Token, TokenError, TokenKey};

/// Reads a request body of at most `limit` bytes (refused up front when
/// its declared length is already over), or 413 `payload_too_large`.
pub async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let (parts, body) = req.into_parts();
    read_parts_body(&parts.headers, body, limit).await
}

/// A request body (JSON) as `T`, or 400 `invalid_request` naming `what`
/// and, for a value of the wrong shape, where in the body it is.
pub fn parse_request<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let body = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{what} at `{}`: {}", e.path(), e.inner()),
        )
    })?;
    de.end()
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("{what}: {e}")))?;
    Ok(body)
}

/// [`read_body`] under a limit other than `limits.max_body_bytes`; the
/// refusal names `key`, the limit's config key.
pub async fn read_body_under(req: Request, limit: usize, key: &str) -> Result<Bytes, ApiError> {
    let (parts, body) = req.into_parts();
    read_parts_body_under(&parts.headers, body, limit, key).await
}

pub async fn read_parts_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    read_parts_body_under(headers, body, limit, "limits.max_body_bytes").await
}

/// [`read_parts_body`] under the limit of config key `key`.
pub async fn read_parts_body_under(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    key: &str,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit, key));
    }
    to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit, key))
}

fn too_large(limit: usize, key: &str) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("request body exceeds the limit of {limit} bytes ({key})"),
    )
}

/// The request's consistency token, if any, verified with the cluster's
/// key (in memory); a malformed one, or one this cluster did not sign, is
/// refused with 400 `invalid_token` before it can change anything.
pub fn read_token(h: &HeaderMap, key: &TokenKey) -> Result<Option<Token>, ApiError> {
    let Some(v) = h.get(H_TOKEN) else {
        return Ok(None);
    };
    let why = match v.to_str().map(|s| key.verify(s)) {
        Ok(Ok(t)) => return Ok(Some(t)),
        Ok(Err(TokenError::NotIssued)) => {
            "swf-consistency-token was not issued by this cluster (altered, made up, from \
             another cluster, or from before tokens were signed)"
        }
        Ok(Err(TokenError::Malformed)) | Err(_) => {
            "malformed swf-consistency-token header (expected a token as a write answered it, \
             <epoch>-<LSN>.<signature>, unchanged)"
        }
    };
    Err(ApiError::new(ErrorCode::InvalidToken, why))
}

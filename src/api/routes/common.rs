//! Small helpers the handlers share: the client role, run ids, the
//! read-source and token headers of answers, and the answer of a write
//! that moved a run.

use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::state::ApiState;
use crate::api::wire::{Cancelled, ErrorCode, RunState, H_READ_SOURCE, H_TOKEN};
use crate::client::Client;
use crate::model::token::Token;
use crate::router::ReadSource;

/// The node's client role (v1_guard has refused the call without one).
pub fn client(st: &ApiState) -> Result<&Client, ApiError> {
    st.client
        .as_ref()
        .ok_or_else(|| ApiError::new(ErrorCode::ClientRoleDisabled, "client role disabled"))
}

pub fn parse_run_id(s: &str) -> Result<Uuid, ApiError> {
    s.parse().map_err(|_| {
        ApiError::not_found(format!("run `{s}` not found: not a valid run id (a UUID)"))
    })
}

pub fn with_read_source(mut resp: Response, src: ReadSource) -> Response {
    resp.headers_mut().insert(
        HeaderName::from_static(H_READ_SOURCE),
        HeaderValue::from_static(src.as_str()),
    );
    resp
}

/// Adds the `swf-consistency-token` header: `signed` is the token as
/// `TokenKey::sign` wrote it.
pub fn with_token(mut resp: Response, signed: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(signed) {
        resp.headers_mut()
            .insert(HeaderName::from_static(H_TOKEN), v);
    }
    resp
}

/// The answer of a write that moved one run (cancel, retry, pause, resume):
/// `{"run_id", "status", "consistency_token"}` and the token header.
pub fn run_moved(st: &ApiState, run_id: Uuid, status: RunState, token: &Token) -> Response {
    let signed = st.router.token_key().sign(token);
    let body = Cancelled {
        run_id,
        status,
        consistency_token: signed.clone(),
    };
    with_token(Json(body).into_response(), &signed)
}

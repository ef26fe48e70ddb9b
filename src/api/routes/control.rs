//! Run control: `POST /v1/workflows/{run_id}/pause`, `.../resume` and
//! `.../signals/{name}`.

use axum::extract::{Path, Request, State};
use axum::response::IntoResponse;
use axum::Json;

use super::common::{client, parse_run_id, run_moved, with_token};
use crate::api::body::{parse_request, read_body};
use crate::api::error::ApiResult;
use crate::api::state::ApiState;
use crate::api::wire::{RunState, SignalRequest, Signalled};

/// `POST /v1/workflows/{run_id}/pause`.
pub async fn pause(State(st): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    set_paused(st, &id, true).await
}

/// `POST /v1/workflows/{run_id}/resume`.
pub async fn resume(State(st): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    set_paused(st, &id, false).await
}

async fn set_paused(st: ApiState, id: &str, paused: bool) -> ApiResult {
    let run_id = parse_run_id(id)?;
    let token = client(&st)?.set_paused(run_id, paused).await?;
    let status = if paused {
        RunState::Paused
    } else {
        RunState::Running
    };
    Ok(run_moved(&st, run_id, status, &token))
}

/// `POST /v1/workflows/{run_id}/signals/{name}`: `{"payload": any?}` (an
/// empty body sends no payload).
pub async fn signal(
    State(st): State<ApiState>,
    Path((id, name)): Path<(String, String)>,
    req: Request,
) -> ApiResult {
    let run_id = parse_run_id(&id)?;
    let c = client(&st)?;
    let bytes = read_body(req, st.max_body_bytes).await?;
    let body: SignalRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        SignalRequest::default()
    } else {
        parse_request(&bytes, "signal request")?
    };
    let token = c.signal(run_id, &name, body.payload.as_ref()).await?;
    let signed = st.router.token_key().sign(&token);
    let body = Signalled {
        run_id,
        signal: name,
        consistency_token: signed.clone(),
    };
    Ok(with_token(Json(body).into_response(), &signed))
}

//! Run control: `POST /v1/workflows/{run_id}/pause`, `.../resume` and
//! `.../signals/{name}`.

use axum::extract::{Path, Request, State};
use axum::response::IntoResponse;
use axum::Json;

use super::common::{client, parse_run_id, with_token};
use crate::api::body::read_body;
use crate::api::error::{ApiError, ApiResult};
use crate::api::state::ApiState;
use crate::api::wire::{ErrorCode, PausedRun, RunState, SignalRequest, Signalled};

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
    let signed = st.router.token_key().sign(&token);
    let body = PausedRun {
        run_id,
        status: if paused {
            RunState::Paused
        } else {
            RunState::Running
        },
        consistency_token: signed.clone(),
    };
    Ok(with_token(Json(body).into_response(), &signed))
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
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let body = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("signal request at `{}`: {}", e.path(), e.inner()),
            )
        })?;
        de.end().map_err(|e| {
            ApiError::new(ErrorCode::InvalidRequest, format!("signal request: {e}"))
        })?;
        body
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

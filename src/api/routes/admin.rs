//! `POST /v1/admin/drills`: runs a drill from this node (one at a time) and
//! answers with its report.

use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::Json;

use crate::api::body::read_body;
use crate::api::error::{ApiError, ApiResult};
use crate::api::state::ApiState;
use crate::api::wire::{DrillRequest, ErrorCode};
use crate::drill::DrillError;

pub async fn drill(State(st): State<ApiState>, req: Request) -> ApiResult {
    let authorization = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .cloned();
    let bytes = read_body(req, st.max_body_bytes).await?;
    let body: DrillRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("drill request: {e}")))?;
    let Ok(_one) = st.drill_running.try_lock() else {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            "another drill is running on this node",
        ));
    };
    let report = crate::drill::run(
        &st.router,
        st.control.as_deref(),
        &body,
        authorization,
        &st.peer_tls,
        st.heartbeat_ms,
    )
    .await;
    match report {
        Ok(report) => Ok(Json(report).into_response()),
        Err(DrillError::UnknownRegion(r)) => Err(ApiError::new(
            ErrorCode::UnknownRegion,
            format!("unknown region `{r}`"),
        )),
        Err(DrillError::Refused(m)) => Err(ApiError::new(ErrorCode::InvalidState, m)),
        Err(e @ DrillError::Failed(_)) => {
            tracing::error!(error = %e, "drill failed");
            Err(ApiError::new(ErrorCode::Internal, e.to_string()))
        }
    }
}

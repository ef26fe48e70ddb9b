//! The drill routes (admin scope): `POST /v1/admin/drills` runs a drill from
//! this node and answers with its report; `GET /v1/admin/drills` and
//! `GET /v1/admin/drills/{id}` read the drill journal;
//! `POST /v1/admin/drills/recover` recovers from an interrupted drill. A
//! drill or recovery that another one excludes answers 409
//! `drill_in_progress`.

use axum::extract::{Path, Request, State};
use axum::response::IntoResponse;
use axum::Json;
use uuid::Uuid;

use crate::api::body::read_body;
use crate::api::error::{ApiError, ApiResult};
use crate::api::state::ApiState;
use crate::api::wire::{DrillList, DrillRequest, ErrorCode};
use crate::drill::{DrillError, Peers, Runner};

/// `POST /v1/admin/drills`.
pub async fn drill(State(st): State<ApiState>, req: Request) -> ApiResult {
    let authorization = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .cloned();
    let bytes = read_body(req, st.max_body_bytes).await?;
    let body: DrillRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("drill request: {e}")))?;
    let _one = one_at_a_time(&st)?;
    let me = Runner {
        node_id: st.info.node_id.clone(),
        node_url: st.info.public_url.clone(),
    };
    let report = crate::drill::run(
        &st.router,
        st.control.as_deref(),
        &body,
        authorization,
        &st.peer_tls,
        st.heartbeat_ms,
        &me,
    )
    .await;
    match report {
        Ok(report) => Ok(Json(report).into_response()),
        Err(e) => Err(drill_error(e)),
    }
}

/// `GET /v1/admin/drills`: the journal, newest first.
pub async fn list(State(st): State<ApiState>) -> ApiResult {
    let drills = crate::drill::list(&st.router).await;
    Ok(Json(DrillList { drills }).into_response())
}

/// `GET /v1/admin/drills/{id}`.
pub async fn one(State(st): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let id: Uuid = id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("`{id}` is not a drill id (a UUID)"),
        )
    })?;
    match crate::drill::get(&st.router, id).await {
        Some(d) => Ok(Json(d).into_response()),
        None => Err(ApiError::not_found(format!("drill {id} not found"))),
    }
}

/// `POST /v1/admin/drills/recover`: leaves exactly one writable primary
/// after an interrupted drill, and reports what it found and did.
pub async fn recover(State(st): State<ApiState>, req: Request) -> ApiResult {
    let authorization = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .cloned();
    let _one = one_at_a_time(&st)?;
    let peers = Peers {
        own_url: st.info.public_url.clone(),
        authorization,
        tls: st.peer_tls.clone(),
    };
    match crate::drill::recover(&st.router, st.control.as_deref(), &peers).await {
        Ok(report) => Ok(Json(report).into_response()),
        Err(e) => Err(drill_error(e)),
    }
}

/// One drill or recovery at a time on this node.
fn one_at_a_time(st: &ApiState) -> Result<tokio::sync::MutexGuard<'_, ()>, ApiError> {
    st.drill_running.try_lock().map_err(|_| {
        ApiError::new(
            ErrorCode::DrillInProgress,
            "another drill or recovery is running on this node",
        )
    })
}

fn drill_error(e: DrillError) -> ApiError {
    match e {
        DrillError::UnknownRegion(r) => {
            ApiError::new(ErrorCode::UnknownRegion, format!("unknown region `{r}`"))
        }
        DrillError::Refused(m) => ApiError::new(ErrorCode::InvalidState, m),
        DrillError::InProgress(m) => ApiError::new(ErrorCode::DrillInProgress, m),
        e @ DrillError::Failed(_) => {
            tracing::error!(error = %e, "drill failed");
            ApiError::new(ErrorCode::Internal, e.to_string())
        }
    }
}

//! Queues: `GET /v1/queues` (read scope) lists every queue with its depth,
//! in-flight and delayed tasks and whether it is paused;
//! `POST /v1/queues/{name}/pause` and `.../resume` (admin scope) stop and
//! restart claims of a queue's tasks cluster-wide.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Json;

use super::common::{client, with_read_source};
use crate::api::body::read_token;
use crate::api::error::ApiResult;
use crate::api::state::ApiState;
use crate::api::wire::{QueueInfo, QueueList, QueuePaused};

/// `GET /v1/queues`.
pub async fn list(State(st): State<ApiState>, h: HeaderMap) -> ApiResult {
    let token = read_token(&h, st.router.token_key())?;
    let (rows, src) = client(&st)?.queues(token.as_ref()).await?;
    let queues = rows
        .into_iter()
        .map(|r| QueueInfo {
            name: r.name,
            depth: r.depth,
            in_flight: r.in_flight,
            delayed: r.delayed,
            parked: r.parked,
            oldest_age_ms: r.oldest_age_ms,
            paused: r.paused,
        })
        .collect();
    Ok(with_read_source(
        Json(QueueList { queues }).into_response(),
        src,
    ))
}

/// `POST /v1/queues/{name}/pause`.
pub async fn pause(st: State<ApiState>, name: Path<String>) -> ApiResult {
    set_paused(st, name, true).await
}

/// `POST /v1/queues/{name}/resume`.
pub async fn resume(st: State<ApiState>, name: Path<String>) -> ApiResult {
    set_paused(st, name, false).await
}

async fn set_paused(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    paused: bool,
) -> ApiResult {
    let was_paused = client(&st)?.set_queue_paused(&name, paused).await?;
    Ok(Json(QueuePaused {
        name,
        paused,
        was_paused,
    })
    .into_response())
}

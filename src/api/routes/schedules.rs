//! Cron schedules: `POST /v1/schedules` (submit scope; 201, or 409
//! `already_exists`), `GET /v1/schedules` and `GET /v1/schedules/{name}`
//! (read), `DELETE /v1/schedules/{name}` and `POST
//! /v1/schedules/{name}/pause|resume` (submit).

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

use super::common::client;
use crate::api::body::{parse_request, read_body};
use crate::api::error::ApiResult;
use crate::api::state::ApiState;
use crate::api::wire::{ScheduleList, ScheduleRequest};

/// `POST /v1/schedules`.
pub async fn create(State(st): State<ApiState>, req: Request) -> ApiResult {
    let c = client(&st)?;
    let bytes = read_body(req, st.max_body_bytes).await?;
    let body: ScheduleRequest = parse_request(&bytes, "schedule")?;
    let info = c.create_schedule(&body).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// `GET /v1/schedules`.
pub async fn list(State(st): State<ApiState>) -> ApiResult {
    let schedules = client(&st)?.schedules().await?;
    Ok(Json(ScheduleList { schedules }).into_response())
}

/// `GET /v1/schedules/{name}`.
pub async fn one(State(st): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(client(&st)?.schedule(&name).await?).into_response())
}

/// `DELETE /v1/schedules/{name}`: 204.
pub async fn delete(State(st): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    client(&st)?.delete_schedule(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/schedules/{name}/pause`.
pub async fn pause(State(st): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(client(&st)?.set_schedule_paused(&name, true).await?).into_response())
}

/// `POST /v1/schedules/{name}/resume`.
pub async fn resume(State(st): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(client(&st)?.set_schedule_paused(&name, false).await?).into_response())
}

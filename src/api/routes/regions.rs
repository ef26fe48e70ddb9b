//! `GET /v1/regions`: the cluster view of [`crate::client::cluster::regions`].

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;

use super::common::with_read_source;
use crate::api::error::ApiResult;
use crate::api::state::ApiState;
use crate::client::ClientError;
use crate::router::ReadSource;

pub async fn regions(State(st): State<ApiState>) -> ApiResult {
    let view = crate::client::cluster::regions(&st.router, st.heartbeat_ms)
        .await
        .map_err(|e| ClientError::Unavailable(e.to_string()))?;
    Ok(with_read_source(
        Json(view).into_response(),
        ReadSource::Primary,
    ))
}

//! `/v1/workflows`: submit, status, lineage, list and cancel.

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use super::common::{client, parse_run_id, with_read_source, with_token};
use crate::api::body::{read_body, read_token};
use crate::api::error::{ApiError, ApiResult};
use crate::api::state::ApiState;
use crate::api::wire::{
    Cancelled, ErrorCode, ListQuery, RunList, RunState, RunSummary, Submitted, WorkflowSpec,
};

pub async fn submit(State(st): State<ApiState>, req: Request) -> ApiResult {
    let c = client(&st)?;
    let bytes = read_body(req, st.max_body_bytes).await?;
    // Parsed once, straight into the spec; serde says whether the bytes
    // were not JSON or JSON of the wrong shape.
    let spec: WorkflowSpec = serde_json::from_slice(&bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::new(
                ErrorCode::InvalidWorkflow,
                format!("workflow does not match the schema: {e}"),
            ),
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                ErrorCode::InvalidJson,
                format!("request body is not valid JSON: {e}"),
            ),
        }
    })?;
    let out = c.submit(spec).await?;
    let (code, status) = if out.created {
        (StatusCode::CREATED, RunState::Running)
    } else {
        // An idempotent retry: report the run as it is now.
        let (doc, _) = c.status(out.run_id, Some(&out.token)).await?;
        let now = doc["status"].as_str().and_then(RunState::parse);
        (StatusCode::OK, now.unwrap_or(RunState::Running))
    };
    let signed = st.router.token_key().sign(&out.token);
    let body = Submitted {
        run_id: out.run_id,
        status,
        consistency_token: signed.clone(),
    };
    Ok(with_token((code, Json(body)).into_response(), &signed))
}

pub async fn status(State(st): State<ApiState>, Path(id): Path<String>, h: HeaderMap) -> ApiResult {
    let run_id = parse_run_id(&id)?;
    let token = read_token(&h, st.router.token_key())?;
    // The document is SQL's JSON ([`crate::api::wire::RunStatus`]), passed through.
    let (doc, src) = client(&st)?.status(run_id, token.as_ref()).await?;
    Ok(with_read_source(Json(&*doc).into_response(), src))
}

pub async fn lineage(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> ApiResult {
    let run_id = parse_run_id(&id)?;
    let token = read_token(&h, st.router.token_key())?;
    // The document is SQL's JSON ([`crate::api::wire::RunLineage`]), passed through.
    let (doc, src) = client(&st)?.lineage(run_id, token.as_ref()).await?;
    Ok(with_read_source(Json(&*doc).into_response(), src))
}

pub async fn list(
    State(st): State<ApiState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    h: HeaderMap,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    let limit = match q.limit.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<i64>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("limit must be an integer between 1 and 1000 (got `{s}`)"),
            )
        })?),
    };
    let token = read_token(&h, st.router.token_key())?;
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    let after = q.after.as_deref().filter(|s| !s.is_empty());
    let (page, src) = client(&st)?
        .list(status, limit, after, token.as_ref())
        .await?;
    let runs = page
        .runs
        .into_iter()
        .map(|r| {
            let status = RunState::parse(&r.status).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Internal,
                    format!("run {} has status `{}`", r.run_id, r.status),
                )
            })?;
            Ok(RunSummary {
                run_id: r.run_id,
                goal: r.goal,
                status,
                created_at: r.created_at,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let body = RunList {
        runs,
        next: page.next,
    };
    Ok(with_read_source(Json(body).into_response(), src))
}

pub async fn cancel(State(st): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let run_id = parse_run_id(&id)?;
    let token = client(&st)?.cancel(run_id).await?;
    let signed = st.router.token_key().sign(&token);
    let body = Cancelled {
        run_id,
        status: RunState::Cancelled,
        consistency_token: signed.clone(),
    };
    Ok(with_token(Json(body).into_response(), &signed))
}

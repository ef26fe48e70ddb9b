//! `/v1/workflows`: submit, batch submit, status, lineage, list, cancel and bulk cancel.

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::common::{client, parse_run_id, run_moved, with_read_source, with_token};
use crate::api::body::{parse_request, read_body, read_body_under, read_token};
use crate::api::error::{ApiError, ApiResult};
use crate::api::state::ApiState;
use crate::api::wire::{
    BatchRun, BatchSubmitted, BulkCancelRequest, BulkCancelled, ErrorCode, ListQuery, RunList,
    RunState, RunSummary, Submitted, WorkflowSpec,
};

/// A workflow's JSON as its spec. Parsed once, straight into the spec;
/// serde says whether the bytes were not JSON or JSON of the wrong shape,
/// and where in the workflow a value of the wrong shape is.
fn parse_workflow(bytes: &[u8]) -> Result<WorkflowSpec, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let (path, e) = match serde_path_to_error::deserialize(&mut de) {
        Ok(spec) => match de.end() {
            Ok(()) => return Ok(spec),
            Err(e) => (String::new(), e),
        },
        Err(e) => (e.path().to_string(), e.into_inner()),
    };
    use serde_json::error::Category;
    Err(match e.classify() {
        Category::Data if path.is_empty() || path == "." => ApiError::new(
            ErrorCode::InvalidWorkflow,
            format!("workflow does not match the schema: {e}"),
        ),
        Category::Data => ApiError::new(
            ErrorCode::InvalidWorkflow,
            format!("workflow does not match the schema at `{path}`: {e}"),
        ),
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            ErrorCode::InvalidJson,
            format!("request body is not valid JSON: {e}"),
        ),
    })
}

pub async fn submit(State(st): State<ApiState>, req: Request) -> ApiResult {
    let c = client(&st)?;
    let bytes = read_body(req, st.max_body_bytes).await?;
    let spec = parse_workflow(&bytes)?;
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

/// A batch body as first read: each workflow kept as its text, so its size
/// and its schema errors are told with its index.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch<'a> {
    #[serde(borrow)]
    workflows: Vec<&'a RawValue>,
}

/// `POST /v1/workflows/batch`: at most `limits.max_batch` workflows, each
/// held to what a single submit accepts (`limits.max_body_bytes` included),
/// stored in one transaction or refused whole with the index of the first
/// bad one.
pub async fn submit_batch(State(st): State<ApiState>, req: Request) -> ApiResult {
    let c = client(&st)?;
    let bytes =
        read_body_under(req, st.max_batch_body_bytes, "limits.max_batch_body_bytes").await?;
    let raw: RawBatch = serde_json::from_slice(&bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::new(
                ErrorCode::InvalidRequest,
                format!("a batch is {{\"workflows\": [workflow, ...]}}: {e}"),
            ),
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                ErrorCode::InvalidJson,
                format!("request body is not valid JSON: {e}"),
            ),
        }
    })?;
    if raw.workflows.len() > st.max_batch {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "the batch has {} workflows; the limit is {} (limits.max_batch)",
                raw.workflows.len(),
                st.max_batch
            ),
        ));
    }
    let specs = raw
        .workflows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let text = w.get();
            if text.len() > st.max_body_bytes {
                return Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "the workflow is {} bytes, past the limit of {} bytes of one workflow \
                         (limits.max_body_bytes)",
                        text.len(),
                        st.max_body_bytes
                    ),
                )
                .at_index(Some(i)));
            }
            parse_workflow(text.as_bytes()).map_err(|e| e.at_index(Some(i)))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let out = c
        .submit_batch(specs)
        .await
        .map_err(|e| ApiError::from(e.error).at_index(e.index))?;
    let signed = st.router.token_key().sign(&out.token);
    let body = BatchSubmitted {
        runs: out
            .runs
            .into_iter()
            .map(|r| BatchRun {
                run_id: r.run_id,
                status: RunState::parse(&r.status).unwrap_or(RunState::Running),
            })
            .collect(),
        consistency_token: signed.clone(),
    };
    Ok(with_token(
        (StatusCode::CREATED, Json(body)).into_response(),
        &signed,
    ))
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

/// `POST /v1/workflows/{run_id}/retry`.
pub async fn retry(State(st): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let run_id = parse_run_id(&id)?;
    let token = client(&st)?.retry(run_id).await?;
    Ok(run_moved(&st, run_id, RunState::Running, &token))
}

/// `POST /v1/workflows/cancel`: bulk cancel by filter.
pub async fn cancel_many(State(st): State<ApiState>, req: Request) -> ApiResult {
    let c = client(&st)?;
    let bytes = read_body(req, st.max_body_bytes).await?;
    let body: BulkCancelRequest = parse_request(&bytes, "bulk cancel request")?;
    let (cancelled, token) = c.cancel_many(&body).await?;
    let signed = st.router.token_key().sign(&token);
    let body = BulkCancelled {
        cancelled,
        consistency_token: signed.clone(),
    };
    Ok(with_token(Json(body).into_response(), &signed))
}

pub async fn cancel(State(st): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let run_id = parse_run_id(&id)?;
    let token = client(&st)?.cancel(run_id).await?;
    Ok(run_moved(&st, run_id, RunState::Cancelled, &token))
}

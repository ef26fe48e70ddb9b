//! HTTP API (axum on hyper): the routes, headers and error bodies of
//! DESIGN section 6.
//!
//! Every `/v1` response carries `swf-served-by` and `swf-region`; reads add
//! `swf-read-source`, writes `swf-consistency-token`. Errors are
//! `{"error": {"code", "message"}}`. Request bodies are read up to the
//! configured limit and refused with 413 past it. Worker nodes answer `/v1`
//! with 403 `client_role_disabled`.

pub mod auth;
pub mod client;
pub mod tls;
pub mod wire;

use std::sync::Arc;
use std::time::Instant;

use axum::body::{to_bytes, Body};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::client::{Client, ClientError};
use crate::executor::Executor;
use crate::model::token::Token;
use crate::model::workflow::WorkflowSpec;
use crate::router::{ReadSource, Router};
use crate::store::Store;

pub use wire::{H_FORWARDED_BY, H_READ_SOURCE, H_REGION, H_SERVED_BY, H_TOKEN};

/// Facts about the serving node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node_id: String,
    pub node_type: String,
    pub roles: Vec<String>,
    pub region: String,
    pub public_url: String,
    pub version: String,
}

/// Shared state of the API.
#[derive(Clone)]
pub struct ApiState {
    pub info: Arc<NodeInfo>,
    pub client: Option<Client>,
    pub executor: Option<Arc<Executor>>,
    pub router: Arc<Router>,
    pub max_body_bytes: usize,
    pub forwarder: Forwarder,
    pub heartbeat_ms: u64,
    /// Control of the databases for drills (`swf dev`), if any.
    pub control: Option<Arc<dyn crate::drill::ClusterControl>>,
    /// Held while a drill runs on this node (one at a time).
    pub drill_running: Arc<tokio::sync::Mutex<()>>,
    pub auth: Arc<crate::api::auth::Auth>,
    /// Permits for requests served at once (limits.max_concurrent_requests).
    pub inflight: Arc<tokio::sync::Semaphore>,
    pub request_timeout: std::time::Duration,
    /// What this node trusts and presents when it calls other nodes.
    pub peer_tls: crate::api::tls::ClientTls,
}

/// Forwards region-pinned calls to another region's node over a pooled
/// HTTP client (hyper underneath; rustls for https peers).
#[derive(Clone)]
pub struct Forwarder {
    http: reqwest::Client,
}

impl Forwarder {
    pub fn new(timeout: std::time::Duration, tls: &crate::api::tls::ClientTls) -> Forwarder {
        let http = tls
            .builder()
            .timeout(timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build()
            .expect("HTTP client builds");
        Forwarder { http }
    }
}

/// An API error: stable code, HTTP status, message safe for clients.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        use ClientError::*;
        let (status, code) = match &e {
            InvalidWorkflow(_) => (StatusCode::BAD_REQUEST, "invalid_workflow"),
            UnknownHandler(_) => (StatusCode::BAD_REQUEST, "unknown_handler"),
            UnknownRegion(_) => (StatusCode::BAD_REQUEST, "unknown_region"),
            InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            InvalidState(_) => (StatusCode::CONFLICT, "invalid_state"),
            WriteUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "write_unavailable"),
            Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "region_unavailable"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::warn!(code, error = %e, "request failed");
        }
        let message = match &e {
            Internal(_) => "internal error; see the node's log".to_string(),
            other => other.to_string(),
        };
        ApiError::new(status, code, message)
    }
}

type ApiResult = Result<Response, ApiError>;

/// Builds the axum router for one node.
pub fn router(state: ApiState) -> axum::Router {
    let v1 = axum::Router::new()
        .route("/v1/workflows", post(submit).get(list))
        .route("/v1/workflows/{run_id}", get(status))
        .route("/v1/workflows/{run_id}/lineage", get(lineage))
        .route("/v1/workflows/{run_id}/cancel", post(cancel))
        .route("/v1/regions", get(regions))
        .route("/v1/admin/drills", post(drill))
        .route_layer(middleware::from_fn_with_state(state.clone(), v1_guard));
    axum::Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/health/info", get(info))
        .route("/metrics", get(metrics_text))
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// Adds the node headers to every /v1 response, records request latency.
async fn observe(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().to_string();
    let is_v1 = req.uri().path().starts_with("/v1");
    // Every line logged while serving the request carries these fields.
    let span = tracing::info_span!("request",
        node_id = %st.info.node_id, region = %st.info.region,
        method = %method, route = %route, run_id = tracing::field::Empty);
    if let Some(id) = req
        .uri()
        .path()
        .strip_prefix("/v1/workflows/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|id| Uuid::parse_str(id).ok())
    {
        span.record("run_id", tracing::field::display(id));
    }
    let start = Instant::now();
    let mut resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = resp.status().as_u16(),
            ms = start.elapsed().as_secs_f64() * 1000.0,
            "request served"
        )
    });
    metrics::histogram!("swf_http_request_duration_seconds",
        "route" => route, "method" => method, "status" => resp.status().as_u16().to_string())
    .record(start.elapsed().as_secs_f64());
    // A forwarded answer keeps the serving node's headers.
    if is_v1 && !resp.headers().contains_key(H_SERVED_BY) {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&st.info.node_id) {
            h.insert(HeaderName::from_static(H_SERVED_BY), v);
        }
        if let Ok(v) = HeaderValue::from_str(&st.info.region) {
            h.insert(HeaderName::from_static(H_REGION), v);
        }
    }
    resp
}

/// Sheds load past `limits.max_concurrent_requests`, authenticates, and
/// bounds how long a request may take (drills excepted).
async fn guard(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let Ok(_permit) = st.inflight.clone().try_acquire_owned() else {
        let mut r = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in progress (limits.max_concurrent_requests); retry shortly",
        )
        .into_response();
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from_static("1"),
        );
        return r;
    };
    let path = req.uri().path().to_string();
    if let Some(scope) = st.auth.required(req.method().as_str(), &path) {
        let header = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        use crate::api::auth::Denied;
        match st.auth.check(header, scope) {
            Ok(_) => {}
            Err(Denied::Unauthorized(m)) => {
                let mut r =
                    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m).into_response();
                r.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                );
                return r;
            }
            Err(Denied::Forbidden(m)) => {
                return ApiError::new(StatusCode::FORBIDDEN, "forbidden", m).into_response()
            }
            Err(Denied::RateLimited(m)) => {
                let mut r =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", m).into_response();
                r.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    HeaderValue::from_static("1"),
                );
                return r;
            }
        }
    }
    if path.starts_with("/v1/admin") {
        return next.run(req).await;
    }
    match tokio::time::timeout(st.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "request_timeout",
            format!(
                "the request took longer than {} ms (limits.request_timeout_ms)",
                st.request_timeout.as_millis()
            ),
        )
        .into_response(),
    }
}

/// Refuses /v1 on nodes without the client role and handles `swf-region`.
async fn v1_guard(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    if st.client.is_none() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "client_role_disabled",
            format!(
                "node {} is a {} node: its client role is disabled (enable_client = false)",
                st.info.node_id, st.info.node_type
            ),
        )
        .into_response();
    }
    if let Some(want) = req.headers().get(H_REGION) {
        let want = want.to_str().unwrap_or("").to_string();
        if want != st.info.region {
            return match forward(&st, &want, req).await {
                Ok(r) => r,
                Err(e) => e.into_response(),
            };
        }
    }
    next.run(req).await
}

/// Serves a call pinned to region `want` by forwarding it to a healthy
/// client node there, once.
async fn forward(st: &ApiState, want: &str, req: Request) -> ApiResult {
    if let Some(from) = req.headers().get(H_FORWARDED_BY) {
        return Err(ApiError::new(
            StatusCode::LOOP_DETECTED,
            "forwarding_loop",
            format!(
                "call pinned to region `{want}` was already forwarded (by {}) and reached region {}; refusing to forward it again",
                from.to_str().unwrap_or("?"),
                st.info.region
            ),
        ));
    }
    if !st.router.region_names().iter().any(|r| r == want) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_region",
            format!("unknown region `{want}` in header swf-region"),
        ));
    }
    let unavailable = |why: String| {
        metrics::counter!("swf_forwarded_total", "target" => want.to_string(), "result" => "unavailable")
            .increment(1);
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "region_unavailable",
            format!("region `{want}` has no reachable client node: {why}"),
        )
    };
    let target = match peer_url(st, want).await {
        Some(u) => u,
        None => {
            return Err(unavailable(
                "no healthy client node in the heartbeat table".into(),
            ))
        }
    };
    let (parts, body) = req.into_parts();
    let bytes = read_parts_body(&parts.headers, body, st.max_body_bytes).await?;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{path}", target.trim_end_matches('/'));
    let mut out = st.forwarder.http.request(parts.method.clone(), &url);
    for (name, value) in &parts.headers {
        if !is_hop_header(name.as_str()) {
            out = out.header(name, value);
        }
    }
    out = out.header(H_FORWARDED_BY, &st.info.node_id).body(bytes);
    let resp = out.send().await.map_err(|e| {
        unavailable(format!(
            "forward to {target}: {}",
            crate::api::tls::error_chain(&e)
        ))
    })?;
    let status = resp.status();
    let mut builder = Response::builder().status(status.as_u16());
    for (name, value) in resp.headers() {
        if !is_hop_header(name.as_str()) {
            builder = builder.header(name, value);
        }
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| unavailable(format!("read the answer of {target}: {e}")))?;
    metrics::counter!("swf_forwarded_total", "target" => want.to_string(),
        "result" => if status.is_server_error() { "error" } else { "ok" })
    .increment(1);
    builder
        .body(Body::from(body))
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "internal", e.to_string()))
}

fn is_hop_header(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "upgrade"
            | "proxy-connection"
            | "te"
            | "trailer"
    )
}

/// The API URL of a client node of `region`: the regions file's `api_url`,
/// else a healthy client node from the heartbeat table.
async fn peer_url(st: &ApiState, region: &str) -> Option<String> {
    if let Some(u) = st
        .router
        .regions()
        .iter()
        .find(|r| r.name == region)
        .and_then(|r| r.api_url.clone())
    {
        return Some(u);
    }
    let nodes = st.router.local_store().nodes().await.ok()?;
    nodes
        .into_iter()
        .filter(|n| n.region == region && n.is_client() && n.is_healthy(st.heartbeat_ms))
        .find_map(|n| n.api_url)
}

fn client(st: &ApiState) -> Result<&Client, ApiError> {
    st.client.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "client_role_disabled",
            "client role disabled",
        )
    })
}

fn parse_run_id(s: &str) -> Result<Uuid, ApiError> {
    s.parse().map_err(|_| {
        ApiError::not_found(format!("run `{s}` not found: not a valid run id (a UUID)"))
    })
}

fn read_token(h: &HeaderMap) -> Result<Option<Token>, ApiError> {
    match h.get(H_TOKEN) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "malformed swf-consistency-token header",
                )
            }),
    }
}

fn with_read_source(mut resp: Response, src: ReadSource) -> Response {
    resp.headers_mut().insert(
        HeaderName::from_static(H_READ_SOURCE),
        HeaderValue::from_static(src.as_str()),
    );
    resp
}

fn with_token(mut resp: Response, token: &Token) -> Response {
    if let Ok(v) = HeaderValue::from_str(&token.to_string()) {
        resp.headers_mut()
            .insert(HeaderName::from_static(H_TOKEN), v);
    }
    resp
}

async fn submit(State(st): State<ApiState>, req: Request) -> ApiResult {
    let c = client(&st)?;
    let bytes = read_body(req, st.max_body_bytes).await?;
    // Parsed once, straight into the spec; serde says whether the bytes
    // were not JSON or JSON of the wrong shape.
    let spec: WorkflowSpec = serde_json::from_slice(&bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_workflow",
                format!("workflow does not match the schema: {e}"),
            ),
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("request body is not valid JSON: {e}"),
            ),
        }
    })?;
    let out = c.submit(spec).await?;
    let (code, status) = if out.created {
        (StatusCode::CREATED, "running".to_string())
    } else {
        // An idempotent retry: report the run as it is now.
        let (doc, _) = c.status(out.run_id, Some(&out.token)).await?;
        (
            StatusCode::OK,
            doc["status"].as_str().unwrap_or("running").to_string(),
        )
    };
    let body =
        json!({"run_id": out.run_id, "status": status, "consistency_token": out.token.to_string()});
    Ok(with_token((code, Json(body)).into_response(), &out.token))
}

/// Reads a request body of at most `limit` bytes (refused up front when
/// its declared length is already over), or 413 `payload_too_large`.
async fn read_body(req: Request, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    let (parts, body) = req.into_parts();
    read_parts_body(&parts.headers, body, limit).await
}

async fn read_parts_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    to_bytes(body, limit).await.map_err(|_| too_large(limit))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request body exceeds the limit of {limit} bytes (limits.max_body_bytes)"),
    )
}

async fn status(State(st): State<ApiState>, Path(id): Path<String>, h: HeaderMap) -> ApiResult {
    let run_id = parse_run_id(&id)?;
    let token = read_token(&h)?;
    let (doc, src) = client(&st)?.status(run_id, token.as_ref()).await?;
    Ok(with_read_source(Json(&*doc).into_response(), src))
}

async fn lineage(State(st): State<ApiState>, Path(id): Path<String>, h: HeaderMap) -> ApiResult {
    let run_id = parse_run_id(&id)?;
    let token = read_token(&h)?;
    let (doc, src) = client(&st)?.lineage(run_id, token.as_ref()).await?;
    Ok(with_read_source(Json(&*doc).into_response(), src))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

async fn list(
    State(st): State<ApiState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    h: HeaderMap,
) -> ApiResult {
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()))?;
    let limit = match q.limit.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<i64>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("limit must be an integer between 1 and 1000 (got `{s}`)"),
            )
        })?),
    };
    let token = read_token(&h)?;
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    let after = q.after.as_deref().filter(|s| !s.is_empty());
    let (page, src) = client(&st)?
        .list(status, limit, after, token.as_ref())
        .await?;
    let body = json!({"runs": page.runs, "next": page.next});
    Ok(with_read_source(Json(body).into_response(), src))
}

async fn cancel(State(st): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let run_id = parse_run_id(&id)?;
    let token = client(&st)?.cancel(run_id).await?;
    let body =
        json!({"run_id": run_id, "status": "cancelled", "consistency_token": token.to_string()});
    Ok(with_token(Json(body).into_response(), &token))
}

async fn regions(State(st): State<ApiState>) -> ApiResult {
    let primary = st.router.write_store();
    let unavailable = |e: crate::store::StoreError| ClientError::Unavailable(e.to_string());
    let nodes = st.router.local_store().nodes().await.map_err(unavailable)?;
    let (epoch, _) = primary.role().await.map_err(unavailable)?;
    let lags: std::collections::HashMap<String, i64> = primary
        .replication_lags()
        .await
        .unwrap_or_default()
        .into_iter()
        .collect();
    let write_region = st.router.write_region();
    let local = st.router.local_state();
    let regions: Vec<Value> = st
        .router
        .region_names()
        .iter()
        .map(|r| {
            let ns: Vec<Value> = nodes
                .iter()
                .filter(|n| &n.region == r)
                .map(|n| {
                    json!({"node_id": n.node_id, "node_type": n.node_type, "api_url": n.api_url,
                           "last_heartbeat_at": n.last_heartbeat_at,
                           "healthy": n.is_healthy(st.heartbeat_ms)})
                })
                .collect();
            let primary_here = *r == write_region;
            let lag = if primary_here {
                0
            } else if *r == st.info.region {
                local.lag_ms as i64
            } else {
                lags.get(r).copied().unwrap_or(0)
            };
            json!({"name": r, "role": if primary_here { "primary" } else { "replica" },
                   "lag_ms": lag, "nodes": ns})
        })
        .collect();
    let body = json!({"write_region": write_region, "epoch": epoch, "regions": regions});
    Ok(with_read_source(
        Json(body).into_response(),
        ReadSource::Primary,
    ))
}

/// Runs a drill from this node and answers with its report (one drill at a time).
async fn drill(State(st): State<ApiState>, req: Request) -> ApiResult {
    let authorization = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .cloned();
    let bytes = read_body(req, st.max_body_bytes).await?;
    let body: crate::api::wire::DrillRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("drill request: {e}"),
        )
    })?;
    let Ok(_one) = st.drill_running.try_lock() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            "another drill is running on this node",
        ));
    };
    use crate::drill::DrillError;
    match crate::drill::run(
        &st.router,
        st.control.as_deref(),
        &body,
        authorization,
        &st.peer_tls,
        st.heartbeat_ms,
    )
    .await
    {
        Ok(report) => Ok(Json(report).into_response()),
        Err(DrillError::UnknownRegion(r)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_region",
            format!("unknown region `{r}`"),
        )),
        Err(DrillError::Refused(m)) => Err(ApiError::new(StatusCode::CONFLICT, "invalid_state", m)),
        Err(e @ DrillError::Failed(_)) => {
            tracing::error!(error = %e, "drill failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string(),
            ))
        }
    }
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(st): State<ApiState>) -> Response {
    let store = st.router.local_store();
    match store.schema_compat().await {
        Ok(crate::store::SchemaCompat::Current(v)) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "schema_version": v})),
        )
            .into_response(),
        Ok(c) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": c.problem()})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": e.to_string()})),
        )
            .into_response(),
    }
}

async fn info(State(st): State<ApiState>) -> Json<Value> {
    let pools = st.executor.as_ref().map(|e| e.status()).unwrap_or_default();
    let write_reachable = st.router.write_store().ping().await.is_ok();
    let local = st.router.local_state();
    Json(json!({
        "node_id": st.info.node_id,
        "node_type": st.info.node_type,
        "roles": st.info.roles,
        "region": st.info.region,
        "write_region": st.router.write_region(),
        "epoch": st.router.epoch(),
        "worker_pools": pools,
        "database": {
            "local": {"role": if local.is_primary { "primary" } else { "replica" },
                      "lag_ms": local.lag_ms, "healthy": local.healthy},
            "write": {"region": st.router.write_region(), "reachable": write_reachable},
        },
        "schema_version": Store::known_schema_version(),
        "version": st.info.version,
    }))
}

async fn metrics_text(State(st): State<ApiState>) -> Response {
    let store = st.router.local_store();
    if let Ok(depths) = store.queue_depths().await {
        for (q, n) in depths {
            metrics::gauge!("swf_queue_depth", "queue" => q).set(n as f64);
        }
    }
    if let Ok(by) = store.runs_by_status().await {
        for (s, n) in by {
            metrics::gauge!("swf_runs", "status" => s).set(n as f64);
        }
    }
    let reachable = st.router.write_store().ping().await.is_ok();
    metrics::gauge!("swf_primary_reachable").set(if reachable { 1.0 } else { 0.0 });
    if let Ok(nodes) = store.nodes().await {
        let unhealthy = nodes
            .iter()
            .filter(|n| !n.is_healthy(st.heartbeat_ms))
            .count();
        metrics::gauge!("swf_nodes_unhealthy").set(unhealthy as f64);
    }
    if let Some(ex) = &st.executor {
        for p in ex.status() {
            metrics::gauge!("swf_pool_busy", "pool" => p.name.clone()).set(p.busy as f64);
            metrics::gauge!("swf_pool_size", "pool" => p.name).set(p.size as f64);
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::telemetry::prometheus().render(),
    )
        .into_response()
}

async fn fallback(req: Request<Body>) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

//! The one typed client of the HTTP API, used by the CLI, the bench, the
//! drill and its load, and the integration tests.
//!
//! [`ApiClient`] is built once (TLS trust and identity, bearer token,
//! timeouts) and is cheap to clone; [`ApiClient::at`] points a clone at
//! another node while sharing its connection pool. Answers are the
//! [`crate::api::wire`] types plus the response headers that matter
//! ([`Answer`]). Errors say whether the API answered with an error code
//! ([`CallError::Api`]) or no usable answer came back
//! ([`CallError::Transport`], [`CallError::Decode`]).
//!
//! [`ApiClient::submit`] (and [`ApiClient::submit_batch`]) own the one
//! retry policy of writes: a 503, a connection that could not be made, or
//! an answer lost on the way is retried with the same idempotency key(s)
//! until the [`RetryPolicy`]'s window has passed. This is the only place an API HTTP client is built, apart
//! from the node's forwarder.

use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::tls::{bearer, error_chain, AccessArgs, ClientTls, TlsError};
use crate::api::wire::{
    BatchSubmitted, BulkCancelRequest, BulkCancelled, Cancelled, DrillList, DrillRecord,
    DrillReport, DrillRequest, ErrorCode, Health, ListQuery, NodeInfoBody, PausedRun, QueueList,
    QueuePaused, Ready, RecoverReport, Regions, Retried, RunLineage, RunList, RunStatus,
    ScheduleInfo, ScheduleList, ScheduleRequest, SignalRequest, Signalled, Submitted,
    H_READ_SOURCE, H_REGION, H_SERVED_BY, H_TOKEN,
};

/// A typed answer and the response headers clients use.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub status: u16,
    pub body: T,
    /// `swf-served-by`: the node that served the call.
    pub served_by: Option<String>,
    /// `swf-region`: the serving node's region.
    pub region: Option<String>,
    /// `swf-read-source` of reads: `cache`, `replica` or `primary`.
    pub read_source: Option<String>,
    /// `swf-consistency-token` of writes.
    pub token: Option<String>,
}

/// An error answer of the API: its status, code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code_text} (HTTP {status}): {}{message}", batch_position(.index))]
pub struct ApiFailure {
    pub status: u16,
    pub code: ErrorCode,
    /// The code as sent (differs from `code` only for a code this client
    /// does not know).
    pub code_text: String,
    pub message: String,
    /// A batch's refused workflow (`error.index`), if the answer names one.
    pub index: Option<usize>,
}

/// `workflows[i]: ` before the message of a refusal that names a batch position.
fn batch_position(index: &Option<usize>) -> String {
    index.map_or_else(String::new, |i| format!("workflows[{i}]: "))
}

/// How a transport error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection could be made: nothing was sent.
    Connect,
    /// No answer within the timeout: the call may have taken effect.
    Timeout,
    /// Anything else, e.g. a connection reset: the answer was lost.
    Other,
}

/// Why a call got no typed answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The API answered with an error body.
    #[error(transparent)]
    Api(ApiFailure),
    /// No answer: `what` is e.g. `GET http://…/v1/regions`, `detail` the
    /// error and its causes ([`error_chain`]).
    #[error("{what}: {detail}")]
    Transport {
        what: String,
        kind: TransportKind,
        detail: String,
    },
    /// An answer that is not the expected JSON.
    #[error("HTTP {status_text}: the answer is not {expected}: {detail}")]
    Decode {
        status: u16,
        status_text: String,
        expected: &'static str,
        detail: String,
    },
}

impl CallError {
    /// The API's error, if it answered with one.
    pub fn api(&self) -> Option<&ApiFailure> {
        match self {
            CallError::Api(f) => Some(f),
            _ => None,
        }
    }

    /// The HTTP status of an answer, if one came.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Api(f) => Some(f.status),
            CallError::Decode { status, .. } => Some(*status),
            CallError::Transport { .. } => None,
        }
    }
}

/// How [`ApiClient::submit`] retries with the same idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Pause before the first retry; doubled after each, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts once this long has passed since the first try.
    pub window: Duration,
    /// Whether a try that timed out is retried (else it ends the submit:
    /// the write may or may not have happened).
    pub retry_timeouts: bool,
}

impl RetryPolicy {
    /// A person's submit (`swf submit`): 100 ms doubling up to 2 s, for 30 s.
    pub const PATIENT: RetryPolicy = RetryPolicy {
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
        window: Duration::from_secs(30),
        retry_timeouts: true,
    };
    /// One try, no retry (a benchmark measures what it gets).
    pub const ONCE: RetryPolicy = RetryPolicy {
        first_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        window: Duration::ZERO,
        retry_timeouts: false,
    };
    /// A drill's load: every 50 ms for 3 s; a timeout is final (indeterminate).
    pub const DRILL_LOAD: RetryPolicy = RetryPolicy {
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(50),
        window: Duration::from_secs(3),
        retry_timeouts: false,
    };
}

/// Why a submit did not get a 2xx.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// A try ended in a way that is not retried.
    #[error(transparent)]
    Call(CallError),
    /// Every try within the window was retryable.
    #[error("submit failed after retrying for {} s: {reason}", window.as_secs())]
    GaveUp {
        window: Duration,
        /// The last try's failure, in words.
        reason: String,
        last: CallError,
        /// Set when some try was sent but its answer lost: the write may
        /// have happened.
        lost_answer: Option<String>,
        retries: u32,
    },
}

/// Builds an [`ApiClient`].
#[derive(Debug, Clone)]
pub struct ApiClientBuilder {
    base: String,
    tls: ClientTls,
    authorization: Option<HeaderValue>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    pool_max_idle_per_host: Option<usize>,
}

impl ApiClientBuilder {
    /// What the client trusts and presents.
    pub fn tls(mut self, tls: &ClientTls) -> Self {
        self.tls = tls.clone();
        self
    }
    /// The `Authorization` header sent with every call.
    pub fn authorization(mut self, v: Option<HeaderValue>) -> Self {
        self.authorization = v;
        self
    }
    /// `Authorization: Bearer <token>`.
    pub fn bearer(mut self, token: Option<&str>) -> Result<Self, TlsError> {
        self.authorization = token.map(bearer).transpose()?;
        Ok(self)
    }
    /// Timeout of each whole call.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }
    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.pool_max_idle_per_host = Some(n);
        self
    }

    /// # Panics
    /// Only if the TLS backend cannot start.
    pub fn build(self) -> ApiClient {
        let mut b = self.tls.builder_with_auth(self.authorization.as_ref());
        if let Some(d) = self.timeout {
            b = b.timeout(d);
        }
        if let Some(d) = self.connect_timeout {
            b = b.connect_timeout(d);
        }
        if let Some(n) = self.pool_max_idle_per_host {
            b = b.pool_max_idle_per_host(n);
        }
        let http = b
            .build()
            .expect("build the API's HTTP client (fails only if the TLS backend cannot start)");
        ApiClient {
            base: trim(&self.base),
            http,
            token: None,
            region: None,
            timeout: None,
        }
    }
}

fn trim(base: &str) -> String {
    base.trim_end_matches('/').to_string()
}

/// A typed client of one node's API (see the module docs).
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    /// Sent as `swf-consistency-token` with reads.
    token: Option<String>,
    /// Sent as `swf-region` with every call.
    region: Option<String>,
    /// Per-call timeout overriding the client's.
    timeout: Option<Duration>,
}

impl ApiClient {
    /// A builder for a client of the API at `base` (e.g. `http://127.0.0.1:4000`).
    pub fn builder(base: &str) -> ApiClientBuilder {
        ApiClientBuilder {
            base: base.to_string(),
            tls: ClientTls::default(),
            authorization: None,
            timeout: None,
            connect_timeout: None,
            pool_max_idle_per_host: None,
        }
    }

    /// A plain client: web roots, no token, no timeout.
    pub fn new(base: &str) -> ApiClient {
        ApiClient::builder(base).build()
    }

    /// A client with a command's `--token`, `--ca-cert` and client certificate.
    pub fn from_access(
        base: &str,
        access: &AccessArgs,
        timeout: Duration,
    ) -> Result<ApiClient, TlsError> {
        Ok(ApiClient::builder(base)
            .tls(&access.client()?)
            .bearer(access.token.as_deref())?
            .timeout(timeout)
            .build())
    }

    /// The same client (and connection pool) pointed at another node.
    pub fn at(&self, base: &str) -> ApiClient {
        ApiClient {
            base: trim(base),
            ..self.clone()
        }
    }

    /// Reads carry this consistency token (read-your-writes).
    pub fn with_token(&self, token: Option<&str>) -> ApiClient {
        ApiClient {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }

    /// Calls are pinned to this region (`swf-region`).
    pub fn in_region(&self, region: Option<&str>) -> ApiClient {
        ApiClient {
            region: region.map(str::to_string),
            ..self.clone()
        }
    }

    /// Each call may take at most this long.
    pub fn with_timeout(&self, d: Duration) -> ApiClient {
        ApiClient {
            timeout: Some(d),
            ..self.clone()
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A raw request with this client's headers (token, region), for calls
    /// the typed methods do not make, e.g. tests that send malformed bodies.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut r = self.http.request(method, self.url(path));
        if let Some(t) = &self.token {
            r = r.header(H_TOKEN, t);
        }
        if let Some(region) = &self.region {
            r = r.header(H_REGION, region);
        }
        if let Some(d) = self.timeout {
            r = r.timeout(d);
        }
        r
    }

    /// The underlying HTTP client (raw calls; headers are not applied).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `POST /v1/workflows`, retried as `policy` says with the body's
    /// idempotency key (a body without one gets a fresh key first when the
    /// policy retries, so retries are safe). `on_retry(retries so far, why)` runs before each
    /// pause.
    pub async fn submit<B: Serialize>(
        &self,
        body: &B,
        policy: RetryPolicy,
        on_retry: impl FnMut(u32, &str),
    ) -> Result<Answer<Submitted>, SubmitError> {
        let mut body = to_body(body, "a workflow").map_err(SubmitError::Call)?;
        if !policy.window.is_zero() {
            give_key(&mut body);
        }
        self.post_retried("/v1/workflows", &body, policy, on_retry)
            .await
    }

    /// `POST /v1/workflows/batch` (`{"workflows": [...]}`): every workflow
    /// stored in one transaction, or none (the refusal's
    /// [`ApiFailure::index`] names the first bad one). Retried as
    /// [`ApiClient::submit`] is: when the policy retries, each workflow
    /// without an idempotency key gets a fresh one first, so a retry
    /// stores nothing twice.
    pub async fn submit_batch<B: Serialize>(
        &self,
        body: &B,
        policy: RetryPolicy,
        on_retry: impl FnMut(u32, &str),
    ) -> Result<Answer<BatchSubmitted>, SubmitError> {
        let mut body = to_body(body, "a batch of workflows").map_err(SubmitError::Call)?;
        if !policy.window.is_zero() {
            if let Some(list) = body.get_mut("workflows").and_then(|w| w.as_array_mut()) {
                list.iter_mut().for_each(give_key);
            }
        }
        self.post_retried("/v1/workflows/batch", &body, policy, on_retry)
            .await
    }

    /// A POST of a write whose retries are safe (idempotency keys), retried
    /// as `policy` says: a 503, a connection that could not be made, or an
    /// answer lost on the way.
    async fn post_retried<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        policy: RetryPolicy,
        mut on_retry: impl FnMut(u32, &str),
    ) -> Result<Answer<T>, SubmitError> {
        let start = Instant::now();
        let mut delay = policy.first_delay;
        let mut retries = 0u32;
        let mut lost_answer = None;
        loop {
            let err = match self.call(Method::POST, path, Some(body)).await {
                Ok(a) => return Ok(a),
                Err(e) => e,
            };
            let reason = match &err {
                CallError::Api(f) if f.status == 503 => {
                    format!("HTTP 503 from {}", self.url(path))
                }
                CallError::Transport { kind, detail, .. } => match kind {
                    TransportKind::Connect => detail.clone(),
                    TransportKind::Timeout if policy.retry_timeouts => detail.clone(),
                    TransportKind::Timeout => return Err(SubmitError::Call(err)),
                    TransportKind::Other => {
                        lost_answer = Some(detail.clone());
                        detail.clone()
                    }
                },
                _ => return Err(SubmitError::Call(err)),
            };
            let elapsed = start.elapsed();
            if elapsed >= policy.window {
                return Err(SubmitError::GaveUp {
                    window: policy.window,
                    reason,
                    last: err,
                    lost_answer,
                    retries,
                });
            }
            on_retry(retries, &reason);
            tokio::time::sleep(delay.min(policy.window - elapsed)).await;
            delay = (delay * 2).min(policy.max_delay);
            retries += 1;
        }
    }

    /// `GET /v1/workflows/{run_id}`.
    pub async fn status(&self, run_id: &str) -> Result<Answer<RunStatus>, CallError> {
        self.get(&format!("/v1/workflows/{run_id}")).await
    }

    /// `GET /v1/workflows/{run_id}/lineage`.
    pub async fn lineage(&self, run_id: &str) -> Result<Answer<RunLineage>, CallError> {
        self.get(&format!("/v1/workflows/{run_id}/lineage")).await
    }

    /// `GET /v1/workflows?status=&limit=&after=`.
    pub async fn list(&self, q: &ListQuery) -> Result<Answer<RunList>, CallError> {
        let what = format!("GET {}", self.url("/v1/workflows"));
        let req = self.request(Method::GET, "/v1/workflows").query(q);
        answer(self.send(req, &what).await?).await
    }

    /// `POST /v1/workflows/{run_id}/cancel`.
    pub async fn cancel(&self, run_id: Uuid) -> Result<Answer<Cancelled>, CallError> {
        self.call::<_, ()>(
            Method::POST,
            &format!("/v1/workflows/{run_id}/cancel"),
            None,
        )
        .await
    }

    /// `POST /v1/workflows/{run_id}/retry`.
    pub async fn retry(&self, run_id: Uuid) -> Result<Answer<Retried>, CallError> {
        self.call::<_, ()>(Method::POST, &format!("/v1/workflows/{run_id}/retry"), None)
            .await
    }

    /// `POST /v1/workflows/{run_id}/pause` (`paused`) or `.../resume`.
    pub async fn set_paused(
        &self,
        run_id: Uuid,
        paused: bool,
    ) -> Result<Answer<PausedRun>, CallError> {
        let verb = if paused { "pause" } else { "resume" };
        self.call::<_, ()>(
            Method::POST,
            &format!("/v1/workflows/{run_id}/{verb}"),
            None,
        )
        .await
    }

    /// `POST /v1/workflows/{run_id}/signals/{name}`.
    pub async fn signal(
        &self,
        run_id: Uuid,
        name: &str,
        req: &SignalRequest,
    ) -> Result<Answer<Signalled>, CallError> {
        self.call(
            Method::POST,
            &format!("/v1/workflows/{run_id}/signals/{name}"),
            Some(req),
        )
        .await
    }

    /// `POST /v1/workflows/cancel` (bulk cancel by filter).
    pub async fn cancel_many(
        &self,
        req: &BulkCancelRequest,
    ) -> Result<Answer<BulkCancelled>, CallError> {
        self.call(Method::POST, "/v1/workflows/cancel", Some(req))
            .await
    }

    /// `POST /v1/schedules`.
    pub async fn create_schedule(
        &self,
        req: &ScheduleRequest,
    ) -> Result<Answer<ScheduleInfo>, CallError> {
        self.call(Method::POST, "/v1/schedules", Some(req)).await
    }

    /// `GET /v1/schedules`.
    pub async fn schedules(&self) -> Result<Answer<ScheduleList>, CallError> {
        self.get("/v1/schedules").await
    }

    /// `DELETE /v1/schedules/{name}`.
    pub async fn delete_schedule(&self, name: &str) -> Result<(), CallError> {
        let path = format!("/v1/schedules/{name}");
        let what = format!("DELETE {}", self.url(&path));
        let resp = self
            .send(self.request(Method::DELETE, &path), &what)
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        answer::<serde_json::Value>(resp).await.map(|_| ())
    }

    /// `POST /v1/schedules/{name}/pause` (`paused`) or `.../resume`.
    pub async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<Answer<ScheduleInfo>, CallError> {
        let verb = if paused { "pause" } else { "resume" };
        self.call::<_, ()>(Method::POST, &format!("/v1/schedules/{name}/{verb}"), None)
            .await
    }

    /// `GET /v1/queues`.
    pub async fn queues(&self) -> Result<Answer<QueueList>, CallError> {
        self.get("/v1/queues").await
    }

    /// `POST /v1/queues/{name}/pause` (`paused`) or `.../resume`.
    pub async fn set_queue_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<Answer<QueuePaused>, CallError> {
        let verb = if paused { "pause" } else { "resume" };
        self.call::<_, ()>(Method::POST, &format!("/v1/queues/{name}/{verb}"), None)
            .await
    }

    /// `GET /v1/regions`.
    pub async fn regions(&self) -> Result<Answer<Regions>, CallError> {
        self.get("/v1/regions").await
    }

    /// `POST /v1/admin/drills`: runs a drill and answers with its report.
    pub async fn drill(&self, req: &DrillRequest) -> Result<Answer<DrillReport>, CallError> {
        self.call(Method::POST, "/v1/admin/drills", Some(req)).await
    }

    /// `GET /v1/admin/drills`: the drill journal, newest first.
    pub async fn drills(&self) -> Result<Answer<DrillList>, CallError> {
        self.get("/v1/admin/drills").await
    }

    /// `GET /v1/admin/drills/{id}`.
    pub async fn drill_record(&self, id: &str) -> Result<Answer<DrillRecord>, CallError> {
        self.get(&format!("/v1/admin/drills/{id}")).await
    }

    /// `POST /v1/admin/drills/recover`: recovers from an interrupted drill.
    pub async fn recover(&self) -> Result<Answer<RecoverReport>, CallError> {
        self.call::<_, ()>(Method::POST, "/v1/admin/drills/recover", None)
            .await
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Answer<Health>, CallError> {
        self.get("/health").await
    }

    /// `GET /health/info`.
    pub async fn health_info(&self) -> Result<Answer<NodeInfoBody>, CallError> {
        self.get("/health/info").await
    }

    /// `GET /health/ready`: a 503 with its reason is an answer, not an error.
    pub async fn ready(&self) -> Result<Answer<Ready>, CallError> {
        let what = format!("GET {}", self.url("/health/ready"));
        let resp = self
            .send(self.request(Method::GET, "/health/ready"), &what)
            .await?;
        if resp.status().as_u16() == 503 {
            return decode(resp, "a readiness answer").await;
        }
        answer(resp).await
    }

    /// A typed GET of `path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Answer<T>, CallError> {
        self.call::<T, ()>(Method::GET, path, None).await
    }

    /// A typed call: `body` sent as JSON, the answer read as `T`, an error
    /// answer as [`CallError::Api`].
    pub async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Answer<T>, CallError> {
        let what = format!("{method} {}", self.url(path));
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.send(req, &what).await?;
        answer(resp).await
    }

    async fn send(&self, req: RequestBuilder, what: &str) -> Result<Response, CallError> {
        req.send().await.map_err(|e| CallError::Transport {
            what: what.to_string(),
            kind: if e.is_connect() {
                TransportKind::Connect
            } else if e.is_timeout() {
                TransportKind::Timeout
            } else {
                TransportKind::Other
            },
            detail: error_chain(&e),
        })
    }
}

/// A request body as JSON, to add idempotency keys to.
fn to_body<B: Serialize>(body: &B, what: &'static str) -> Result<serde_json::Value, CallError> {
    serde_json::to_value(body).map_err(|e| CallError::Decode {
        status: 0,
        status_text: "-".into(),
        expected: what,
        detail: e.to_string(),
    })
}

/// Gives a workflow object without an idempotency key a fresh one.
fn give_key(wf: &mut serde_json::Value) {
    if wf.is_object() && wf.get("idempotency_key").is_none() {
        wf["idempotency_key"] = uuid::Uuid::new_v4().to_string().into();
    }
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A 2xx read as `T`; anything else as an error answer.
async fn answer<T: DeserializeOwned>(resp: Response) -> Result<Answer<T>, CallError> {
    if resp.status().is_success() {
        return decode(resp, "the expected JSON").await;
    }
    let status = resp.status();
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        index: Option<usize>,
    }
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        error: Option<Detail>,
    }
    let text = resp.text().await.unwrap_or_default();
    let body: Body = serde_json::from_str(&text).map_err(|e| CallError::Decode {
        status: status.as_u16(),
        status_text: status.to_string(),
        expected: "JSON",
        detail: e.to_string(),
    })?;
    let detail = body.error.unwrap_or(Detail {
        code: None,
        message: None,
        index: None,
    });
    let code_text = detail.code.unwrap_or_else(|| "unknown".into());
    let code = serde_json::from_value(code_text.clone().into()).unwrap_or(ErrorCode::Unknown);
    Err(CallError::Api(ApiFailure {
        status: status.as_u16(),
        code,
        code_text,
        message: detail.message.unwrap_or_default(),
        index: detail.index,
    }))
}

async fn decode<T: DeserializeOwned>(
    resp: Response,
    expected: &'static str,
) -> Result<Answer<T>, CallError> {
    let status = resp.status();
    let (served_by, region) = (header(&resp, H_SERVED_BY), header(&resp, H_REGION));
    let (read_source, token) = (header(&resp, H_READ_SOURCE), header(&resp, H_TOKEN));
    let bad = |detail: String| CallError::Decode {
        status: status.as_u16(),
        status_text: status.to_string(),
        expected,
        detail,
    };
    let bytes = resp.bytes().await.map_err(|e| bad(error_chain(&e)))?;
    let body = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    Ok(Answer {
        status: status.as_u16(),
        body,
        served_by,
        region,
        read_source,
        token,
    })
}

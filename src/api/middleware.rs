//! The layers around every route: [`observe`] (request span, latency
//! histogram, node headers on `/v1` answers), [`guard`] (load shedding, with
//! a pool of its own for anonymous calls; authentication, request timeout),
//! [`v1_guard`] (client role, region pinning; a pinned call's consistency
//! token is verified before it is forwarded) and [`json_errors`] (axum's own
//! refusals get the API's error body).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::api::access::RouteAccess;
use crate::api::auth::Access;
use crate::api::body::read_token;
use crate::api::error::ApiError;
use crate::api::forward::forward;
use crate::api::state::ApiState;
use crate::api::wire::{ErrorCode, H_REGION, H_SERVED_BY};

/// Adds the node headers to every /v1 response, records request latency.
pub async fn observe(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method());
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
    // Label values come from fixed sets (route templates, methods, status
    // classes), so no caller can add series.
    metrics::histogram!("swf_http_request_duration_seconds",
        "route" => route, "method" => method, "status" => status_class(resp.status()))
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

/// 503 `overloaded` with `Retry-After`, naming the limit in `why`.
fn overloaded(why: &str) -> Response {
    let mut r = ApiError::new(ErrorCode::Overloaded, why).into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from_static("1"),
    );
    r
}

/// Sheds load (anonymous calls past `api.anonymous_concurrency`, any past
/// `limits.max_concurrent_requests`), authenticates, and bounds how long a
/// request may take (drills excepted).
pub async fn guard(
    State((st, table)): State<(ApiState, Arc<RouteAccess>)>,
    req: Request,
    next: Next,
) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str());
    let access = table.of(req.method(), route, req.uri().path());
    let required = st.auth.required(access);
    // Calls that need no token by their route's nature (probes, open
    // metrics and info, unknown paths outside /v1) share a small pool of
    // their own, so a flood of them cannot take the permits /v1 needs.
    let anonymous = required.is_none() && !matches!(access, Access::Scope(_));
    let _anonymous =
        match anonymous {
            true => match st.anonymous.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => return overloaded(
                    "too many unauthenticated requests in progress (api.anonymous_concurrency); \
                     retry shortly",
                ),
            },
            false => None,
        };
    let Ok(_permit) = st.inflight.clone().try_acquire_owned() else {
        return overloaded(
            "too many requests in progress (limits.max_concurrent_requests); retry shortly",
        );
    };
    if let Some(scope) = required {
        let header = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        use crate::api::auth::Denied;
        match st.auth.check(header, scope) {
            Ok(_) => {}
            Err(Denied::Unauthorized(m)) => {
                let mut r = ApiError::new(ErrorCode::Unauthorized, m).into_response();
                r.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                );
                return r;
            }
            Err(Denied::Forbidden(m)) => {
                return ApiError::new(ErrorCode::Forbidden, m).into_response()
            }
            Err(Denied::RateLimited(m)) => {
                let mut r = ApiError::new(ErrorCode::RateLimited, m).into_response();
                r.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    HeaderValue::from_static("1"),
                );
                return r;
            }
        }
    }
    // Admin calls (drills) run as long as they take: the route table says which.
    if access == Access::Scope(crate::api::auth::Scope::Admin) {
        return next.run(req).await;
    }
    match tokio::time::timeout(st.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request took longer than {} ms (limits.request_timeout_ms)",
                st.request_timeout.as_millis()
            ),
        )
        .into_response(),
    }
}

/// Gives the refusals axum writes itself (a path parameter that is not
/// UTF-8, ...) the API's error body: a 400 that is not JSON becomes
/// `invalid_request`, with axum's text as its message.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status() != axum::http::StatusCode::BAD_REQUEST || json {
        return resp;
    }
    let text = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let text = if text.is_empty() {
        "malformed request".to_string()
    } else {
        text
    };
    ApiError::new(ErrorCode::InvalidRequest, text).into_response()
}

/// Refuses /v1 on nodes without the client role and handles `swf-region`.
pub async fn v1_guard(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    if st.client.is_none() {
        return ApiError::new(
            ErrorCode::ClientRoleDisabled,
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
            // A token this cluster did not sign is refused here, not spread.
            if let Err(e) = read_token(req.headers(), st.router.token_key()) {
                return e.into_response();
            }
            return match forward(&st, &want, req).await {
                Ok(r) => r,
                Err(e) => e.into_response(),
            };
        }
    }
    next.run(req).await
}

/// The method as a metric label: the standard methods, anything else `other`.
pub(crate) fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The status as a metric label: its class (`2xx` ... `5xx`).
pub(crate) fn status_class(s: axum::http::StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Method, StatusCode};

    #[test]
    fn metric_labels_come_from_fixed_sets() {
        let cases = [
            (Method::GET, "GET"),
            (Method::POST, "POST"),
            (Method::from_bytes(b"BREW").unwrap(), "other"),
            (Method::from_bytes(b"X-ANYTHING-123").unwrap(), "other"),
        ];
        for (m, want) in cases {
            assert_eq!(method_label(&m), want, "{m}");
        }
        assert_eq!(status_class(StatusCode::CREATED), "2xx");
        assert_eq!(status_class(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(status_class(StatusCode::from_u16(599).unwrap()), "5xx");
    }
}

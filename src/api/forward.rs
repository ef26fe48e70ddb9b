//! Region pinning: a call with `swf-region: X` served elsewhere is
//! forwarded once to a client node of region X; a call already forwarded is
//! refused (`forwarding_loop`), and no reachable node there answers
//! `region_unavailable`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;

use crate::api::body::{read_parts_body, read_parts_body_under};
use crate::api::error::{ApiError, ApiResult};
use crate::api::state::ApiState;
use crate::api::wire::{ErrorCode, H_FORWARDED_BY};

/// Serves a call pinned to region `want` by forwarding it to a healthy
/// client node there, once.
pub async fn forward(st: &ApiState, want: &str, req: Request) -> ApiResult {
    if let Some(from) = req.headers().get(H_FORWARDED_BY) {
        return Err(ApiError::new(
            ErrorCode::ForwardingLoop,
            format!(
                "call pinned to region `{want}` was already forwarded (by {}) and reached region {}; refusing to forward it again",
                from.to_str().unwrap_or("?"),
                st.info.region
            ),
        ));
    }
    if !st.router.region_names().iter().any(|r| r == want) {
        return Err(ApiError::new(
            ErrorCode::UnknownRegion,
            format!("unknown region `{want}` in header swf-region"),
        ));
    }
    let unavailable = |why: String| {
        metrics::counter!("swf_forwarded_total", "target" => want.to_string(), "result" => "unavailable")
            .increment(1);
        ApiError::new(
            ErrorCode::RegionUnavailable,
            format!("region `{want}` has no reachable client node: {why}"),
        )
    };
    let Some(target) = crate::client::cluster::peer_url(&st.router, want, st.heartbeat_ms).await
    else {
        return Err(unavailable(
            "no healthy client node in the heartbeat table".into(),
        ));
    };
    let (parts, body) = req.into_parts();
    // The route there holds the body to its own limit; a batch's is larger.
    let bytes = match parts.uri.path() {
        "/v1/workflows/batch" => {
            read_parts_body_under(
                &parts.headers,
                body,
                st.max_batch_body_bytes,
                "limits.max_batch_body_bytes",
            )
            .await?
        }
        _ => read_parts_body(&parts.headers, body, st.max_body_bytes).await?,
    };
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
    builder.body(Body::from(body)).map_err(|e| {
        ApiError::new(ErrorCode::Internal, e.to_string()).with_status(StatusCode::BAD_GATEWAY)
    })
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

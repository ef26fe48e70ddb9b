//! `/health`, `/health/ready`, `/health/info`, `/metrics`, and the answer
//! for paths no route matches.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::error::ApiError;
use crate::api::state::ApiState;
use crate::api::wire::{DatabaseInfo, DbRole, Health, LocalDbInfo, NodeInfoBody, WriteDbInfo};
use crate::client::cluster;
use crate::store::Store;

pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

pub async fn ready(State(st): State<ApiState>) -> Response {
    let ready = cluster::ready(&st.router).await;
    let code = if ready.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(ready)).into_response()
}

pub async fn info(State(st): State<ApiState>) -> Json<NodeInfoBody> {
    let pools = st.executor.as_ref().map(|e| e.status()).unwrap_or_default();
    let write_reachable = cluster::write_reachable(&st.router).await;
    let local = st.router.local_state();
    Json(NodeInfoBody {
        node_id: st.info.node_id.clone(),
        node_type: st.info.node_type.clone(),
        roles: st.info.roles.clone(),
        region: st.info.region.clone(),
        write_region: st.router.write_region(),
        epoch: st.router.epoch(),
        worker_pools: pools,
        database: DatabaseInfo {
            local: LocalDbInfo {
                role: if local.is_primary {
                    DbRole::Primary
                } else {
                    DbRole::Replica
                },
                lag_ms: local.lag_ms,
                healthy: local.healthy,
            },
            write: WriteDbInfo {
                region: st.router.write_region(),
                reachable: write_reachable,
            },
        },
        schema_version: Store::known_schema_version(),
        version: st.info.version.clone(),
    })
}

/// The Prometheus text. It costs no query: the database-derived gauges are
/// kept by a task of the node (`client::cluster::Gauges`); only the worker
/// pools' gauges, held in memory, are read here.
pub async fn metrics_text(State(st): State<ApiState>) -> Response {
    if let Some(ex) = &st.executor {
        for p in ex.status() {
            metrics::gauge!("swf_pool_busy", "pool" => p.name.clone()).set(p.busy as f64);
            metrics::gauge!("swf_pool_size", "pool" => p.name).set(p.size as f64);
        }
    }
    // Memory: the process's, and what the lineage cache holds of it.
    if let Some(r) = crate::telemetry::rss::Rss::read() {
        metrics::gauge!("swf_process_rss_bytes").set((r.current_kib * 1024) as f64);
    }
    let cache = st.router.cache();
    metrics::gauge!("swf_cache_bytes", "cache" => cache.name().to_string())
        .set(cache.weighted_bytes() as f64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::telemetry::prometheus().render(),
    )
        .into_response()
}

pub async fn fallback(req: Request<Body>) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// `GET /openapi.json`: the OpenAPI document of the `/v1` routes.
pub async fn openapi() -> axum::response::Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        crate::api::openapi::served(),
    )
        .into_response()
}

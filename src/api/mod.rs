//! HTTP API (axum on hyper): the routes, headers and error bodies of
//! DESIGN section 6.
//!
//! Every `/v1` response carries `swf-served-by` and `swf-region`; reads add
//! `swf-read-source`, writes `swf-consistency-token`. Errors are
//! `{"error": {"code", "message"}}`. Request bodies are read up to the
//! configured limit and refused with 413 past it. Worker nodes answer `/v1`
//! with 403 `client_role_disabled`.

pub mod auth;
pub mod body;
pub mod client;
pub mod error;
pub mod forward;
pub mod middleware;
pub mod routes;
pub mod state;
pub mod tls;
pub mod wire;

use axum::routing::{get, post};

pub use error::ApiError;
pub use state::{ApiState, Forwarder, NodeInfo};

use routes::{admin, health, regions, workflows};

/// Builds the axum router for one node.
pub fn router(state: ApiState) -> axum::Router {
    let v1 = axum::Router::new()
        .route(
            "/v1/workflows",
            post(workflows::submit).get(workflows::list),
        )
        .route("/v1/workflows/{run_id}", get(workflows::status))
        .route("/v1/workflows/{run_id}/lineage", get(workflows::lineage))
        .route("/v1/workflows/{run_id}/cancel", post(workflows::cancel))
        .route("/v1/regions", get(regions::regions))
        .route("/v1/admin/drills", post(admin::drill))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::v1_guard,
        ));
    axum::Router::new()
        .merge(v1)
        .route("/health", get(health::health))
        .route("/health/ready", get(health::ready))
        .route("/health/info", get(health::info))
        .route("/metrics", get(health::metrics_text))
        .fallback(health::fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

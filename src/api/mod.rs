//! HTTP API (axum on hyper): the routes, headers and error bodies of
//! DESIGN section 6.
//!
//! Every `/v1` response carries `swf-served-by` and `swf-region`; reads add
//! `swf-read-source`, writes `swf-consistency-token`. Errors are
//! `{"error": {"code", "message"}}`. Request bodies are read up to the
//! configured limit and refused with 413 past it. Worker nodes answer `/v1`
//! with 403 `client_role_disabled`.

pub mod access;
pub mod auth;
pub mod body;
pub mod client;
pub mod conn;
pub mod error;
pub mod forward;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod table;
pub mod tls;
pub mod wire;

pub use error::ApiError;
pub use state::{ApiShared, ApiState, Forwarder, NodeInfo};

/// Builds the axum router for one node from the route table; the guard
/// reads each call's access from the same table.
pub fn router(state: ApiState) -> axum::Router {
    let v1_guard = axum::middleware::from_fn_with_state(state.clone(), middleware::v1_guard);
    let (app, access) = table::v1_routes()
        .merge(table::ui_routes())
        .map(|r| r.route_layer(v1_guard))
        .merge(table::node_routes())
        .split();
    openapi::publish(&access);
    app.fallback(routes::health::fallback)
        .layer(axum::middleware::from_fn(middleware::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), access),
            middleware::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

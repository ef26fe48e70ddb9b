//! The route table: every route, its handler and the access it needs, in
//! one list. `api::router` builds the router from it, and the guard reads
//! the access of the route a call matched from it.

use axum::http::Method;

use crate::api::access::Routes;
use crate::api::auth::{Access, Scope};
use crate::api::routes::{admin, control, health, queues, regions, schedules, ui, workflows};

const READ: Access = Access::Scope(Scope::Read);
const SUBMIT: Access = Access::Scope(Scope::Submit);
const ADMIN: Access = Access::Scope(Scope::Admin);

/// The `/v1` routes (served only by nodes with the client role).
pub fn v1_routes() -> Routes {
    Routes::new()
        .add(Method::POST, "/v1/workflows", SUBMIT, workflows::submit)
        .add(
            Method::POST,
            "/v1/workflows/batch",
            SUBMIT,
            workflows::submit_batch,
        )
        .add(Method::GET, "/v1/workflows", READ, workflows::list)
        .add(
            Method::GET,
            "/v1/workflows/{run_id}",
            READ,
            workflows::status,
        )
        .add(
            Method::GET,
            "/v1/workflows/{run_id}/lineage",
            READ,
            workflows::lineage,
        )
        .add(
            Method::POST,
            "/v1/workflows/{run_id}/retry",
            SUBMIT,
            workflows::retry,
        )
        .add(
            Method::POST,
            "/v1/workflows/{run_id}/pause",
            SUBMIT,
            control::pause,
        )
        .add(
            Method::POST,
            "/v1/workflows/{run_id}/resume",
            SUBMIT,
            control::resume,
        )
        .add(
            Method::POST,
            "/v1/workflows/{run_id}/signals/{name}",
            SUBMIT,
            control::signal,
        )
        .add(
            Method::POST,
            "/v1/workflows/cancel",
            SUBMIT,
            workflows::cancel_many,
        )
        .add(
            Method::POST,
            "/v1/workflows/{run_id}/cancel",
            SUBMIT,
            workflows::cancel,
        )
        .add(Method::GET, "/v1/queues", READ, queues::list)
        .add(
            Method::POST,
            "/v1/queues/{name}/pause",
            ADMIN,
            queues::pause,
        )
        .add(
            Method::POST,
            "/v1/queues/{name}/resume",
            ADMIN,
            queues::resume,
        )
        .add(Method::POST, "/v1/schedules", SUBMIT, schedules::create)
        .add(Method::GET, "/v1/schedules", READ, schedules::list)
        .add(Method::GET, "/v1/schedules/{name}", READ, schedules::one)
        .add(
            Method::DELETE,
            "/v1/schedules/{name}",
            SUBMIT,
            schedules::delete,
        )
        .add(
            Method::POST,
            "/v1/schedules/{name}/pause",
            SUBMIT,
            schedules::pause,
        )
        .add(
            Method::POST,
            "/v1/schedules/{name}/resume",
            SUBMIT,
            schedules::resume,
        )
        .add(Method::GET, "/v1/regions", READ, regions::regions)
        .add(Method::GET, "/v1/whoami", READ, ui::whoami)
        .add(Method::GET, "/openapi.json", Access::Open, health::openapi)
        .add(Method::POST, "/v1/admin/drills", ADMIN, admin::drill)
        .add(Method::GET, "/v1/admin/drills", ADMIN, admin::list)
        .add(Method::GET, "/v1/admin/drills/{id}", ADMIN, admin::one)
        .add(
            Method::POST,
            "/v1/admin/drills/recover",
            ADMIN,
            admin::recover,
        )
}

/// The dashboard's page and files: open (the page asks for a token when
/// the API needs one), served by nodes with the client role.
pub fn ui_routes() -> Routes {
    Routes::new()
        .add(Method::GET, "/ui", Access::Open, ui::root)
        .add(Method::GET, "/ui/", Access::Open, ui::index)
        .add(Method::GET, "/ui/{*path}", Access::Open, ui::file)
}

/// Probes, node info and metrics (served by every node).
pub fn node_routes() -> Routes {
    Routes::new()
        .add(Method::GET, "/health", Access::Open, health::health)
        .add(Method::GET, "/health/ready", Access::Open, health::ready)
        .add(Method::GET, "/health/info", Access::Info, health::info)
        .add(
            Method::GET,
            "/metrics",
            Access::Metrics,
            health::metrics_text,
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::tests::{auth, check};

    #[test]
    fn route_by_token_scope_table() {
        let (_, table) = v1_routes().merge(ui_routes()).merge(node_routes()).split();
        let a = auth(1000);
        // (method, matched route or None, path, token, expected: open / ok / 401 / 403)
        let cases = [
            ("GET", Some("/health"), None, "open"),
            ("GET", Some("/health/ready"), None, "open"),
            ("GET", Some("/metrics"), None, "open"),
            ("GET", Some("/v1/workflows"), None, "401"),
            ("GET", Some("/v1/workflows"), Some("Bearer nope"), "401"),
            ("GET", Some("/v1/workflows"), Some("Basic r-secret"), "401"),
            (
                "GET",
                Some("/v1/workflows/{run_id}"),
                Some("Bearer r-secret"),
                "ok",
            ),
            (
                "POST",
                Some("/v1/workflows"),
                Some("Bearer r-secret"),
                "403",
            ),
            ("POST", Some("/v1/workflows"), Some("Bearer w-secret"), "ok"),
            (
                "POST",
                Some("/v1/workflows/batch"),
                Some("Bearer r-secret"),
                "403",
            ),
            (
                "POST",
                Some("/v1/workflows/batch"),
                Some("Bearer w-secret"),
                "ok",
            ),
            ("POST", Some("/v1/workflows/batch"), None, "401"),
            (
                "POST",
                Some("/v1/workflows/{run_id}/cancel"),
                Some("Bearer r-secret"),
                "403",
            ),
            (
                "POST",
                Some("/v1/workflows/{run_id}/cancel"),
                Some("Bearer w-secret"),
                "ok",
            ),
            (
                "POST",
                Some("/v1/admin/drills"),
                Some("Bearer w-secret"),
                "403",
            ),
            (
                "POST",
                Some("/v1/admin/drills"),
                Some("Bearer a-secret"),
                "ok",
            ),
            ("GET", Some("/v1/regions"), Some("Bearer a-secret"), "ok"),
            ("GET", Some("/v1/whoami"), None, "401"),
            ("GET", Some("/v1/whoami"), Some("Bearer r-secret"), "ok"),
            ("GET", Some("/ui/"), None, "open"),
            ("GET", Some("/ui/{*path}"), None, "open"),
            ("GET", Some("/v1/queues"), Some("Bearer r-secret"), "ok"),
            (
                "POST",
                Some("/v1/workflows/cancel"),
                Some("Bearer r-secret"),
                "403",
            ),
            (
                "POST",
                Some("/v1/workflows/{run_id}/retry"),
                Some("Bearer w-secret"),
                "ok",
            ),
            (
                "POST",
                Some("/v1/workflows/{run_id}/pause"),
                Some("Bearer r-secret"),
                "403",
            ),
            (
                "POST",
                Some("/v1/workflows/{run_id}/resume"),
                Some("Bearer w-secret"),
                "ok",
            ),
            (
                "POST",
                Some("/v1/workflows/{run_id}/signals/{name}"),
                Some("Bearer w-secret"),
                "ok",
            ),
            ("GET", Some("/v1/schedules"), Some("Bearer r-secret"), "ok"),
            (
                "POST",
                Some("/v1/schedules"),
                Some("Bearer r-secret"),
                "403",
            ),
            (
                "DELETE",
                Some("/v1/schedules/{name}"),
                Some("Bearer w-secret"),
                "ok",
            ),
            (
                "DELETE",
                Some("/v1/schedules/{name}"),
                Some("Bearer r-secret"),
                "403",
            ),
            (
                "POST",
                Some("/v1/queues/{name}/pause"),
                Some("Bearer w-secret"),
                "403",
            ),
            (
                "POST",
                Some("/v1/queues/{name}/resume"),
                Some("Bearer a-secret"),
                "ok",
            ),
            (
                "GET",
                Some("/v1/admin/drills/{id}"),
                Some("Bearer r-secret"),
                "403",
            ),
            (
                "GET",
                Some("/v1/admin/drills/{id}"),
                Some("Bearer a-secret"),
                "ok",
            ),
            (
                "POST",
                Some("/v1/admin/drills/recover"),
                Some("Bearer w-secret"),
                "403",
            ),
            (
                "POST",
                Some("/v1/admin/drills/recover"),
                Some("Bearer a-secret"),
                "ok",
            ),
            // A method the route does not serve: the route's least scope.
            ("DELETE", Some("/v1/workflows"), None, "401"),
            (
                "GET",
                Some("/v1/admin/drills"),
                Some("Bearer w-secret"),
                "403",
            ),
            // No route: read under /v1, open elsewhere.
            ("GET", None, None, "401"),
        ];
        for (method, route, header, want) in cases {
            let method: Method = method.parse().unwrap();
            let path = route.unwrap_or("/v1/nothing-here");
            let access = table.of(&method, route, path);
            assert_eq!(
                check(&a, access, header),
                want,
                "{method} {route:?} {header:?}"
            );
        }
        assert_eq!(table.of(&Method::GET, None, "/nothing"), Access::Open);
    }

    #[test]
    fn every_v1_route_is_in_the_openapi_document_and_nothing_else() {
        let (_, table) = v1_routes().split();
        let mut routes: Vec<(String, &str)> = table
            .operations()
            .into_iter()
            .filter(|(_, p)| *p != "/openapi.json")
            .map(|(m, p)| (m.to_string(), p))
            .collect();
        routes.sort();
        let doc = crate::api::openapi::document(&table);
        let mut documented: Vec<(String, &str)> = Vec::new();
        for (m, p) in crate::api::openapi::documented() {
            if p == "/openapi.json" {
                continue;
            }
            let op = &doc["paths"][p][m.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{m} {p} not in the document");
            documented.push((m.to_string(), p));
        }
        documented.sort();
        assert_eq!(routes, documented);
        // Scopes come from the table.
        assert_eq!(
            doc["paths"]["/v1/admin/drills"]["post"]["x-swf-scope"],
            "admin"
        );
        assert_eq!(
            doc["paths"]["/v1/workflows"]["post"]["x-swf-scope"],
            "submit"
        );
        // Schemas come from the wire types.
        let spec = &doc["components"]["schemas"]["StepSpec"]["properties"];
        for field in ["wait_for", "map", "concurrency", "delay_ms", "priority"] {
            assert!(spec[field].is_object(), "StepSpec has no {field}: {spec}");
        }
    }
}

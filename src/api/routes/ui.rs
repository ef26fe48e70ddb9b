//! The operator dashboard (`/ui/`, DESIGN 10.3): the files of `ui/`,
//! embedded in the binary at build time so a node serves them air-gapped,
//! and `GET /v1/whoami`, which tells the page what its token may do.
//!
//! Every path under `/ui/` that is not a file answers the page itself (one
//! page app: the page reads its route from the URL). The page loads nothing
//! from elsewhere, and the Content-Security-Policy says so to the browser.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;

use crate::api::error::ApiError;
use crate::api::state::ApiState;
use crate::api::wire::WhoAmI;

/// (name under `/ui/assets/`, content, content type).
pub const FILES: &[(&str, &str, &str)] = &[
    ("app.js", include_str!("../../../ui/app.js"), JS),
    ("api.js", include_str!("../../../ui/api.js"), JS),
    ("dom.js", include_str!("../../../ui/dom.js"), JS),
    ("chart.js", include_str!("../../../ui/chart.js"), JS),
    ("dag.js", include_str!("../../../ui/dag.js"), JS),
    ("overview.js", include_str!("../../../ui/overview.js"), JS),
    ("runs.js", include_str!("../../../ui/runs.js"), JS),
    ("run.js", include_str!("../../../ui/run.js"), JS),
    ("queues.js", include_str!("../../../ui/queues.js"), JS),
    ("schedules.js", include_str!("../../../ui/schedules.js"), JS),
    ("drills.js", include_str!("../../../ui/drills.js"), JS),
    ("style.css", include_str!("../../../ui/style.css"), CSS),
];

/// The page every non-file path under `/ui/` answers.
pub const INDEX: &str = include_str!("../../../ui/index.html");

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Scripts, styles and calls from this origin only; no frames, no plugins,
/// no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

fn with_headers(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files change with the binary: revalidate, never serve stale.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /ui`: to the page's root.
pub async fn root() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`: the page.
pub async fn index() -> Response {
    with_headers("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/{*path}`: a file of `assets/`, else the page (a page route such
/// as `/ui/runs/<id>`).
pub async fn file(Path(path): Path<String>) -> Response {
    match path.strip_prefix("assets/") {
        Some(name) => match FILES.iter().find(|(n, _, _)| *n == name) {
            Some((_, body, ty)) => with_headers(ty, body),
            None => ApiError::not_found(format!("no dashboard file {name}")).into_response(),
        },
        None => index().await,
    }
}

/// `GET /v1/whoami`: whether auth is on, the caller's token name and scopes.
pub async fn whoami(State(st): State<ApiState>, headers: HeaderMap) -> Json<WhoAmI> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (auth, token, scopes) = st.auth.who(header);
    Json(WhoAmI {
        auth,
        token,
        scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_ui_is_embedded_and_the_page_loads_only_embedded_files() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "index.html" && !n.starts_with('.'))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(n, _, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "ui/ and api::routes::ui::FILES differ");
        // Every module a script imports, and every file the page names, is
        // one that is served.
        let mut named = Vec::new();
        for (_, body, _) in FILES.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            for part in body.split("from \"./").skip(1) {
                named.push(part.split('"').next().unwrap().to_string());
            }
        }
        for part in INDEX.split("/ui/assets/").skip(1) {
            named.push(part.split('"').next().unwrap().to_string());
        }
        assert!(!named.is_empty());
        for n in named {
            assert!(
                FILES.iter().any(|(f, _, _)| *f == n),
                "{n} is loaded but not served"
            );
        }
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
    }
}

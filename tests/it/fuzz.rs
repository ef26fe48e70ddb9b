//! Generated requests over every header and path parameter the API reads
//! (authorization forms, consistency tokens, region pins, forwarding marks,
//! run ids, drill ids, queue names, methods, idempotency keys; long and odd
//! bytes), from a fixed seed: every answer has a status its route
//! specifies (never a 5xx but `region_unavailable`), an error answer names
//! a known code of that status, nothing is stored, the node's epoch does
//! not move, and a normal write still works afterwards.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::{json, Value};
use singularity_workflow::api::auth::hash_token;
use singularity_workflow::api::client::ApiClient;
use singularity_workflow::api::wire::ErrorCode;
use singularity_workflow::config::TokenSpec;
use singularity_workflow::executor::handlers::Registry;

use crate::harness::*;

const READER: &str = "r-secret";
const WRITER: &str = "w-secret";
const ADMIN: &str = "a-secret";

/// How many requests one run sends.
const REQUESTS: usize = 2000;

fn token(name: &str, secret: &str, scopes: &[&str]) -> TokenSpec {
    TokenSpec {
        name: name.into(),
        sha256: hash_token(secret),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

fn pick<'a, T>(rng: &mut StdRng, xs: &'a [T]) -> &'a T {
    &xs[rng.random_range(0..xs.len())]
}

/// Bytes a header value may hold (visible ASCII, space, tab, obs-text).
fn odd_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| loop {
            let b: u8 = rng.random();
            if b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80 {
                break b;
            }
        })
        .collect()
}

/// A string for a header: plausible, empty, long, or odd bytes.
fn header_text(rng: &mut StdRng, plausible: &[&str]) -> Vec<u8> {
    match rng.random_range(0..10) {
        0 => Vec::new(),
        1 => "x".repeat(rng.random_range(1000..9000)).into_bytes(),
        2 | 3 => {
            let len = rng.random_range(1..80);
            odd_bytes(rng, len)
        }
        _ => pick(rng, plausible).as_bytes().to_vec(),
    }
}

/// Percent-encodes every byte but unreserved ones, so odd bytes reach the
/// server as a path segment.
fn segment(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A path parameter: a plausible value, a valid id of nothing, or junk.
fn param(rng: &mut StdRng, plausible: &[String]) -> String {
    match rng.random_range(0..12) {
        0 => segment(b""),
        1 => "z".repeat(rng.random_range(200..5000)),
        2 => segment(
            &(0..rng.random_range(1..40))
                .map(|_| rng.random())
                .collect::<Vec<u8>>(),
        ),
        3 => segment("💥/../%00".as_bytes()),
        4 => "..".into(),
        5 => uuid::Uuid::nil().to_string(),
        6 => format!("{{{}}}", uuid::Uuid::new_v4()),
        7 => segment(b"\0"),
        8 | 9 => uuid::Uuid::new_v4().to_string(),
        _ => pick(rng, plausible).clone(),
    }
}

/// The routes, as the generator and the checks see them.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    Workflows,
    Run,
    Lineage,
    Cancel,
    Regions,
    Drills,
    Drill,
    QueueAction,
    Health,
    Ready,
    Info,
    Metrics,
    Nowhere,
}

const ROUTES: [Route; 13] = [
    Route::Workflows,
    Route::Run,
    Route::Lineage,
    Route::Cancel,
    Route::Regions,
    Route::Drills,
    Route::Drill,
    Route::QueueAction,
    Route::Health,
    Route::Ready,
    Route::Info,
    Route::Metrics,
    Route::Nowhere,
];

impl Route {
    /// The method the route is called with, when called properly.
    fn method(self) -> Method {
        match self {
            Route::Workflows | Route::Cancel | Route::Drills | Route::QueueAction => Method::POST,
            _ => Method::GET,
        }
    }

    /// Whether a GET (or HEAD) of this path may succeed. Nothing else may:
    /// every write the generator sends must be refused.
    fn readable(self) -> bool {
        !matches!(
            self,
            Route::Cancel | Route::QueueAction | Route::Nowhere | Route::Drill
        )
    }
}

/// One generated request.
struct Call {
    route: Route,
    method: Method,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Vec<u8>>,
}

impl Call {
    fn describe(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let v = String::from_utf8_lossy(v.as_bytes());
                format!("{n}: {}", v.chars().take(80).collect::<String>())
            })
            .collect();
        format!(
            "{} {} {headers:?} body {:?}",
            self.method,
            self.path.chars().take(120).collect::<String>(),
            self.body.as_ref().map(|b| String::from_utf8_lossy(b)
                .chars()
                .take(120)
                .collect::<String>())
        )
    }
}

/// The authorization forms and whether each may carry a token that can
/// write (then the body is made invalid, so nothing can be stored).
fn authorization(rng: &mut StdRng) -> (Option<Vec<u8>>, bool) {
    let secret = *pick(rng, &[READER, READER, WRITER, WRITER, ADMIN, "nope", ""]);
    let writes = secret == WRITER || secret == ADMIN;
    let v = match rng.random_range(0..30) {
        0 => return (None, false),
        12.. => format!("Bearer {secret}").into_bytes(),
        4 => format!("bearer {secret}").into_bytes(),
        5 => format!("BEARER  {secret}").into_bytes(),
        6 => format!("Basic {secret}").into_bytes(),
        7 => format!("Bearer {secret} {secret}").into_bytes(),
        8 => b"Bearer".to_vec(),
        9 => {
            let mut v = b"Bearer ".to_vec();
            let len = rng.random_range(1..200);
            v.extend(odd_bytes(rng, len));
            v
        }
        10 => format!("Bearer {}", "t".repeat(rng.random_range(100..8000))).into_bytes(),
        _ => format!("Token {secret}").into_bytes(),
    };
    (Some(v), writes)
}

/// A body for a write: never one that could be stored when `writes`.
fn body(rng: &mut StdRng, route: Route, writes: bool, queues: &[String]) -> Option<Vec<u8>> {
    let key = String::from_utf8_lossy(&header_text(rng, &["k1", "same-key", ""])).to_string();
    let queue = pick(rng, queues).clone();
    let v = match rng.random_range(0..8) {
        0 => return None,
        1 => {
            let len = rng.random_range(0..64);
            return Some((0..len).map(|_| rng.random()).collect());
        }
        2 => return Some(vec![b'x'; 20_000]),
        3 => json!({}),
        4 if route == Route::Drills => json!({"kind": "switchover", "to": format!("zz{key}")}),
        4 => json!({"kind": pick(rng, &["failover", "switchover", "nope"]), "to": queue}),
        // A workflow that fails validation, carrying odd keys and queues.
        5 | 6 => json!({"goal": "fuzz", "idempotency_key": key, "steps": [
            {"id": "a", "handler": "no-such-handler", "queue": queue}]}),
        // A valid workflow: only for callers that cannot write.
        _ if !writes => json!({"goal": "fuzz", "idempotency_key": key, "steps": [
            {"id": "a", "handler": "noop", "queue": queue}]}),
        _ => json!({"goal": "fuzz", "steps": []}),
    };
    Some(serde_json::to_vec(&v).unwrap())
}

fn generate(rng: &mut StdRng, run_id: &str) -> Call {
    let route = *pick(rng, &ROUTES);
    let methods = [
        "GET",
        "POST",
        "PUT",
        "DELETE",
        "PATCH",
        "HEAD",
        "OPTIONS",
        "BREW",
        "X-ODD-METHOD",
    ];
    let method = if rng.random_bool(0.7) {
        route.method()
    } else {
        Method::from_bytes(pick(rng, &methods).as_bytes()).unwrap()
    };
    let upper = run_id.to_uppercase();
    // The real run may be read, never cancelled.
    let run_ids: Vec<String> = if route == Route::Cancel {
        vec![uuid::Uuid::new_v4().to_string()]
    } else {
        vec![run_id.to_string(), upper]
    };
    let queues = [
        "default".to_string(),
        "q".repeat(300),
        "Queue-With.Odd/Chars".to_string(),
        "ünïcode".to_string(),
        "a b".to_string(),
    ];
    let path = match route {
        Route::Workflows => {
            let q = [
                "",
                "?limit=0",
                "?limit=-1",
                "?limit=99999999999999999999",
                "?status=nope",
                "?after=%FF%FE",
                "?after=zzz",
                "?status=running&limit=1",
            ];
            format!("/v1/workflows{}", pick(rng, &q))
        }
        Route::Run => format!("/v1/workflows/{}", param(rng, &run_ids)),
        Route::Lineage => format!("/v1/workflows/{}/lineage", param(rng, &run_ids)),
        Route::Cancel => format!("/v1/workflows/{}/cancel", param(rng, &run_ids)),
        Route::Regions => "/v1/regions".into(),
        Route::Drills => "/v1/admin/drills".into(),
        Route::Drill => format!("/v1/admin/drills/{}", param(rng, &["1".into()])),
        Route::QueueAction => format!(
            "/v1/queues/{}/{}",
            param(rng, &queues),
            pick(rng, &["pause", "resume"])
        ),
        Route::Health => "/health".into(),
        Route::Ready => "/health/ready".into(),
        Route::Info => "/health/info".into(),
        Route::Metrics => "/metrics".into(),
        Route::Nowhere => format!("/{}", param(rng, &["v1".into()])),
    };
    let mut headers = Vec::new();
    let mut add = |name: &str, v: Vec<u8>| {
        if let Ok(v) = HeaderValue::from_bytes(&v) {
            headers.push((HeaderName::from_bytes(name.as_bytes()).unwrap(), v));
        }
    };
    let (auth, writes) = authorization(rng);
    // A queue pause is a write with no body to spoil: never send it a
    // token that may write.
    let writes_blocked = route == Route::QueueAction && writes;
    if let Some(a) = auth.filter(|_| !writes_blocked) {
        add("authorization", a.clone());
        if rng.random_bool(0.05) {
            add("authorization", b"Bearer nope".to_vec());
        }
    }
    if rng.random_bool(0.5) {
        let t = header_text(
            rng,
            &[
                "1-0/0",
                "999999-0/0",
                "999999-FFFFFFFF/FFFFFFFF",
                "E-FFFFFFFF/FFFFFFFF",
                "-1-0/0",
                "0-0/0",
                "1-",
                "1-0/0 ",
                "18446744073709551615-0/0",
                "9223372036854775807-FFFFFFFF/FFFFFFFF",
                "1-ZZZ/1",
                "1-0/0,2-0/0",
            ],
        );
        add("swf-consistency-token", t);
    }
    if rng.random_bool(0.3) {
        let r = header_text(rng, &["us-east", "eu-west", "US-EAST", "mars", "us-east "]);
        add("swf-region", r);
    }
    if rng.random_bool(0.1) {
        let f = header_text(rng, &["us-east-1", "someone"]);
        add("swf-forwarded-by", f);
    }
    if rng.random_bool(0.3) {
        let c = header_text(
            rng,
            &["application/json", "text/plain", "multipart/form-data"],
        );
        add("content-type", c);
    }
    if rng.random_bool(0.2) {
        let name = format!("x-fuzz-{}", rng.random_range(0..1000));
        let v = header_text(rng, &["1"]);
        add(&name, v);
    }
    let body = (method == Method::POST || method == Method::PUT || method == Method::PATCH)
        .then(|| body(rng, route, writes && !writes_blocked, &queues))
        .flatten();
    Call {
        route,
        method,
        path,
        headers,
        body,
    }
}

/// Why an answer breaks the API's contract, if it does.
fn violation(call: &Call, status: u16, body: &[u8]) -> Option<String> {
    let read = call.route.readable() && (call.method == Method::GET || call.method == Method::HEAD);
    let allowed: &[u16] = if read {
        &[200, 400, 401, 403, 404, 405, 413, 503, 508]
    } else if call.route == Route::Drills {
        &[400, 401, 403, 404, 405, 409, 413, 503, 508]
    } else {
        &[400, 401, 403, 404, 405, 413, 503, 508]
    };
    if !allowed.contains(&status) {
        return Some(format!("status {status} not among {allowed:?}"));
    }
    // 405 comes from the router without a body; HEAD answers have none.
    if status < 400 || status == 405 || call.method == Method::HEAD {
        return None;
    }
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return Some(format!(
                "error answer is not JSON: {:?}",
                String::from_utf8_lossy(body)
            ))
        }
    };
    let code = v["error"]["code"].clone();
    match serde_json::from_value::<ErrorCode>(code.clone()) {
        Ok(c) if c != ErrorCode::Unknown && c.status() == status => {}
        _ => {
            return Some(format!(
                "error code {code} does not fit status {status}: {v}"
            ))
        }
    }
    if status == 503 && code != "region_unavailable" {
        return Some(format!("503 other than region_unavailable: {v}"));
    }
    None
}

#[tokio::test]
async fn generated_headers_and_path_parameters_get_specified_answers_and_change_nothing() {
    let db = fresh_db().await;
    let eu_db = replica_url(&db);
    wait_db(&eu_db).await;
    let (mut cfg, _) = two_regions(&db, &eu_db);
    cfg.enable_executor = false;
    cfg.auth.enabled = true;
    cfg.auth.tokens = vec![
        token("reader", READER, &["read"]),
        token("writer", WRITER, &["read", "submit"]),
        token("admin", ADMIN, &["admin"]),
    ];
    cfg.limits.per_token_rate_per_s = 1_000_000;
    cfg.limits.max_body_bytes = 16 * 1024;
    let node = start_node(cfg, Registry::with_builtins()).await;
    let writer = Api::with_client(
        ApiClient::builder(&node.url())
            .bearer(Some(WRITER))
            .unwrap()
            .build(),
    );
    let run_id = writer
        .submit(&json!({"goal": "before", "steps": [{"id": "a", "handler": "noop"}]}))
        .await;
    let pool = sql(&db).await;
    let counts = || async {
        let queues: i64 = sqlx::query_scalar("SELECT count(*) FROM pgmq.meta")
            .fetch_one(&pool)
            .await
            .unwrap();
        let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM swf.cluster_state")
            .fetch_one(&pool)
            .await
            .unwrap();
        (stored(&db).await, queues, epoch)
    };
    let before = counts().await;
    let epoch = writer.get("/health/info").await.body["epoch"].clone();
    assert!(epoch.is_u64(), "{epoch}");

    let http = reqwest::Client::new();
    let mut rng = StdRng::seed_from_u64(0x000f_0220);
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..REQUESTS {
        let call = generate(&mut rng, &run_id);
        let mut req = http.request(call.method.clone(), format!("{}{}", node.url(), call.path));
        for (n, v) in &call.headers {
            req = req.header(n, v);
        }
        if let Some(b) = &call.body {
            req = req.body(b.clone());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} failed: {e}: {}", call.describe()));
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        if let Some(why) = violation(&call, status, &body) {
            panic!("request {i}: {why}\n  {}", call.describe());
        }
        *by_status.entry(status).or_default() += 1;
    }
    eprintln!("answers by status: {by_status:?}");
    // The generator reached the interesting answers.
    for s in [200, 400, 401, 403, 404, 405, 413] {
        assert!(by_status.contains_key(&s), "no {s} among {by_status:?}");
    }

    assert_eq!(
        counts().await,
        before,
        "stored runs, steps, queues or the epoch changed"
    );
    let info = writer.get("/health/info").await;
    assert_eq!(info.body["epoch"], epoch, "the node's epoch moved");
    assert_eq!(writer.status(&run_id).await["status"], "running");
    // A normal write and a read with its token still work.
    let a = writer
        .post(
            "/v1/workflows",
            &json!({"goal": "after", "steps": [{"id": "a", "handler": "noop"}]}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let token = a.header("swf-consistency-token").unwrap().to_string();
    let id = a.body["run_id"].as_str().unwrap();
    let read = writer
        .send(
            writer
                .http
                .get(format!("{}/v1/workflows/{id}", writer.base))
                .header("swf-consistency-token", token),
        )
        .await;
    assert_eq!(read.status, 200, "{}", read.body);
    pool.close().await;
}

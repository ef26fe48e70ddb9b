//! The dashboard (`/ui/`, DESIGN 10.3) in a real headless Chromium: each
//! page loads without console errors and shows what the API says (regions,
//! epoch, lag; a run's steps in its SVG DAG with the failed one marked; a
//! drill's RTO), its buttons act (retry, schedule pause, a drill started from
//! the page), and with auth on it asks for a token.
//!
//! With `SWF_UI_SCREENSHOTS=<dir>` the pages are also saved as PNG there
//! (the README's pictures come from this).

use serde_json::{json, Value};
use singularity_workflow::dev::{DevCluster, DevOptions};
use singularity_workflow::executor::handlers::Registry;

use crate::browser::Browser;
use crate::harness::*;

fn failing_diamond() -> Value {
    json!({"goal": "failing diamond", "input": {"n": 1}, "steps": [
        {"id": "fetch", "handler": "noop", "input": {"x": 1}},
        {"id": "transform", "handler": "echo", "depends_on": ["fetch"]},
        {"id": "validate", "handler": "fail", "depends_on": ["fetch"],
         "input": {"message": "schema check failed"}, "max_attempts": 2},
        {"id": "publish", "handler": "noop", "depends_on": ["transform", "validate"]}]})
}

/// Fails the test with the page's console errors, if it logged any.
async fn no_console_errors(b: &Browser, page: &str) {
    let errors = b.console_errors().await;
    assert!(
        errors.is_empty(),
        "{page} logged console errors: {errors:?}"
    );
}

async fn shot(b: &Browser, name: &str) {
    if let Ok(dir) = std::env::var("SWF_UI_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        b.screenshot(&std::path::Path::new(&dir).join(format!("{name}.png")))
            .await;
    }
}

/// The milliseconds as the page writes them (ui/dom.js `ms`).
fn shown_ms(v: u64) -> String {
    if v < 1000 {
        format!("{v} ms")
    } else if v < 10_000 {
        format!("{:.2} s", v as f64 / 1000.0)
    } else {
        format!("{:.1} s", v as f64 / 1000.0)
    }
}

#[tokio::test]
async fn the_dashboard_shows_regions_runs_dags_queues_schedules_and_drills() {
    let dir = std::env::temp_dir().join(format!("swf-ui-{}", uuid::Uuid::new_v4().simple()));
    let c = DevCluster::start(
        &DevOptions {
            data_dir: dir.clone(),
            regions: vec!["us-east".into(), "eu-west".into()],
            base_port: 0,
            wan_latency_ms: 0,
            fresh: true,
            tls: false,
            pool_size: None,
            ha: None,
        },
        Registry::with_builtins(),
    )
    .await
    .expect("start a two-region cluster");
    let base = c.cluster.regions[0].api_url.clone();
    let api = Api::new(&base);

    // A failed diamond, a map over three items, a schedule, a hostile goal.
    let failed = api.submit(&failing_diamond()).await;
    let map = api
        .submit(
            &json!({"goal": "resize", "input": ["a.png", "b.png", "c.png"], "steps": [
            {"id": "resize", "handler": "echo", "map": "$run"},
            {"id": "report", "handler": "echo", "depends_on": ["resize"]}]}),
        )
        .await;
    let hostile = api
        .submit(&json!({"goal": "<img src=x onerror=\"window.pwned=1\">", "steps": [
            {"id": "x", "handler": "noop", "input": "<b>bold</b><script>window.pwned=1</script>"}]}))
        .await;
    for run in [&failed, &map, &hostile] {
        api.wait_terminal(run, 30).await;
    }
    let s = api
        .post(
            "/v1/schedules",
            &json!({"name": "nightly", "cron": "0 3 * * *",
                    "workflow": {"goal": "nightly", "steps": [{"id": "a", "handler": "noop"}]}}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.body);

    let b = Browser::start().await;

    // Overview: both regions with their role, the epoch, lag, nodes, queues.
    b.goto(&format!("{base}/ui/")).await;
    b.wait_js(
        "both regions drawn",
        30,
        "return document.querySelectorAll('.region[data-region]').length === 2",
    )
    .await;
    let regions = api.get("/v1/regions").await.body;
    assert_eq!(
        b.text(".epoch").await,
        regions["epoch"].to_string(),
        "the epoch shown"
    );
    assert_eq!(b.text(".write-region").await, "us-east");
    let us = b.text(".region[data-region='us-east']").await;
    let eu = b.text(".region[data-region='eu-west']").await;
    assert!(us.contains("primary") && us.contains("us-east-1"), "{us}");
    assert!(
        eu.contains("replica") && eu.contains("eu-west-1") && eu.contains("replay lag"),
        "{eu}"
    );
    assert!(us.contains("default (default)"), "pools of us-east-1: {us}");
    // The lag charts gain a sample per refresh.
    b.wait_js(
        "a lag chart per region with three samples",
        20,
        "const c = [...document.querySelectorAll('.region svg.spark')]; \
         return c.length === 2 && c.every(x => Number(x.dataset.samples) >= 3)",
    )
    .await;
    assert!(b.text("table.queues").await.contains("default"));
    no_console_errors(&b, "/ui/").await;
    shot(&b, "overview").await;

    // Runs: the list, then filtered to failed ones.
    b.goto(&format!("{base}/ui/runs")).await;
    b.wait_text("table.runs", &failed, 15).await;
    b.exec(
        "const s = document.getElementById('status-filter'); s.value = 'failed'; \
         s.dispatchEvent(new Event('change'));",
        vec![],
    )
    .await;
    b.wait_js(
        "the failed filter applied",
        15,
        "return location.search.includes('status=failed') && \
                document.querySelectorAll('table.runs tbody tr').length === 1",
    )
    .await;
    assert!(b.text("table.runs").await.contains(&failed));
    no_console_errors(&b, "/ui/runs").await;

    // A run: four steps in the SVG, the failed one marked, its attempts.
    b.goto(&format!("{base}/ui/runs/{failed}")).await;
    let steps = b
        .wait_js(
            "the DAG drawn",
            15,
            "const g = [...document.querySelectorAll('svg.dag g.step')]; \
             return g.length ? g.map(x => x.dataset.step + ':' + x.getAttribute('class')) : null",
        )
        .await;
    let steps: Vec<String> = serde_json::from_value(steps).unwrap();
    assert_eq!(steps.len(), 4, "{steps:?}");
    for (id, status) in [
        ("fetch", "st-completed"),
        ("transform", "st-completed"),
        ("validate", "st-failed"),
        ("publish", "st-cancelled"),
    ] {
        assert!(
            steps
                .iter()
                .any(|s| s.starts_with(&format!("{id}:")) && s.contains(status)),
            "{id} not drawn as {status}: {steps:?}"
        );
    }
    let edges = b
        .exec(
            "return document.querySelectorAll('svg.dag path.edge').length",
            vec![],
        )
        .await;
    assert_eq!(edges, json!(4), "the diamond's four edges");
    // The failed step is shown first: both attempts with node and region.
    let detail = b.text(".step-detail").await;
    assert!(detail.contains("validate") && detail.contains("schema check failed"));
    let lineage = api.lineage(&failed).await;
    for (_, node, region) in attempts_of(&lineage, "validate") {
        assert!(
            detail.contains(&node) && detail.contains(&region),
            "{node} {region}"
        );
    }
    no_console_errors(&b, "/ui/runs/<failed>").await;
    shot(&b, "run").await;
    // Retry from the page: the run runs again, with new attempts.
    let before = api.status(&failed).await["metrics"]["total_attempts"]
        .as_u64()
        .unwrap();
    b.click("button[data-action='retry']").await;
    wait_for("the retry's attempts", 30, || {
        let api = &api;
        let failed = &failed;
        async move {
            let s = api.status(failed).await;
            (s["status"] == "failed" && s["metrics"]["total_attempts"].as_u64() > Some(before))
                .then_some(())
        }
    })
    .await;

    // A map step is one vertex with its item count.
    b.goto(&format!("{base}/ui/runs/{map}")).await;
    let vertices = b
        .wait_js(
            "the map run drawn",
            15,
            "const g = [...document.querySelectorAll('svg.dag g.step')]; \
             return g.length ? g.map(x => x.textContent) : null",
        )
        .await;
    let vertices: Vec<String> = serde_json::from_value(vertices).unwrap();
    assert_eq!(vertices.len(), 2, "{vertices:?}");
    assert!(
        vertices
            .iter()
            .any(|v| v.contains("resize") && v.contains("3/3 items")),
        "{vertices:?}"
    );
    no_console_errors(&b, "/ui/runs/<map>").await;

    // What a run says is text, never markup.
    b.goto(&format!("{base}/ui/runs/{hostile}")).await;
    b.wait_text(".summary", "<img src=x", 15).await;
    let injected = b
        .exec(
            "return [document.querySelectorAll('main img, main b, main script').length, \
                     !!window.pwned, document.querySelector('main').innerText.includes('<b>bold</b>')]",
            vec![],
        )
        .await;
    assert_eq!(injected, json!([0, false, true]));

    // Queues and schedules.
    b.goto(&format!("{base}/ui/queues")).await;
    b.wait_text("table.queues", "default", 15).await;
    no_console_errors(&b, "/ui/queues").await;
    b.goto(&format!("{base}/ui/schedules")).await;
    b.wait_text("table.schedules", "nightly", 15).await;
    b.click("tr[data-schedule='nightly'] button[data-action='pause']")
        .await;
    wait_for("the schedule paused from the page", 15, || {
        let api = &api;
        async move { (api.get("/v1/schedules/nightly").await.body["paused"] == true).then_some(()) }
    })
    .await;
    no_console_errors(&b, "/ui/schedules").await;

    // A switchover started from the Drills page (the button asks once
    // more), then the page shows it with the RTO its report has.
    b.goto(&format!("{base}/ui/drills")).await;
    b.wait_text("main", "no drill yet", 15).await;
    assert_eq!(
        b.exec("return document.getElementById('drill-to').value", vec![])
            .await,
        json!("eu-west")
    );
    b.click("#drill-start").await;
    b.wait_text("#drill-start", "sure?", 5).await;
    b.click("#drill-start").await;
    let journal = wait_for("the drill started from the page to finish", 120, || {
        let api = &api;
        async move {
            let j = api.get("/v1/admin/drills").await.body;
            (j["drills"][0]["state"] == "ok").then_some(j)
        }
    })
    .await;
    let report = &journal["drills"][0]["report"];
    assert_eq!(report["to_region"], "eu-west", "{report}");
    assert!(report["acknowledged_writes"].as_u64() > Some(0), "{report}");
    let rto = report["rto_ms"].as_u64().unwrap();
    let phases = report["phases"].as_array().unwrap().len();
    b.wait_text("#drill-start + span", "done: RTO", 30).await;
    b.goto(&format!("{base}/ui/drills")).await;
    let row = b.wait_text("table.drills", "switchover", 30).await;
    assert!(
        row.contains("us-east → eu-west") && row.contains("ok"),
        "{row}"
    );
    assert_eq!(b.text("table.drills td.rto").await, shown_ms(rto));
    assert_eq!(b.text(".stat.rto .big").await, shown_ms(rto));
    let bars = b
        .exec(
            "return document.querySelectorAll('.timeline rect.bar').length",
            vec![],
        )
        .await;
    assert_eq!(bars, json!(phases), "one bar per phase");
    no_console_errors(&b, "/ui/drills").await;
    shot(&b, "drills").await;

    // The overview follows the move: eu-west now takes the writes.
    b.goto(&format!("{base}/ui/")).await;
    b.wait_text(".write-region", "eu-west", 30).await;
    let epoch = api.get("/v1/regions").await.body["epoch"].clone();
    b.wait_text(".epoch", &epoch.to_string(), 15).await;
    no_console_errors(&b, "/ui/ after the drill").await;

    drop(b);
    c.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn with_auth_on_the_dashboard_asks_for_a_token_and_offers_only_what_its_scopes_allow() {
    let db = fresh_db().await;
    let mut cfg = node_config("ui-auth", &db);
    cfg.auth.enabled = true;
    cfg.auth.tokens = vec![
        token("reader", "r-secret", &["read"]),
        token("ops", "a-secret", &["admin"]),
    ];
    let node = start_node(cfg, Registry::with_builtins()).await;
    let base = node.url();
    let run = {
        let api = Api::with_client(
            singularity_workflow::api::client::ApiClient::builder(&base)
                .bearer(Some("a-secret"))
                .unwrap()
                .build(),
        );
        let run = api.submit(&failing_diamond()).await;
        api.wait_terminal(&run, 30).await;
        run
    };
    // The page itself needs no token; /v1 does.
    let page = reqwest::get(format!("{base}/ui/runs/{run}")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page
        .headers()
        .get("content-security-policy")
        .is_some_and(|v| v.to_str().unwrap().contains("default-src 'none'")));

    let b = Browser::start().await;
    b.goto(&format!("{base}/ui/runs/{run}")).await;
    b.wait_js(
        "the token prompt",
        15,
        "return !document.getElementById('login').hidden",
    )
    .await;
    // A wrong token is refused and not kept.
    b.exec(
        "document.getElementById('login-token').value = 'wrong'; \
         document.getElementById('login-form').requestSubmit();",
        vec![],
    )
    .await;
    b.wait_text("#login-error", "refused", 15).await;
    let kept = b
        .exec("return sessionStorage.getItem('swf-token')", vec![])
        .await;
    assert_eq!(kept, Value::Null);
    // A read token shows the run, without actions, and no drills.
    b.exec(
        "document.getElementById('login-token').value = 'r-secret'; \
         document.getElementById('login-form').requestSubmit();",
        vec![],
    )
    .await;
    b.wait_js(
        "the run drawn for the reader",
        15,
        "return document.querySelectorAll('svg.dag g.step').length === 4",
    )
    .await;
    assert!(b.text("#who").await.contains("reader"));
    assert!(b.text(".toolbar").await.contains("read-only token"));
    let buttons = b
        .exec(
            "return document.querySelectorAll('button[data-action]').length",
            vec![],
        )
        .await;
    assert_eq!(buttons, json!(0));
    b.goto(&format!("{base}/ui/drills")).await;
    b.wait_text("main", "needs a token with the admin scope", 15)
        .await;
    // The token was kept for the tab: a reload did not ask again. The
    // refused logins are the only errors logged (their 401 answers).
    let errors = b.console_errors().await;
    assert!(
        errors.iter().all(|e| e.contains("401")),
        "console errors besides the refused tokens: {errors:?}"
    );
    // An admin token: retry is offered, and the drill form is there.
    b.set_session_storage("swf-token", "a-secret").await;
    b.goto(&format!("{base}/ui/runs/{run}")).await;
    b.wait_js(
        "retry offered to the admin",
        15,
        "return !!document.querySelector(\"button[data-action='retry']\")",
    )
    .await;
    b.goto(&format!("{base}/ui/drills")).await;
    b.wait_text("main", "no drill yet", 15).await;
    no_console_errors(&b, "/ui/drills as admin").await;
    drop(b);
    node.kill().await;
}

#[tokio::test]
async fn a_worker_node_serves_no_dashboard_and_unknown_files_are_404() {
    let db = fresh_db().await;
    let mut cfg = node_config("ui-worker", &db);
    cfg.enable_client = false;
    let worker = start_node(cfg, Registry::with_builtins()).await;
    let r = reqwest::get(format!("{}/ui/", worker.url())).await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "client_role_disabled");
    worker.kill().await;

    let node = start_node(node_config("ui-client", &db), Registry::with_builtins()).await;
    let get = |p: &str| reqwest::get(format!("{}{p}", node.url()));
    let r = get("/ui/assets/nope.js").await.unwrap();
    assert_eq!(r.status(), 404);
    let r = get("/ui/assets/../../etc/passwd").await.unwrap();
    assert!(r.status() == 404 || r.status() == 200, "{}", r.status());
    assert!(!r.text().await.unwrap().contains("root:"));
    let r = get("/ui/assets/app.js").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    // `/ui` leads to the page; any page route answers the page.
    let r = get("/ui/runs/whatever").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("/ui/assets/app.js"));
    node.kill().await;
}

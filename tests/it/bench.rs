//! `swf bench` as a user runs it: the burn-down on its own embedded cluster
//! (JSON shape and that every pre-submitted run completed; never its speed),
//! a short soak (every run ends as it must, and errors make it fail), the
//! remote-region mode, and the flags it refuses.

use std::process::{Command, Stdio};

use serde_json::Value;

fn swf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_swf"))
}

/// Runs `swf bench ARGS`; exit code, stdout, stderr, and the directory its
/// embedded cluster lived in (named after the process id).
fn bench(args: &[&str]) -> (i32, String, String, std::path::PathBuf) {
    let child = swf()
        .arg("bench")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run swf bench");
    let dir = std::env::temp_dir().join(format!("swf-bench-{}", child.id()));
    let out = child.wait_with_output().expect("wait for swf bench");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        dir,
    )
}

fn number(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

/// One run's figures: every run of the backlog completed.
fn assert_run(run: &Value, n: u64) {
    assert_eq!(run["workflows"], n, "{run}");
    assert_eq!(
        run["completed"], n,
        "every pre-submitted run completed: {run}"
    );
    assert_eq!(run["pool"], 32, "{run}");
    assert!(number(&run["seconds"], "seconds") > 0.0, "{run}");
    assert!(
        number(&run["workflows_per_s"], "workflows_per_s") > 0.0,
        "{run}"
    );
    if cfg!(target_os = "linux") {
        let peak = number(&run["rss_mb_peak"], "rss_mb_peak");
        let after = number(&run["rss_mb_after"], "rss_mb_after");
        assert!(peak > 0.0 && after > 0.0, "{run}");
    }
}

#[tokio::test]
async fn burn_down_drains_every_pre_submitted_run() {
    let (code, out, err, dir) =
        tokio::task::spawn_blocking(|| bench(&["--burn-down", "200", "--json"]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_run(&doc["burn_down"], 200);
    assert!(doc["burn_down"].get("repeats").is_none(), "{doc}");
    assert!(number(&doc["machine"]["cores"], "cores") >= 1.0, "{doc}");
    assert!(!dir.exists(), "{} left behind", dir.display());

    // Repeated runs on the same database: each reported, each complete.
    let (code, out, err, _) =
        tokio::task::spawn_blocking(|| bench(&["--burn-down", "50", "--repeat", "2", "--json"]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let b = &doc["burn_down"];
    let repeats = b["repeats"].as_array().expect("repeats listed");
    assert_eq!(repeats.len(), 2, "{doc}");
    for (i, run) in repeats.iter().enumerate() {
        assert_eq!(run["run"], i as u64 + 1, "{run}");
        assert_run(run, 50);
    }
    assert_eq!(b["runs"], 2);
    assert_run(b, 50);
}

#[test]
fn burn_down_refuses_what_it_cannot_measure() {
    for (args, says) in [
        (
            &["--burn-down", "10", "--api", "http://127.0.0.1:9"][..],
            "queues cannot be paused",
        ),
        (&["--burn-down", "0"][..], "--burn-down must be at least 1"),
        (
            &["--burn-down", "10", "--pool-size", "0"][..],
            "--pool-size must be at least 1",
        ),
        (&["--repeat", "2"][..], "--burn-down"),
        (&["--burn-down"][..], "a value is required"),
        (
            &["--burn-down", "10", "--primary-region", "us-east"][..],
            "cannot be used with",
        ),
        (&["--soak", "0"][..], "--soak must be at least 1"),
        (
            &["--soak", "5", "--rate", "0"][..],
            "--rate must be above 0",
        ),
        (
            &["--soak", "5", "--burn-down", "10"][..],
            "cannot be used with",
        ),
        (&["--rate", "5"][..], "--soak"),
        (
            &[
                "--soak",
                "5",
                "--cache-mib",
                "0",
                "--api",
                "http://127.0.0.1:9",
            ][..],
            "cannot be used with",
        ),
    ] {
        let (code, out, err, dir) = bench(args);
        assert_ne!(code, 0, "{args:?} was accepted: {out}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        // Refused before anything started.
        assert!(
            !dir.exists() && !err.contains("starting an embedded cluster"),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test]
async fn a_short_soak_checks_every_run_and_fails_when_calls_fail() {
    let (code, out, err, dir) = tokio::task::spawn_blocking(|| {
        bench(&["--soak", "4", "--rate", "25", "--pool-size", "16", "--json"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}\n{out}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let s = &doc["soak"];
    assert_eq!(s["errors"], 0, "{s}");
    let started = number(&s["started"], "started");
    assert!(started >= 50.0, "{s}");
    assert_eq!(
        s["completed"], s["started"],
        "every run ended as it must: {s}"
    );
    for kind in ["chain", "map", "fail_retry", "cancel", "pause_resume"] {
        assert!(number(&s["by_kind"][kind], kind) >= 1.0, "{kind}: {s}");
    }
    assert_eq!(
        number(&s["token_read_ms"]["samples"], "token reads"),
        started,
        "{s}"
    );
    if cfg!(target_os = "linux") {
        assert!(number(&s["rss_mb_start"], "rss_mb_start") > 0.0, "{s}");
        assert!(number(&s["rss_mb_end"], "rss_mb_end") > 0.0, "{s}");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());

    // Against a node that is not there every submit fails: errors counted
    // by kind, exit code 1.
    let (code, out, err, _) = tokio::task::spawn_blocking(|| {
        bench(&[
            "--soak",
            "1",
            "--rate",
            "5",
            "--api",
            "http://127.0.0.1:9",
            "--json",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{err}\n{out}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let s = &doc["soak"];
    assert_eq!(s["completed"], 0, "{s}");
    assert_eq!(s["errors"], s["started"], "{s}");
    let kinds = s["error_kinds"].as_object().unwrap();
    assert!(kinds.keys().all(|k| k.starts_with("submit:")), "{s}");
    assert_eq!(
        s["rss_mb_start"],
        Value::Null,
        "not this process's node: {s}"
    );
}

/// `--remote-region` on its own two-region cluster: every phase reports a
/// rate for each region, and the ratios are the remote region's over the
/// primary's; the cluster's directory is gone afterwards.
#[tokio::test]
async fn remote_region_reports_each_region_and_their_ratios() {
    let args = [
        "--remote-region",
        "--wan-latency-ms",
        "5",
        "--workflows",
        "200",
        "--callers",
        "4",
        "--json",
    ];
    let (code, out, err, dir) = tokio::task::spawn_blocking(move || bench(&args))
        .await
        .unwrap();
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let r = &v["remote_region"];
    assert_eq!(r["primary_region"], "us-east");
    assert_eq!(r["remote_region"], "eu-west");
    assert_eq!(r["wan_latency_ms"], 5);
    for (phase, ratio) in [
        ("execution", "execution_ratio"),
        ("submit", "submit_ratio"),
        ("batch_submit", "batch_submit_ratio"),
    ] {
        let rate = |region: &str| number(&r[phase][region]["workflows_per_s"], phase);
        let (near, far) = (rate("us-east"), rate("eu-west"));
        assert!(near > 0.0 && far > 0.0, "{phase}: {}", r[phase]);
        let expected = far / near;
        assert!(
            (number(&r[ratio], ratio) - expected).abs() < 0.01,
            "{ratio} {} vs {expected}",
            r[ratio]
        );
    }
    // The remote region's tasks were claimed by its own node, in claims.
    let claims = &r["execution"]["eu-west"]["round_trips"]["claims"];
    assert!(number(&claims["round_trips"], "claims") >= 1.0, "{claims}");
    let pid = dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace("swf-bench-", "");
    let cluster = dir.with_file_name(format!("swf-bench-remote-{pid}"));
    assert!(!cluster.exists(), "{} left behind", cluster.display());
}

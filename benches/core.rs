//! Micro-benchmarks of the pure hot paths: DAG validation (`workflow::validate`),
//! node config parsing (`Config::from_toml_str`), consistency-token verify (HMAC) + compare,
//! and pgmq queue naming (`workflow::mq_name`).
//!
//! Run with `cargo bench --bench core`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use singularity_workflow::config::Config;
use singularity_workflow::model::token::{Lsn, Token, TokenKey};
use singularity_workflow::model::workflow::{mq_name, validate, Limits, WorkflowSpec};

fn step(id: &str, deps: &[String]) -> Value {
    json!({ "id": id, "handler": "noop", "depends_on": deps })
}

fn spec(steps: Vec<Value>) -> WorkflowSpec {
    serde_json::from_value(json!({ "goal": "bench", "steps": steps })).expect("valid spec")
}

/// a -> {b, c} -> d
fn diamond() -> WorkflowSpec {
    let a = vec!["a".to_string()];
    let bc = vec!["b".to_string(), "c".to_string()];
    spec(vec![
        step("a", &[]),
        step("b", &a),
        step("c", &a),
        step("d", &bc),
    ])
}

/// s0 -> s1 -> ... -> s{n-1}
fn chain(n: usize) -> WorkflowSpec {
    spec(
        (0..n)
            .map(|i| match i {
                0 => step("s0", &[]),
                _ => step(&format!("s{i}"), &[format!("s{}", i - 1)]),
            })
            .collect(),
    )
}

/// src -> {m1 .. m(n-2)} -> sink, n steps in all
fn fan_out_in(n: usize) -> WorkflowSpec {
    let src = vec!["src".to_string()];
    let mids: Vec<String> = (1..n - 1).map(|i| format!("m{i}")).collect();
    let mut steps = vec![step("src", &[])];
    steps.extend(mids.iter().map(|m| step(m, &src)));
    steps.push(step("sink", &mids));
    spec(steps)
}

const HYBRID_TOML: &str = r#"
node_id = "us-east-1"
region = "us-east"
write_region = "us-west"
enable_client = true
enable_executor = true
regions_file = "regions/local.toml"

[api]
listen = "0.0.0.0:4001"
public_url = "https://us-east-1.swf.example:4001/"

[database]
url = "postgresql://swf:secret@db.us-east.internal:5432/swf"
max_connections = 32

[worker_pools.default]
size = 16
queue = "default"

[worker_pools.gpu]
size = 2
queue = "gpu_tasks"

[executor]
heartbeat_interval_ms = 5000
poll_interval_ms = 250
lease_ms = 30000
claim_batch = 8

[limits]
max_steps = 1000
max_body_bytes = 1048576

[handlers]
shell_allow = ["/usr/bin/echo", "/opt/swf/bin/"]
http_allow = ["https://api.example.com/"]
"#;

fn bench_validate(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("validate");
    for (name, spec) in [
        ("diamond_4", diamond()),
        ("chain_100", chain(100)),
        ("fan_out_in_1000", fan_out_in(1000)),
    ] {
        validate(&spec, &limits, |h, _| h == "noop", |_| true).expect("spec validates");
        g.bench_function(name, |b| {
            b.iter(|| validate(black_box(&spec), &limits, |h, _| h == "noop", |_| true))
        });
    }
    g.finish();
}

fn bench_config(c: &mut Criterion) {
    let loaded = Config::from_toml_str(HYBRID_TOML, "node.toml", &[]).expect("config loads");
    assert_eq!(loaded.config.worker_pools.len(), 2);
    c.bench_function("config/from_toml_str_hybrid", |b| {
        b.iter(|| Config::from_toml_str(black_box(HYBRID_TOML), "node.toml", &[]))
    });
}

fn bench_token(c: &mut Criterion) {
    let replayed = Lsn(0x1E8_6000);
    let key = TokenKey::new(&[7; 32]).expect("a 32-byte key");
    let signed = key.sign(&Token {
        epoch: 3,
        lsn: Lsn(0x1E859B0),
    });
    c.bench_function("token/verify_and_satisfied_by", |b| {
        b.iter(|| {
            let t = key.verify(black_box(&signed)).expect("signed token");
            t.satisfied_by(black_box(3), black_box(replayed))
        })
    });
}

fn bench_mq_name(c: &mut Criterion) {
    let mut g = c.benchmark_group("mq_name");
    g.bench_function("short", |b| {
        b.iter(|| mq_name(black_box("default"), black_box(Some("us-east"))))
    });
    g.bench_function("long", |b| {
        b.iter(|| {
            mq_name(
                black_box("Image-Thumbnail-Generation-High-Priority-Batch"),
                black_box(Some("eu-central-frankfurt-2")),
            )
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_validate,
    bench_config,
    bench_token,
    bench_mq_name
);
criterion_main!(benches);

//! `GET /openapi.json`: the OpenAPI 3.1 document of every `/v1` route.
//!
//! Schemas are generated from the wire types themselves (`schemars`, JSON
//! Schema 2020-12, which OpenAPI 3.1 uses as is), so a field added to a
//! wire type is in the document without anyone writing it twice. Each
//! route's scope comes from the route table; the operations below name
//! each route's body, answer and query parameters, and a test fails when a
//! route of the table has no operation here (or the other way round).

use std::sync::OnceLock;

use axum::http::Method;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::api::access::RouteAccess;
use crate::api::auth::{Access, Scope};
use crate::api::wire::{
    BatchRequest, BatchSubmitted, BulkCancelRequest, BulkCancelled, Cancelled, DrillList,
    DrillRecord, DrillReport, DrillRequest, ErrorBody, PausedRun, QueueList, QueuePaused,
    RecoverReport, Regions, Retried, RunLineage, RunList, RunStatus, ScheduleInfo, ScheduleList,
    ScheduleRequest, SignalRequest, Signalled, Submitted, WhoAmI, WorkflowSpec,
};

type SchemaFn = fn(&mut SchemaGenerator) -> Value;

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Value {
    g.subschema_for::<T>().to_value()
}

/// One operation: a route's method and template, what it does, its body,
/// its success status and answer (None: no body), its query parameters.
struct Op {
    method: Method,
    path: &'static str,
    summary: &'static str,
    body: Option<SchemaFn>,
    ok: u16,
    answer: Option<SchemaFn>,
    query: &'static [(&'static str, &'static str)],
}

fn op(method: Method, path: &'static str, summary: &'static str) -> Op {
    Op {
        method,
        path,
        summary,
        body: None,
        ok: 200,
        answer: None,
        query: &[],
    }
}

impl Op {
    fn body(mut self, f: SchemaFn) -> Op {
        self.body = Some(f);
        self
    }
    fn answer(mut self, ok: u16, f: SchemaFn) -> Op {
        self.ok = ok;
        self.answer = Some(f);
        self
    }
    fn empty(mut self, ok: u16) -> Op {
        self.ok = ok;
        self
    }
    fn query(mut self, q: &'static [(&'static str, &'static str)]) -> Op {
        self.query = q;
        self
    }
}

fn operations() -> Vec<Op> {
    use Method as M;
    vec![
        op(
            M::POST,
            "/v1/workflows",
            "Submit a workflow (201 new; 200 when its idempotency key names a run already)",
        )
        .body(schema::<WorkflowSpec>)
        .answer(201, schema::<Submitted>),
        op(
            M::POST,
            "/v1/workflows/batch",
            "Submit up to limits.max_batch workflows in one transaction",
        )
        .body(schema::<BatchRequest>)
        .answer(201, schema::<BatchSubmitted>),
        op(M::GET, "/v1/workflows", "List runs, newest first")
            .answer(200, schema::<RunList>)
            .query(&[
                ("status", "only runs of this status"),
                ("limit", "1 to 1000 (default 50)"),
                ("after", "the cursor `next` of the previous page"),
            ]),
        op(M::GET, "/v1/workflows/{run_id}", "A run's status document")
            .answer(200, schema::<RunStatus>),
        op(
            M::GET,
            "/v1/workflows/{run_id}/lineage",
            "A run's DAG and every attempt",
        )
        .answer(200, schema::<RunLineage>),
        op(
            M::POST,
            "/v1/workflows/{run_id}/retry",
            "Run a failed or cancelled run's unfinished steps again",
        )
        .answer(200, schema::<Retried>),
        op(
            M::POST,
            "/v1/workflows/{run_id}/pause",
            "Pause a run: it starts no new task",
        )
        .answer(200, schema::<PausedRun>),
        op(
            M::POST,
            "/v1/workflows/{run_id}/resume",
            "Resume a paused run",
        )
        .answer(200, schema::<PausedRun>),
        op(
            M::POST,
            "/v1/workflows/{run_id}/signals/{name}",
            "Send a signal to the run's wait_for steps",
        )
        .body(schema::<SignalRequest>)
        .answer(200, schema::<Signalled>),
        op(
            M::POST,
            "/v1/workflows/cancel",
            "Cancel every run a filter names",
        )
        .body(schema::<BulkCancelRequest>)
        .answer(200, schema::<BulkCancelled>),
        op(M::POST, "/v1/workflows/{run_id}/cancel", "Cancel a run")
            .answer(200, schema::<Cancelled>),
        op(
            M::GET,
            "/v1/queues",
            "Every queue: depth, in flight, delayed, parked, oldest age, paused",
        )
        .answer(200, schema::<QueueList>),
        op(
            M::POST,
            "/v1/queues/{name}/pause",
            "Stop claims of a queue's tasks on every node",
        )
        .answer(200, schema::<QueuePaused>),
        op(M::POST, "/v1/queues/{name}/resume", "Resume a paused queue")
            .answer(200, schema::<QueuePaused>),
        op(M::POST, "/v1/schedules", "Create a cron schedule")
            .body(schema::<ScheduleRequest>)
            .answer(201, schema::<ScheduleInfo>),
        op(M::GET, "/v1/schedules", "Every schedule, by name").answer(200, schema::<ScheduleList>),
        op(M::GET, "/v1/schedules/{name}", "One schedule").answer(200, schema::<ScheduleInfo>),
        op(
            M::DELETE,
            "/v1/schedules/{name}",
            "Delete a schedule (its runs stay)",
        )
        .empty(204),
        op(M::POST, "/v1/schedules/{name}/pause", "Pause a schedule")
            .answer(200, schema::<ScheduleInfo>),
        op(
            M::POST,
            "/v1/schedules/{name}/resume",
            "Resume a schedule at its next tick",
        )
        .answer(200, schema::<ScheduleInfo>),
        op(
            M::GET,
            "/v1/regions",
            "Write region, epoch, regions, lag and nodes",
        )
        .answer(200, schema::<Regions>),
        op(
            M::GET,
            "/v1/whoami",
            "Whether auth is on, the caller's token and its scopes",
        )
        .answer(200, schema::<WhoAmI>),
        op(
            M::POST,
            "/v1/admin/drills",
            "Run a switchover or failover drill",
        )
        .body(schema::<DrillRequest>)
        .answer(200, schema::<DrillReport>),
        op(
            M::GET,
            "/v1/admin/drills",
            "The drill journal, newest first",
        )
        .answer(200, schema::<DrillList>),
        op(M::GET, "/v1/admin/drills/{id}", "One drill of the journal")
            .answer(200, schema::<DrillRecord>),
        op(
            M::POST,
            "/v1/admin/drills/recover",
            "Leave exactly one writable primary after an interrupted drill",
        )
        .answer(200, schema::<RecoverReport>),
        op(M::GET, "/openapi.json", "This document").empty(200),
    ]
}

fn scope_name(a: Access) -> Option<&'static str> {
    match a {
        Access::Scope(Scope::Read) => Some("read"),
        Access::Scope(Scope::Submit) => Some("submit"),
        Access::Scope(Scope::Admin) => Some("admin"),
        Access::Open | Access::Metrics | Access::Info => None,
    }
}

/// The document for the routes of `access` (the table's `/v1` routes).
pub fn document(access: &RouteAccess) -> Value {
    let mut g = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "#/components/schemas/".into())
        .into_generator();
    let error = schema::<ErrorBody>(&mut g);
    let mut paths = Map::new();
    for op in operations() {
        let mut parameters: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                       "schema": {"type": "string"}})
            })
            .collect();
        parameters.extend(op.query.iter().map(|(name, what)| {
            json!({"name": name, "in": "query", "required": false, "description": what,
                   "schema": {"type": "string"}})
        }));
        let ok = match op.answer {
            Some(f) => json!({"description": "success",
                              "content": {"application/json": {"schema": f(&mut g)}}}),
            None => json!({"description": "success"}),
        };
        let mut o = json!({
            "summary": op.summary,
            "operationId": operation_id(&op.method, op.path),
            "parameters": parameters,
            "responses": {
                op.ok.to_string(): ok,
                "default": {"description": "an error; `code` names it (each code has one status)",
                            "content": {"application/json": {"schema": error.clone()}}},
            },
        });
        if let Some(f) = op.body {
            o["requestBody"] = json!({"required": true,
                                      "content": {"application/json": {"schema": f(&mut g)}}});
        }
        match scope_name(access.of(&op.method, Some(op.path), op.path)) {
            Some(scope) => {
                o["security"] = json!([{"bearer": []}]);
                o["x-swf-scope"] = json!(scope);
            }
            None => o["security"] = json!([]),
        }
        let item = paths.entry(op.path).or_insert_with(|| json!({}));
        item[op.method.as_str().to_ascii_lowercase()] = o;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "singularity-workflow",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The /v1 API of a node with the client role. Writes answer with a \
                            `swf-consistency-token` header; reads take one back to read their writes.",
        },
        "paths": paths,
        "components": {
            "schemas": g.take_definitions(true),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "an API token (auth.tokens_file)"}},
        },
    })
}

fn operation_id(method: &Method, path: &str) -> String {
    let words: Vec<String> = path
        .split(['/', '.', '{', '}'])
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('_', "-"))
        .collect();
    format!(
        "{}-{}",
        method.as_str().to_ascii_lowercase(),
        words.join("-")
    )
}

/// Every (method, template) with an operation in the document.
pub fn documented() -> Vec<(Method, &'static str)> {
    operations()
        .into_iter()
        .map(|o| (o.method, o.path))
        .collect()
}

static SERVED: OnceLock<String> = OnceLock::new();

/// Makes the document of the routes of `access` the one `/openapi.json`
/// serves (the first router built in the process makes it; every node's
/// routes are the same table).
pub fn publish(access: &RouteAccess) {
    SERVED.get_or_init(|| document(access).to_string());
}

/// The document `/openapi.json` serves.
pub fn served() -> &'static str {
    SERVED.get().map_or("{}", String::as_str)
}

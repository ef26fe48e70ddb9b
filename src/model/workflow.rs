//! Workflow specifications as clients submit them, their validation, and the
//! deterministic mapping of queue and region names onto pgmq queue names.
//!
//! Validation is pure (no I/O) so it is unit-tested as a table and measured
//! in `benches/`. Everything the engine stores has passed through
//! [`validate`] first; the database's constraints are the second line.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Default queue of a step that names none.
pub const DEFAULT_QUEUE: &str = "default";
/// Longest pgmq queue name (pgmq prefixes tables with `q_`/`a_` and partitions
/// with `template_pgmq_q_`; PostgreSQL identifiers stop at 63 bytes).
pub const MQ_MAX_LEN: usize = 47;

/// A workflow as `POST /v1/workflows` receives it.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    pub goal: String,
    #[serde(default)]
    pub steps: Vec<StepSpec>,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub decomposer: Option<String>,
    /// RFC 3339: the run's root steps become ready then (not before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    /// -100..100 (default 0): higher is claimed first within a queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// At most `limit` tasks of runs with this key execute at once,
    /// cluster-wide (each step's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
}

/// `{"key", "limit"}`: a concurrency key and its limit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    pub key: String,
    pub limit: i64,
}

/// `{"signal", "timeout_ms"?}`: a step that completes with a signal's payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitFor {
    pub signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
}

/// One DAG vertex of a [`WorkflowSpec`].
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub id: String,
    /// Required, except on a `wait_for` step (which has none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub handler: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub region: Option<String>,
    /// The step becomes ready this long after its dependencies complete
    /// (a root step: after submit, or after the run's `run_at`), holding
    /// no executor slot meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<i64>,
    /// -100..100; default: the run's priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Default: the run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// `"$run"` or a dependency's id: one task per element of the run's
    /// input or of that dependency's output (an array).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
    /// A step with no handler that completes with a signal's payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<WaitFor>,
}

/// The `map` source that is the run's input.
pub const MAP_RUN: &str = "$run";

/// Limits applied by [`validate`]; the node's `[limits]` config fills them.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_steps: usize,
    pub max_id_len: usize,
    pub max_goal_len: usize,
    pub max_json_depth: usize,
    /// Most pgmq queues one workflow may use (`limits.max_queues`, the
    /// cluster-wide cap, which the database enforces across workflows).
    pub max_queues: usize,
    /// Accept handlers no executor advertises (`limits.allow_unadvertised_handlers`).
    pub allow_unadvertised_handlers: bool,
    /// Most items a `map` step may have (`limits.max_map_items`); checked
    /// when the step starts, against its source.
    pub max_map_items: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 1000,
            max_id_len: 128,
            max_goal_len: 1024,
            max_json_depth: 32,
            max_queues: 256,
            allow_unadvertised_handlers: false,
            max_map_items: 10_000,
        }
    }
}

/// Why a workflow was refused. Each maps to one API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{0}")]
    Invalid(String),
    #[error("step `{step}` uses unknown handler `{handler}`")]
    UnknownHandler { step: String, handler: String },
    #[error("step `{step}` is pinned to unknown region `{region}`")]
    UnknownRegion { step: String, region: String },
    #[error("the workflow uses {used} queues; the cluster allows {max} (limits.max_queues)")]
    TooManyQueues { used: usize, max: usize },
}

/// A validated step, ready for the engine: defaults filled in and its pgmq
/// queue resolved.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PlannedStep {
    pub id: String,
    pub handler: String,
    pub queue: String,
    pub region: Option<String>,
    pub mq: String,
    pub depends_on: Vec<String>,
    pub input: Option<Value>,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    /// 0: ready as soon as its dependencies complete.
    pub delay_ms: u64,
    /// Claim order within its queue (higher first).
    pub priority: i32,
    pub concurrency_key: Option<String>,
    pub concurrency_limit: Option<i32>,
    /// `map`: the source (`$run` or a dependency id).
    pub map: Option<String>,
    /// The submitting node's `limits.max_map_items` (map steps only).
    pub map_max: Option<u32>,
    /// `wait_for`: the signal's name, and the timeout (None: none).
    pub wait_signal: Option<String>,
    pub wait_timeout_ms: Option<i64>,
}

pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
const MAX_ATTEMPTS_LIMIT: u32 = 100;
const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Priorities run from -PRIORITY_MAX to PRIORITY_MAX.
pub const PRIORITY_MAX: i64 = 100;
/// Longest `delay_ms`: 366 days.
pub const MAX_DELAY_MS: i64 = 366 * 86_400_000;

/// Validates a spec: non-empty, unique well-formed ids, known dependencies,
/// acyclic, known handlers and regions, sizes within `limits`. Returns the
/// steps in submission order with defaults applied.
pub fn validate(
    spec: &WorkflowSpec,
    limits: &Limits,
    known_handler: impl Fn(&str, &str) -> bool,
    known_region: impl Fn(&str) -> bool,
) -> Result<Vec<PlannedStep>, ValidationError> {
    let invalid = |m: String| Err(ValidationError::Invalid(m));
    if spec.goal.trim().is_empty() {
        return invalid("`goal` must be a non-empty string".into());
    }
    if spec.goal.chars().count() > limits.max_goal_len {
        return invalid(format!(
            "`goal` is longer than {} characters (limits.max_goal_len)",
            limits.max_goal_len
        ));
    }
    if spec.steps.is_empty() {
        return invalid("`steps` must contain at least one step".into());
    }
    if spec.steps.len() > limits.max_steps {
        return invalid(format!(
            "workflow has {} steps; the limit is {} (limits.max_steps)",
            spec.steps.len(),
            limits.max_steps
        ));
    }
    if let Some(key) = &spec.idempotency_key {
        if key.is_empty() || key.len() > 256 {
            return invalid("`idempotency_key` must be 1 to 256 bytes".into());
        }
    }
    let run_priority = spec.priority.unwrap_or(0);
    if !(-PRIORITY_MAX..=PRIORITY_MAX).contains(&run_priority) {
        return invalid(format!(
            "`priority` must be between -{PRIORITY_MAX} and {PRIORITY_MAX} (got {run_priority})"
        ));
    }
    if let Some(c) = &spec.concurrency {
        check_concurrency("concurrency", c)?;
    }
    check_depth("input", spec.input.as_ref(), limits.max_json_depth)?;
    // PostgreSQL text and jsonb cannot store NUL; refuse it here, by name.
    if spec.goal.contains('\0')
        || spec
            .idempotency_key
            .as_deref()
            .is_some_and(|k| k.contains('\0'))
        || spec.input.as_ref().is_some_and(has_nul)
        || spec
            .steps
            .iter()
            .any(|s| s.handler.contains('\0') || s.input.as_ref().is_some_and(has_nul))
    {
        return invalid(
            "the workflow contains a NUL character (\\u0000), which cannot be stored".into(),
        );
    }

    let mut index: HashMap<&str, usize> = HashMap::with_capacity(spec.steps.len());
    for (i, step) in spec.steps.iter().enumerate() {
        if !valid_step_id(&step.id, limits.max_id_len) {
            return invalid(format!(
                "step id `{}` is invalid: use 1 to {} characters (limits.max_id_len) of letters, digits, `_`, `-` or `.`",
                truncate(&step.id),
                limits.max_id_len
            ));
        }
        if index.insert(step.id.as_str(), i).is_some() {
            return invalid(format!("duplicate step id `{}`", step.id));
        }
    }

    let mut planned = Vec::with_capacity(spec.steps.len());
    for step in &spec.steps {
        let mut seen = BTreeSet::new();
        for dep in &step.depends_on {
            if dep == &step.id {
                return invalid(format!("step `{}` depends on itself", step.id));
            }
            if !index.contains_key(dep.as_str()) {
                return invalid(format!(
                    "step `{}` depends on unknown step `{}`",
                    step.id,
                    truncate(dep)
                ));
            }
            if !seen.insert(dep.as_str()) {
                return invalid(format!("step `{}` lists dependency `{dep}` twice", step.id));
            }
        }
        check_step_kind(step)?;
        let queue = step.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.into());
        if !valid_name(&queue) {
            return invalid(format!(
                "step `{}`: queue `{}` is invalid: use 1 to 64 characters of letters, digits, `_` or `-`",
                step.id,
                truncate(&queue)
            ));
        }
        if step.wait_for.is_none() && !known_handler(&step.handler, &queue) {
            return Err(ValidationError::UnknownHandler {
                step: step.id.clone(),
                handler: truncate(&step.handler),
            });
        }
        if let Some(region) = &step.region {
            if !known_region(region) {
                return Err(ValidationError::UnknownRegion {
                    step: step.id.clone(),
                    region: truncate(region),
                });
            }
        }
        let max_attempts = step.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
            return invalid(format!(
                "step `{}`: max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}",
                step.id
            ));
        }
        let timeout_ms = step.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return invalid(format!(
                "step `{}`: timeout_ms must be between 1 and {MAX_TIMEOUT_MS}",
                step.id
            ));
        }
        let priority = step.priority.unwrap_or(run_priority);
        if !(-PRIORITY_MAX..=PRIORITY_MAX).contains(&priority) {
            return invalid(format!(
                "step `{}`: priority must be between -{PRIORITY_MAX} and {PRIORITY_MAX} (got {priority})",
                step.id
            ));
        }
        let delay_ms = step.delay_ms.unwrap_or(0);
        if !(0..=MAX_DELAY_MS).contains(&delay_ms) {
            return invalid(format!(
                "step `{}`: delay_ms must be between 0 and {MAX_DELAY_MS} (got {delay_ms})",
                step.id
            ));
        }
        check_depth(
            &format!("steps.{}.input", step.id),
            step.input.as_ref(),
            limits.max_json_depth,
        )?;
        if let Some(c) = &step.concurrency {
            check_concurrency(&format!("step `{}`: concurrency", step.id), c)?;
        }
        let concurrency = step.concurrency.as_ref().or(spec.concurrency.as_ref());
        planned.push(PlannedStep {
            id: step.id.clone(),
            handler: step.handler.clone(),
            mq: mq_name(&queue, step.region.as_deref()),
            queue,
            region: step.region.clone(),
            depends_on: step.depends_on.clone(),
            input: step.input.clone(),
            max_attempts,
            timeout_ms,
            delay_ms: delay_ms as u64,
            priority: priority as i32,
            concurrency_key: concurrency.map(|c| c.key.clone()),
            concurrency_limit: concurrency.map(|c| c.limit as i32),
            map: step.map.clone(),
            map_max: step.map.as_ref().map(|_| limits.max_map_items),
            wait_signal: step.wait_for.as_ref().map(|w| w.signal.clone()),
            wait_timeout_ms: step.wait_for.as_ref().and_then(|w| w.timeout_ms),
        });
    }
    // Queues and their region variants are each a pgmq queue.
    let queues: BTreeSet<&str> = planned.iter().map(|s| s.mq.as_str()).collect();
    if queues.len() > limits.max_queues {
        return Err(ValidationError::TooManyQueues {
            used: queues.len(),
            max: limits.max_queues,
        });
    }
    if let Some(cycle_at) = find_cycle(&spec.steps, &index) {
        return invalid(format!(
            "the dependency graph has a cycle through step `{cycle_at}`"
        ));
    }
    Ok(planned)
}

/// `text`, a time in RFC 3339 (any offset), in UTC; the error names
/// `field` and shows the form expected.
pub fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "`{field}` must be an RFC 3339 time such as 2026-12-04T09:30:00Z (got `{}`: {e})",
                truncate(text)
            )
        })
}

/// The run's `run_at`, parsed (RFC 3339, any offset; stored in UTC).
pub fn run_at(spec: &WorkflowSpec) -> Result<Option<DateTime<Utc>>, ValidationError> {
    spec.run_at
        .as_deref()
        .map(|t| parse_time("run_at", t).map_err(ValidationError::Invalid))
        .transpose()
}

/// Highest concurrency limit.
pub const MAX_CONCURRENCY_LIMIT: i64 = 100_000;

fn check_concurrency(what: &str, c: &Concurrency) -> Result<(), ValidationError> {
    if c.key.is_empty() || c.key.len() > 256 || c.key.contains('\0') {
        return Err(ValidationError::Invalid(format!(
            "{what}.key must be 1 to 256 bytes (no NUL)"
        )));
    }
    if !(1..=MAX_CONCURRENCY_LIMIT).contains(&c.limit) {
        return Err(ValidationError::Invalid(format!(
            "{what}.limit must be between 1 and {MAX_CONCURRENCY_LIMIT} (got {})",
            c.limit
        )));
    }
    Ok(())
}

/// A step runs a handler, waits for a signal (`wait_for`, no handler), or
/// maps a handler over `$run` or a dependency's output (`map`).
fn check_step_kind(step: &StepSpec) -> Result<(), ValidationError> {
    let invalid = |m: String| Err(ValidationError::Invalid(m));
    let id = &step.id;
    if let Some(w) = &step.wait_for {
        if !step.handler.is_empty() {
            return invalid(format!(
                "step `{id}`: `wait_for` and `handler` exclude each other (a wait step runs no handler)"
            ));
        }
        if step.map.is_some() {
            return invalid(format!(
                "step `{id}`: `wait_for` and `map` exclude each other"
            ));
        }
        if !valid_signal(&w.signal) {
            return invalid(format!(
                "step `{id}`: wait_for.signal `{}` is invalid: use 1 to 128 characters of letters, digits, `_`, `-` or `.`",
                truncate(&w.signal)
            ));
        }
        if let Some(t) = w.timeout_ms {
            if !(1..=MAX_DELAY_MS).contains(&t) {
                return invalid(format!(
                    "step `{id}`: wait_for.timeout_ms must be between 1 and {MAX_DELAY_MS} (got {t})"
                ));
            }
        }
        return Ok(());
    }
    if step.handler.is_empty() {
        return invalid(format!(
            "step `{id}`: `handler` is required (or `wait_for`, for a step that waits for a signal)"
        ));
    }
    if let Some(src) = &step.map {
        if src != MAP_RUN && !step.depends_on.iter().any(|d| d == src) {
            return invalid(format!(
                "step `{id}`: map `{}` is neither `{MAP_RUN}` nor one of its dependencies",
                truncate(src)
            ));
        }
    }
    Ok(())
}

/// Signal names: 1 to 128 of `[A-Za-z0-9_.-]`, the characters of step ids
/// (they appear in URLs).
pub fn valid_signal(s: &str) -> bool {
    valid_step_id(s, 128)
}

/// Kahn's algorithm; returns a step on a cycle if the graph is not a DAG.
fn find_cycle<'a>(steps: &'a [StepSpec], index: &HashMap<&str, usize>) -> Option<&'a str> {
    let mut indegree: Vec<usize> = steps.iter().map(|s| s.depends_on.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, s) in steps.iter().enumerate() {
        for d in &s.depends_on {
            dependents[index[d.as_str()]].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..steps.len()).filter(|&i| indegree[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &j in &dependents[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(j);
            }
        }
    }
    if done == steps.len() {
        None
    } else {
        (0..steps.len())
            .find(|&i| indegree[i] > 0)
            .map(|i| steps[i].id.as_str())
    }
}

fn check_depth(what: &str, v: Option<&Value>, max: usize) -> Result<(), ValidationError> {
    match v {
        Some(v) if json_depth(v) > max => Err(ValidationError::Invalid(format!(
            "`{what}` is nested deeper than {max} levels (limits.max_json_depth)"
        ))),
        _ => Ok(()),
    }
}

pub fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Nesting depth of a JSON value (a scalar is 0), without recursion.
pub fn json_depth(v: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    max
}

fn valid_step_id(id: &str, max_len: usize) -> bool {
    !id.is_empty()
        && id.len() <= max_len
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Queue, pool and region names: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(64).collect::<String>())
    }
}

/// The pgmq queue that holds tasks of `queue`, or of its variant pinned to
/// `region`. Deterministic and collision-resistant: a name that is already a
/// short lowercase identifier maps to itself; any other gets sanitised,
/// shortened and suffixed with a hash of the original.
pub fn mq_name(queue: &str, region: Option<&str>) -> String {
    let raw = match region {
        None => queue.to_string(),
        Some(r) => format!("{queue}__at__{r}"),
    };
    let clean: String = raw
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    if clean == raw && clean.len() <= MQ_MAX_LEN {
        return clean;
    }
    let hash = fnv1a(raw.as_bytes());
    let keep: String = clean.chars().take(MQ_MAX_LEN - 9).collect();
    format!("{keep}_{:08x}", (hash as u32) ^ ((hash >> 32) as u32))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> WorkflowSpec {
        serde_json::from_value(v).expect("spec parses")
    }

    fn check(v: Value) -> Result<Vec<PlannedStep>, ValidationError> {
        validate(
            &spec(v),
            &Limits::default(),
            |h, _| ["noop", "echo", "fail", "sleep"].contains(&h),
            |r| ["us-east", "eu-west"].contains(&r),
        )
    }

    #[test]
    fn validation_table() {
        let diamond = json!({"goal": "g", "steps": [
            {"id": "a", "handler": "noop"},
            {"id": "b", "handler": "echo", "depends_on": ["a"]},
            {"id": "c", "handler": "echo", "depends_on": ["a"]},
            {"id": "d", "handler": "echo", "depends_on": ["b", "c"]}]});
        // (case, input, expected error substring or None for OK)
        let cases: Vec<(&str, Value, Option<&str>)> = vec![
            ("diamond", diamond, None),
            (
                "empty goal",
                json!({"goal": " ", "steps": [{"id": "a", "handler": "noop"}]}),
                Some("goal"),
            ),
            (
                "no steps",
                json!({"goal": "g", "steps": []}),
                Some("at least one step"),
            ),
            (
                "dup id",
                json!({"goal": "g", "steps": [{"id": "a", "handler": "noop"}, {"id": "a", "handler": "noop"}]}),
                Some("duplicate step id `a`"),
            ),
            (
                "bad id",
                json!({"goal": "g", "steps": [{"id": "a b", "handler": "noop"}]}),
                Some("step id `a b` is invalid"),
            ),
            (
                "unknown dep",
                json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "depends_on": ["z"]}]}),
                Some("unknown step `z`"),
            ),
            (
                "self dep",
                json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "depends_on": ["a"]}]}),
                Some("depends on itself"),
            ),
            (
                "cycle",
                json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "depends_on": ["b"]}, {"id": "b", "handler": "noop", "depends_on": ["a"]}]}),
                Some("cycle"),
            ),
            (
                "unknown handler",
                json!({"goal": "g", "steps": [{"id": "a", "handler": "nope"}]}),
                Some("unknown handler `nope`"),
            ),
            (
                "unknown region",
                json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "region": "mars"}]}),
                Some("unknown region `mars`"),
            ),
            (
                "known region",
                json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "region": "eu-west"}]}),
                None,
            ),
            (
                "bad queue",
                json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "queue": "a/b"}]}),
                Some("queue `a/b` is invalid"),
            ),
            (
                "zero attempts",
                json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "max_attempts": 0}]}),
                Some("max_attempts"),
            ),
            (
                "zero timeout",
                json!({"goal": "g", "steps": [{"id": "a", "handler": "noop", "timeout_ms": 0}]}),
                Some("timeout_ms"),
            ),
            (
                "deep input",
                json!({"goal": "g", "input": deep(40), "steps": [{"id": "a", "handler": "noop"}]}),
                Some("nested deeper"),
            ),
            (
                "nul in input",
                json!({"goal": "g", "input": {"k": "a\u{0}b"}, "steps": [{"id": "a", "handler": "noop"}]}),
                Some("NUL"),
            ),
        ];
        for (name, input, want) in cases {
            let got = check(input);
            match (want, &got) {
                (None, Ok(_)) => {}
                (Some(w), Err(e)) => assert!(e.to_string().contains(w), "{name}: {e}"),
                _ => panic!("{name}: expected {want:?}, got {got:?}"),
            }
        }
    }

    fn deep(n: usize) -> Value {
        (0..n).fold(json!(1), |acc, _| json!([acc]))
    }

    #[test]
    fn defaults_are_applied() {
        let steps = check(json!({"goal": "g", "steps": [{"id": "a", "handler": "noop"}]})).unwrap();
        assert_eq!(steps[0].queue, "default");
        assert_eq!(steps[0].mq, "default");
        assert_eq!(steps[0].max_attempts, 3);
        assert_eq!(steps[0].timeout_ms, 60_000);
    }

    #[test]
    fn too_many_steps() {
        let steps: Vec<Value> = (0..5)
            .map(|i| json!({"id": format!("s{i}"), "handler": "noop"}))
            .collect();
        let limits = Limits {
            max_steps: 4,
            ..Limits::default()
        };
        let err = validate(
            &spec(json!({"goal": "g", "steps": steps})),
            &limits,
            |_, _| true,
            |_| true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("limit is 4"));
    }

    #[test]
    fn too_many_queues_in_one_workflow() {
        // Three pgmq queues: `a`, `b`, and `a` pinned to a region.
        let wf = spec(json!({"goal": "g", "steps": [
            {"id": "s1", "handler": "noop", "queue": "a"},
            {"id": "s2", "handler": "noop", "queue": "a"},
            {"id": "s3", "handler": "noop", "queue": "b"},
            {"id": "s4", "handler": "noop", "queue": "a", "region": "eu-west"}]}));
        let with = |max_queues| Limits {
            max_queues,
            ..Limits::default()
        };
        assert!(validate(&wf, &with(3), |_, _| true, |_| true).is_ok());
        let err = validate(&wf, &with(2), |_, _| true, |_| true).unwrap_err();
        assert_eq!(err, ValidationError::TooManyQueues { used: 3, max: 2 });
        assert_eq!(
            err.to_string(),
            "the workflow uses 3 queues; the cluster allows 2 (limits.max_queues)"
        );
    }

    #[test]
    fn mq_names_are_valid_and_deterministic() {
        let cases = [
            ("default", None, "default"),
            ("gpu_tasks", None, "gpu_tasks"),
            ("default", Some("us-east"), ""),
            ("Mixed-Case", None, ""),
            (
                "a_very_long_queue_name_that_goes_on_and_on_forever_more",
                Some("ap-southeast-2"),
                "",
            ),
        ];
        let mut seen = BTreeSet::new();
        for (q, r, exact) in cases {
            let n = mq_name(q, r);
            assert!(n.len() <= MQ_MAX_LEN, "{n}");
            assert!(n
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert_eq!(n, mq_name(q, r));
            if !exact.is_empty() {
                assert_eq!(n, exact);
            }
            assert!(seen.insert(n), "collision");
        }
        assert_ne!(mq_name("a-b", None), mq_name("a_b", None));
    }
}

//! Task handlers and goal decomposers, registered by name.
//!
//! Built-ins: `noop` (output = the step's own input, or null), `echo`
//! (output = the whole task input), `sleep` (`{"ms": n}`), `fail` (always
//! fails with `{"message": str}`). The node's config adds `http:<name>`
//! ([`http`]) and `command:<name>` ([`command`]) handlers
//! ([`Registry::register_configured`]). Library users add their own with
//! [`Registry::register`] and [`Registry::register_decomposer`].

pub mod command;
mod configured;
pub mod http;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::model::workflow::StepSpec;

/// What a handler receives: `{"run": <run input>, "step": <step input>,
/// "deps": {<dep id>: <its output>}}` plus where it runs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub run_id: uuid::Uuid,
    pub step_id: String,
    pub attempt: i32,
    pub input: Value,
}

impl TaskContext {
    /// The step's own input (`input.step`).
    pub fn step_input(&self) -> &Value {
        &self.input["step"]
    }
}

/// A handler's failure; `error` becomes the attempt's and step's `error`.
/// A failure with `retry` false fails the step at once, whatever attempts
/// are left (e.g. an http handler's 4xx: sending it again cannot help).
#[derive(Debug, Clone)]
pub struct HandlerError {
    pub error: Value,
    pub retry: bool,
}

impl HandlerError {
    /// A failure that is retried while attempts are left.
    pub fn message(msg: impl Into<String>) -> Self {
        HandlerError::retried(json!({ "message": msg.into() }))
    }

    /// A failure with `error` that is retried while attempts are left.
    pub fn retried(error: Value) -> Self {
        HandlerError { error, retry: true }
    }

    /// A failure with `error` that fails the step at once.
    pub fn fatal(error: Value) -> Self {
        HandlerError {
            error,
            retry: false,
        }
    }
}

pub type HandlerResult = Result<Value, HandlerError>;
pub type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// A task handler.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, ctx: TaskContext) -> BoxFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, ctx: TaskContext) -> BoxFuture {
        Box::pin((self)(ctx))
    }
}

/// Turns a goal into steps when a workflow names a `decomposer` and brings
/// no steps of its own.
pub trait Decomposer: Send + Sync + 'static {
    fn decompose(&self, goal: &str, input: Option<&Value>) -> Result<Vec<StepSpec>, String>;
}

impl<F> Decomposer for F
where
    F: Fn(&str, Option<&Value>) -> Result<Vec<StepSpec>, String> + Send + Sync + 'static,
{
    fn decompose(&self, goal: &str, input: Option<&Value>) -> Result<Vec<StepSpec>, String> {
        (self)(goal, input)
    }
}

/// The built-in handlers.
pub const BUILTINS: [&str; 4] = ["noop", "echo", "sleep", "fail"];

/// Handlers and decomposers by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
    decomposers: HashMap<String, Arc<dyn Decomposer>>,
}

impl Registry {
    /// A registry with the built-in handlers.
    pub fn with_builtins() -> Self {
        let mut r = Registry::default();
        r.register("noop", |ctx: TaskContext| async move {
            Ok(ctx.step_input().clone())
        });
        r.register("echo", |ctx: TaskContext| async move { Ok(ctx.input) });
        r.register("sleep", |ctx: TaskContext| async move {
            let ms = ctx.step_input()["ms"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!({ "slept_ms": ms }))
        });
        r.register("fail", |ctx: TaskContext| async move {
            let msg = ctx.step_input()["message"]
                .as_str()
                .unwrap_or("fail handler always fails")
                .to_string();
            Err(HandlerError::message(msg))
        });
        r
    }

    /// Whether `name` is a built-in handler (accepted on any queue).
    pub fn is_builtin(name: &str) -> bool {
        BUILTINS.contains(&name)
    }

    /// The names of every handler, sorted.
    pub fn handler_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.handlers.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn register(&mut self, name: &str, h: impl Handler) -> &mut Self {
        self.handlers.insert(name.to_string(), Arc::new(h));
        self
    }

    pub fn register_decomposer(&mut self, name: &str, d: impl Decomposer) -> &mut Self {
        self.decomposers.insert(name.to_string(), Arc::new(d));
        self
    }

    pub fn handler(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(name).cloned()
    }

    pub fn has_handler(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    pub fn decomposer(&self, name: &str) -> Option<Arc<dyn Decomposer>> {
        self.decomposers.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(input: Value) -> TaskContext {
        TaskContext {
            run_id: uuid::Uuid::nil(),
            step_id: "s".into(),
            attempt: 1,
            input,
        }
    }

    #[tokio::test]
    async fn builtins_behave_as_documented() {
        let r = Registry::with_builtins();
        let input = json!({"run": {"a": 1}, "step": {"ms": 1, "message": "boom"}, "deps": {}});
        let call = |name: &str| r.handler(name).unwrap().call(ctx(input.clone()));
        assert_eq!(call("noop").await.unwrap(), input["step"]);
        assert_eq!(call("echo").await.unwrap(), input);
        assert_eq!(call("sleep").await.unwrap(), json!({"slept_ms": 1}));
        assert_eq!(
            call("fail").await.unwrap_err().error,
            json!({"message": "boom"})
        );
        assert!(!r.has_handler("shell"));
    }
}

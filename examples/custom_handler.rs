//! A node binary with a handler written in Rust, built on the library:
//! what a team writes when its work is best done in-process (no HTTP hop,
//! no process per task). `cargo test` compiles it; run it with a node
//! config like `swf serve` takes:
//!
//! ```sh
//! cargo run --release --example custom_handler -- node.toml
//! ```
//!
//! It serves everything `swf serve` does, plus handler `wordcount`: the
//! step input `{"text": "..."}` answers `{"words": n, "longest": "..."}`;
//! an input without text fails without retry (another attempt would get
//! the same input). Its pools advertise `wordcount` in their heartbeats,
//! so edge nodes of the cluster accept it too.

use anyhow::Context;
use serde_json::json;
use singularity_workflow::config::Config;
use singularity_workflow::executor::handlers::{HandlerError, Registry, TaskContext};
use singularity_workflow::node::{signals, Node};

fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    r.register("wordcount", |ctx: TaskContext| async move {
        let Some(text) = ctx.step_input()["text"].as_str() else {
            return Err(HandlerError::fatal(json!({
                "message": "wordcount needs {\"text\": string} as its step input"
            })));
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let longest = words.iter().max_by_key(|w| w.len()).copied().unwrap_or("");
        Ok(json!({"words": words.len(), "longest": longest}))
    });
    r
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: custom_handler NODE_CONFIG.toml")?;
    singularity_workflow::telemetry::init_logging(singularity_workflow::telemetry::LogFormat::Text);
    let loaded = Config::load(std::path::Path::new(&path))?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let stop = signals::shutdown_signal();
    let node = Node::start(loaded.config, registry()).await?;
    node.run_until(stop).await?;
    Ok(())
}

//! Legacy keys and `swf config migrate`: `mode = "orchestrator"` (and its other values) becomes
//! `enable_client` / `enable_executor`, and `[[worker_pools]]` with `name` becomes one
//! `[worker_pools.<name>]` table per pool. Loading applies both rewrites (with a deprecation
//! warning); `swf config migrate` (`migrate.rs`) writes the rewritten file.

use toml::{Table, Value};

use super::error::{ConfigError, Ctx};

pub(crate) const LEGACY_POOLS_WARNING: &str = "key `worker_pools` written as an array of tables \
     ([[worker_pools]] with name) is deprecated: write one [worker_pools.<name>] table per pool \
     with size and queue (swf config migrate does this)";

const MODES: &str = "\"orchestrator\", \"client\", \"edge\", \"worker\" or \"executor\"";

/// Rewrites `[[worker_pools]]` (name, size, queue) into `[worker_pools.<name>]` tables.
/// Returns whether there was anything to rewrite.
pub(crate) fn convert_legacy_pools(table: &mut Table, ctx: &Ctx) -> Result<bool, ConfigError> {
    let Some(Value::Array(entries)) = table.get("worker_pools") else {
        return Ok(false);
    };
    let mut pools = Table::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("worker_pools[{i}]");
        let Value::Table(entry) = entry else {
            return Err(ctx.invalid(&at, "each pool must be a table with name, size and queue"));
        };
        let mut pool = Table::new();
        let mut name = None;
        for (key, value) in entry {
            match (key.as_str(), value) {
                ("name", Value::String(s)) => name = Some(s.clone()),
                ("name", _) => return Err(ctx.invalid(&format!("{at}.name"), "must be a string")),
                ("size" | "queue", _) => {
                    pool.insert(key.clone(), value.clone());
                }
                _ => {
                    let expected = "expected `name`, `size` or `queue`";
                    return Err(ctx.unknown(&format!("{at}.{key}"), expected));
                }
            }
        }
        let name = name.ok_or_else(|| ctx.missing(&format!("{at}.name")))?;
        if pools.contains_key(&name) {
            return Err(ctx.invalid(&format!("{at}.name"), format!("duplicate pool {name:?}")));
        }
        pools.insert(name, Value::Table(pool));
    }
    table.insert("worker_pools".to_string(), Value::Table(pools));
    Ok(true)
}

/// Removes a legacy `mode` key, setting `enable_client`/`enable_executor` where they are not
/// set explicitly. Returns the deprecation warning, if there was a `mode`.
pub(crate) fn resolve_legacy_mode(
    table: &mut Table,
    ctx: &Ctx,
) -> Result<Option<String>, ConfigError> {
    let Some(mode) = table.remove("mode") else {
        return Ok(None);
    };
    let (client, executor) = match mode.as_str() {
        Some("orchestrator") => (true, true),
        Some("client" | "edge") => (true, false),
        Some("worker" | "executor") => (false, true),
        _ => return Err(ctx.invalid("mode", format!("must be one of {MODES} (got {mode})"))),
    };
    table
        .entry("enable_client")
        .or_insert(Value::Boolean(client));
    table
        .entry("enable_executor")
        .or_insert(Value::Boolean(executor));
    Ok(Some(format!(
        "key `mode` is deprecated: replace mode = {mode} with enable_client = {client} \
         and enable_executor = {executor}"
    )))
}

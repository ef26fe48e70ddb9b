//! The key table: the one list of the node file's keys. Each entry says that the key exists,
//! its [`Kind`] (how a TOML value or an `SWF_<KEY>` environment value is read), its place in
//! the order `swf config migrate` writes top-level keys in, and whether `swf config check`
//! reports it.
//!
//! [`check_keys`] walks a parsed file against this table, in the file's key order, and refuses
//! the first unknown key or value of the wrong type with serde's wording (so messages read
//! as they did when the file was deserialized into structs). Everything past it
//! (`parse.rs`) reads values through [`Doc`], whose getters are typed by the same table.

use toml::{Table, Value};

use super::error::{ConfigError, Ctx};

/// What a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Bool,
    Int,
    StrList,
    /// A table of the keys listed under it.
    Table,
    /// A table of named tables (`worker_pools.<name>`); `*` stands for the name.
    Map,
}

/// One key of the node file.
#[derive(Debug)]
pub(crate) struct Key {
    /// Dotted path; `*` matches any one name.
    pub(crate) path: &'static str,
    pub(crate) kind: Kind,
    /// Accepted (from the file or the environment) but rewritten before validation
    /// (`legacy.rs`): never suggested, never written by `swf config migrate`.
    pub(crate) legacy: bool,
    /// Shown by `swf config check` (`report.rs`; a test holds the two together).
    pub(crate) reported: bool,
}

const fn key(path: &'static str, kind: Kind) -> Key {
    Key {
        path,
        kind,
        legacy: false,
        reported: false,
    }
}

const fn shown(path: &'static str, kind: Kind) -> Key {
    Key {
        reported: true,
        ..key(path, kind)
    }
}

const fn legacy(path: &'static str, kind: Kind) -> Key {
    Key {
        legacy: true,
        ..key(path, kind)
    }
}

use Kind::{Bool, Int, Map, Str, StrList, Table as Tbl};

/// Every key, in the order `swf config migrate` writes top-level keys (values before tables)
/// and unknown-key errors list the expected ones.
pub(crate) const KEYS: &[Key] = &[
    shown("node_id", Str),
    shown("region", Str),
    shown("write_region", Str),
    key("enable_client", Bool),
    key("enable_executor", Bool),
    shown("regions_file", Str),
    legacy("mode", Str),
    key("api", Tbl),
    shown("api.listen", Str),
    shown("api.public_url", Str),
    shown("api.tls_cert", Str),
    shown("api.tls_key", Str),
    shown("api.client_ca", Str),
    shown("api.peer_ca", Str),
    key("api.max_connections", Int),
    key("api.header_read_timeout_ms", Int),
    key("api.idle_timeout_ms", Int),
    key("api.anonymous_concurrency", Int),
    key("database", Tbl),
    shown("database.url", Str),
    key("database.max_connections", Int),
    shown("worker_pools", Map),
    key("worker_pools.*", Tbl),
    key("worker_pools.*.size", Int),
    key("worker_pools.*.queue", Str),
    key("executor", Tbl),
    key("executor.heartbeat_interval_ms", Int),
    key("executor.poll_interval_ms", Int),
    key("executor.visibility_margin_ms", Int),
    key("executor.lease_ms", Int),
    key("executor.shutdown_grace_ms", Int),
    key("executor.claim_batch", Int),
    key("executor.prefetch_min", Int),
    key("limits", Tbl),
    key("limits.max_body_bytes", Int),
    key("limits.max_steps", Int),
    key("limits.max_id_len", Int),
    key("limits.max_goal_len", Int),
    key("limits.max_json_depth", Int),
    key("limits.request_timeout_ms", Int),
    key("limits.max_concurrent_requests", Int),
    key("limits.per_token_rate_per_s", Int),
    key("limits.max_output_bytes", Int),
    key("limits.max_queues", Int),
    key("limits.max_batch", Int),
    key("limits.max_batch_body_bytes", Int),
    key("limits.allow_unadvertised_handlers", Bool),
    key("limits.max_map_items", Int),
    key("handlers", Tbl),
    key("handlers.shell_allow", StrList),
    key("handlers.http_allow", StrList),
    key("handlers.http", Map),
    key("handlers.http.*", Tbl),
    key("handlers.http.*.url", Str),
    key("handlers.http.*.timeout_ms", Int),
    key("handlers.http.*.secret", Str),
    key("handlers.command", Map),
    key("handlers.command.*", Tbl),
    key("handlers.command.*.program", Str),
    key("handlers.command.*.args", StrList),
    key("handlers.command.*.timeout_ms", Int),
    key("handlers.command.*.env", StrList),
    key("auth", Tbl),
    key("auth.enabled", Bool),
    key("auth.tokens_file", Str),
    key("auth.protect_metrics", Bool),
    key("auth.protect_info", Bool),
    key("drills", Tbl),
    key("drills.fence_command", Str),
    key("drills.promote_command", Str),
    key("drills.kill_command", Str),
    key("drills.rejoin_command", Str),
    key("drills.manager", Str),
    key("drills.patroni", Map),
    key("drills.patroni.*", Tbl),
    key("drills.patroni.*.url", Str),
    key("drills.patroni.*.member", Str),
    key("routing", Tbl),
    key("routing.max_replica_lag_ms", Int),
    key("routing.token_wait_ms", Int),
    key("routing.cache_entries", Int),
    key("routing.cache_max_bytes", Int),
    key("routing.cache_running_ttl_ms", Int),
    key("routing.forward_timeout_ms", Int),
    key("retention", Tbl),
    key("retention.finished_after", Str),
    key("retention.batch_size", Int),
    key("retention.interval_ms", Int),
];

/// Whether the pattern `pattern` (dotted, `*` for any name) names `path`.
fn matches(pattern: &str, path: &[&str]) -> bool {
    let mut parts = pattern.split('.');
    path.iter()
        .all(|p| parts.next().is_some_and(|q| q == "*" || q == *p))
        && parts.next().is_none()
}

/// The entry for a key path, if the key exists.
pub(crate) fn find(path: &[&str]) -> Option<&'static Key> {
    KEYS.iter().find(|k| matches(k.path, path))
}

/// Position of a top-level key in [`KEYS`]; unknown keys sort last.
pub(crate) fn rank(top: &str) -> usize {
    KEYS.iter()
        .filter(|k| !k.path.contains('.'))
        .position(|k| k.path == top)
        .unwrap_or(usize::MAX)
}

/// The keys that may appear directly under `parent`, as serde listed a struct's fields:
/// "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, `c`".
fn expected_under(parent: &[&str]) -> String {
    let names: Vec<String> = KEYS
        .iter()
        .filter(|k| !k.legacy)
        .filter_map(|k| {
            let (head, last) = k.path.rsplit_once('.').unwrap_or(("", k.path));
            let head: Vec<&str> = if head.is_empty() {
                Vec::new()
            } else {
                head.split('.').collect()
            };
            let same = head.len() == parent.len()
                && head.iter().zip(parent).all(|(h, p)| h == p || *h == "*");
            same.then(|| format!("`{last}`"))
        })
        .collect();
    match names.as_slice() {
        [] => "there are no fields".to_string(),
        [one] => format!("expected {one}"),
        [a, b] => format!("expected {a} or {b}"),
        all => format!("expected one of {}", all.join(", ")),
    }
}

/// Checks every key and value of `table` against [`KEYS`], stopping at the first problem in
/// the file's key order (the order serde visited them in).
pub(crate) fn check_keys(table: &Table, ctx: &Ctx) -> Result<(), ConfigError> {
    check_table(table, &mut Vec::new(), ctx)
}

fn check_table(table: &Table, at: &mut Vec<String>, ctx: &Ctx) -> Result<(), ConfigError> {
    for (name, value) in table {
        at.push(name.clone());
        let path: Vec<&str> = at.iter().map(String::as_str).collect();
        let dotted = path.join(".");
        match find(&path).filter(|k| !k.legacy) {
            None => {
                let parent = &path[..path.len() - 1];
                return Err(ctx.unknown(&dotted, &expected_under(parent)));
            }
            Some(key) => match (key.kind, value) {
                (Kind::Table | Kind::Map, Value::Table(t)) => check_table(t, at, ctx)?,
                (kind, value) => check_value(kind, value, &dotted, ctx)?,
            },
        }
        at.pop();
    }
    Ok(())
}

fn check_value(kind: Kind, value: &Value, key: &str, ctx: &Ctx) -> Result<(), ConfigError> {
    let ok = match (kind, value) {
        (Kind::Str, Value::String(_) | Value::Datetime(_)) => true,
        (Kind::Bool, Value::Boolean(_)) | (Kind::Int, Value::Integer(_)) => true,
        (Kind::StrList, Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                check_value(Kind::Str, item, &format!("{key}[{i}]"), ctx)?;
            }
            true
        }
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let expected = match kind {
        Kind::Str => "a string",
        Kind::Bool => "a boolean",
        Kind::Int => "i64",
        Kind::StrList => "a sequence",
        Kind::Table => "a table",
        Kind::Map => "a map",
    };
    let message = format!("invalid type: {}, expected {expected}", unexpected(value));
    Err(ctx.invalid(key, message))
}

/// A value as serde's `Unexpected` describes it.
fn unexpected(value: &Value) -> String {
    match value {
        Value::String(s) => format!("string {s:?}"),
        // The TOML deserializer hands a date-time over as its text.
        Value::Datetime(d) => format!("string {:?}", d.to_string()),
        Value::Integer(i) => format!("integer `{i}`"),
        Value::Float(f) => {
            let mut text = f.to_string();
            if f.is_finite() && !text.contains('.') {
                text.push_str(".0");
            }
            format!("floating point `{text}`")
        }
        Value::Boolean(b) => format!("boolean `{b}`"),
        Value::Array(_) => "sequence".to_string(),
        Value::Table(_) => "map".to_string(),
    }
}

/// A file that passed [`check_keys`]: every value has the type its key's [`Kind`] says, so the
/// getters only look values up. Keys are dotted paths; pool names come in as path parts.
pub(crate) struct Doc<'a>(pub(crate) &'a Table);

impl Doc<'_> {
    fn get(&self, path: &[&str], kind: Kind) -> Option<&Value> {
        debug_assert_eq!(find(path).map(|k| k.kind), Some(kind), "{path:?}");
        let (last, parents) = path.split_last()?;
        let mut table = self.0;
        for part in parents {
            table = table.get(*part)?.as_table()?;
        }
        table.get(*last)
    }

    pub(crate) fn str(&self, path: &[&str]) -> Option<String> {
        match self.get(path, Kind::Str)? {
            Value::String(s) => Some(s.clone()),
            Value::Datetime(d) => Some(d.to_string()),
            _ => None,
        }
    }

    pub(crate) fn int(&self, path: &[&str]) -> Option<i64> {
        self.get(path, Kind::Int)?.as_integer()
    }

    pub(crate) fn bool(&self, path: &[&str]) -> Option<bool> {
        self.get(path, Kind::Bool)?.as_bool()
    }

    pub(crate) fn list(&self, path: &[&str]) -> Option<Vec<String>> {
        let items = self.get(path, Kind::StrList)?.as_array()?;
        let text = |v: &Value| match v {
            Value::Datetime(d) => d.to_string(),
            v => v.as_str().unwrap_or_default().to_string(),
        };
        Some(items.iter().map(text).collect())
    }

    /// The names under a [`Kind::Map`] key, when the file has it.
    pub(crate) fn names(&self, path: &[&str]) -> Option<Vec<String>> {
        let table = self.get(path, Kind::Map)?.as_table()?;
        Some(table.keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_found_and_nested_under_a_table() {
        for k in KEYS {
            let path: Vec<&str> = k.path.split('.').collect();
            assert_eq!(
                find(&path).map(|f| f.path),
                Some(k.path),
                "{} shadowed",
                k.path
            );
            if let Some((parent, _)) = k.path.rsplit_once('.') {
                let parent: Vec<&str> = parent.split('.').collect();
                let kind = find(&parent).map(|p| p.kind);
                assert!(matches!(kind, Some(Kind::Table | Kind::Map)), "{}", k.path);
            }
        }
    }

    #[test]
    fn lookups() {
        let cases: &[(&[&str], Option<Kind>)] = &[
            (&["region"], Some(Kind::Str)),
            (&["mode"], Some(Kind::Str)),
            (&["worker_pools"], Some(Kind::Map)),
            (&["worker_pools", "gpu"], Some(Kind::Table)),
            (&["worker_pools", "size"], Some(Kind::Table)),
            (&["worker_pools", "gpu", "size"], Some(Kind::Int)),
            (&["worker_pools", "gpu", "size", "x"], None),
            (&["handlers", "shell_allow"], Some(Kind::StrList)),
            (&["api", ""], None),
            (&[""], None),
            (&[], None),
        ];
        for (path, want) in cases {
            assert_eq!(find(path).map(|k| k.kind), *want, "{path:?}");
        }
        let expected = [
            (&["worker_pools", "gpu"][..], "expected `size` or `queue`"),
            (&["database"][..], "expected `url` or `max_connections`"),
            (
                &["auth"][..],
                "expected one of `enabled`, `tokens_file`, `protect_metrics`, `protect_info`",
            ),
        ];
        for (parent, want) in expected {
            assert_eq!(expected_under(parent), want, "{parent:?}");
        }
        assert!(rank("node_id") < rank("regions_file"));
        assert!(rank("handlers") < rank("auth"));
        assert_eq!(rank("colour"), usize::MAX);
    }

    #[test]
    fn values_of_the_wrong_type_in_serde_words() {
        let cases = [
            (
                "region = 5",
                "key `region`: invalid type: integer `5`, expected a string",
            ),
            (
                "region = 1.0",
                "invalid type: floating point `1.0`, expected a string",
            ),
            ("region = [1]", "invalid type: sequence, expected a string"),
            (
                "enable_client = \"y\"",
                "invalid type: string \"y\", expected a boolean",
            ),
            (
                "[database]\nmax_connections = true",
                "boolean `true`, expected i64",
            ),
            (
                "api = 5",
                "key `api`: invalid type: integer `5`, expected a table",
            ),
            ("worker_pools = 5", "expected a map"),
            (
                "[handlers]\nshell_allow = [\"a\", 5]",
                "key `handlers.shell_allow[1]`",
            ),
            (
                "[handlers]\nshell_allow = \"x\"",
                "string \"x\", expected a sequence",
            ),
            (
                "[worker_pools.gpu]\nsise = 1",
                "unknown key `worker_pools.gpu.sise` (expected `size` or `queue`)",
            ),
            (
                "mode = \"worker\"",
                "unknown key `mode` (expected one of `node_id`,",
            ),
        ];
        let ctx = Ctx::new("f.toml");
        for (text, want) in cases {
            let table: Table = text.parse().expect(text);
            let err = check_keys(&table, &ctx).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}

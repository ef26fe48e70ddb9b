//! `SWF_<KEY>` environment overrides: a variable names a key of the key table (`__` for each
//! nesting level, any case), its value is read by that key's [`Kind`] and written into the
//! parsed file before validation, so the file and the environment are checked alike. Pure:
//! the variables come in as a list (`files.rs` reads the process's).

use toml::{Table, Value};

use super::error::{ConfigError, Ctx};
use super::keys::{self, Kind};

/// Environment variables starting with `SWF_` that belong to other commands, not to the node
/// file. Any variable starting with `SWF_TEST_` is ignored as well.
pub const IGNORED_ENV: &[&str] = &[
    "SWF_PG_BIN",
    "SWF_LOG",
    "SWF_API_URL",
    "SWF_TOKEN",
    "SWF_CA_CERT",
    "SWF_CLIENT_CERT",
    "SWF_CLIENT_KEY",
    "SWF_TEST_KEEP",
    "SWF_DEV_DRILL_HOLD_AT",
];

pub(crate) fn ignored_env(name: &str) -> bool {
    IGNORED_ENV.contains(&name) || name.starts_with("SWF_TEST_")
}

/// Applies `SWF_*` overrides in name order, recording which key each one set.
pub(crate) fn apply_env(
    table: &mut Table,
    env: &[(String, String)],
    ctx: &mut Ctx,
) -> Result<(), ConfigError> {
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(name, _)| name.starts_with("SWF_") && !ignored_env(name))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let lower = var["SWF_".len()..].to_lowercase();
        let path: Vec<&str> = lower.split("__").collect();
        let key = path.join(".");
        let kind = match keys::find(&path).map(|k| k.kind) {
            Some(Kind::Table | Kind::Map) => {
                let msg = format!("`{key}` is a table; set one of its keys, e.g. {var}__<KEY>");
                return Err(ctx.env(var, msg));
            }
            Some(kind) => kind,
            None => return Err(ctx.env(var, format!("unknown key `{key}`"))),
        };
        let value = env_value(kind, raw).ok_or_else(|| {
            let want = match kind {
                Kind::Bool => "true or false",
                Kind::Int => "an integer",
                _ => "a list of strings",
            };
            ctx.env(var, format!("key `{key}`: expected {want} (got {raw:?})"))
        })?;
        let (leaf, parents) = path.split_last().ok_or_else(|| ctx.env(var, "empty key"))?;
        let mut node = &mut *table;
        for (depth, part) in parents.iter().enumerate() {
            let entry = node
                .entry(part.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            node = match entry {
                Value::Table(t) => t,
                _ => {
                    let at = parents[..=depth].join(".");
                    return Err(ctx.env(var, format!("key `{at}` in the file is not a table")));
                }
            };
        }
        node.insert(leaf.to_string(), value);
        ctx.env_keys.insert(key, var.clone());
    }
    Ok(())
}

/// Reads an environment value as the TOML value for a key of type `kind`. Strings are taken
/// verbatim (so `SWF_NODE_ID=42` is the string "42"); lists are a TOML array or comma-separated.
fn env_value(kind: Kind, raw: &str) -> Option<Value> {
    let scalar = || {
        let doc = format!("v = {}", raw.trim());
        doc.parse::<Table>().ok()?.remove("v")
    };
    match kind {
        Kind::Str => Some(Value::String(raw.to_string())),
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" => Some(Value::Boolean(true)),
            "false" => Some(Value::Boolean(false)),
            _ => None,
        },
        Kind::Int => scalar().filter(Value::is_integer),
        Kind::StrList if raw.trim_start().starts_with('[') => {
            scalar().filter(|v| v.as_array().is_some_and(|a| a.iter().all(Value::is_str)))
        }
        Kind::StrList => Some(Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
        Kind::Table | Kind::Map => None,
    }
}

/// The variable among `env` that sets `key` (the last in name order, as [`apply_env`] applies
/// them), for errors about a key found invalid after parsing.
pub(crate) fn var_for(env: &[(String, String)], key: &str) -> Option<String> {
    let mut vars: Vec<&String> = env
        .iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("SWF_") && !ignored_env(name))
        .collect();
    vars.sort();
    vars.into_iter()
        .rev()
        .find(|var| var["SWF_".len()..].to_lowercase().replace("__", ".") == key)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_by_kind() {
        let list = |items: &[&str]| {
            Some(Value::Array(
                items.iter().map(|s| Value::String(s.to_string())).collect(),
            ))
        };
        let cases: &[(Kind, &str, Option<Value>)] = &[
            (Kind::Str, " 42 ", Some(Value::String(" 42 ".into()))),
            (Kind::Bool, " TRUE ", Some(Value::Boolean(true))),
            (Kind::Bool, "no", None),
            (Kind::Int, "0x10", Some(Value::Integer(16))),
            (Kind::Int, "1.5", None),
            (Kind::StrList, "a, b,,", list(&["a", "b"])),
            (Kind::StrList, "[\"a\"]", list(&["a"])),
            (Kind::StrList, "[1]", None),
            (Kind::Table, "x", None),
        ];
        for (kind, raw, want) in cases {
            assert_eq!(&env_value(*kind, raw), want, "{kind:?} {raw:?}");
        }
    }

    #[test]
    fn var_for_names_the_variable_applied_last() {
        let env: Vec<(String, String)> = [
            ("SWF_API__TLS_CERT", "a"),
            ("SWF_api__tls_cert", "b"),
            ("SWF_TEST_X", "c"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            var_for(&env, "api.tls_cert").as_deref(),
            Some("SWF_api__tls_cert")
        );
        assert_eq!(var_for(&env, "test_x"), None);
    }
}

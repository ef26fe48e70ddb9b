//! `swf config migrate`: a node file rewritten to the current keys (the rewrites of
//! `legacy.rs`), top-level keys in key-table order, values before tables, and checked to load
//! the way `swf serve` loads it.

use toml::{Table, Value};

use super::error::{ConfigError, Ctx};
use super::keys;
use super::legacy::{convert_legacy_pools, resolve_legacy_mode};
use super::model::Config;
use super::parse::parse_table;

/// `swf config migrate`: `text` rewritten to the current keys. Drops `mode` in favour of
/// `enable_client`/`enable_executor`, turns `[[worker_pools]]` into `[worker_pools.<name>]`,
/// keeps everything else (comments are lost). The result is checked to load without
/// deprecation warnings; required keys may still come from the environment.
pub fn migrate_legacy(text: &str, source: &str) -> Result<String, ConfigError> {
    let ctx = Ctx::new(source);
    let mut table = parse_table(text, source)?;
    convert_legacy_pools(&mut table, &ctx)?;
    resolve_legacy_mode(&mut table, &ctx)?;

    let mut out = format!("# migrated by swf config migrate from {source}\n");
    let mut top: Vec<&String> = table.keys().collect();
    top.sort_by_key(|k| (keys::rank(k), *k));
    let (tables, values): (Vec<&String>, Vec<&String>) = top
        .into_iter()
        .partition(|k| table.get(*k).is_some_and(Value::is_table));
    for key in values {
        if let Some(value) = table.get(key) {
            out.push_str(&format!("{} = {value}\n", toml_key(key)));
        }
    }
    for key in tables {
        if let Some(value) = table.get(key) {
            let single = Table::from_iter([(key.clone(), value.clone())]);
            let body = toml::to_string(&single).map_err(|e| ctx.invalid(key, e.to_string()))?;
            out.push('\n');
            out.push_str(&body);
        }
    }

    // Check the result the way `swf serve` reads it. Required keys that are absent are
    // stood in for, since a deployment may supply them as SWF_REGION / SWF_DATABASE__URL.
    let mut stand_ins = Vec::new();
    if !table.contains_key("region") {
        stand_ins.push(("SWF_REGION".to_string(), "migrate-check".to_string()));
    }
    let has_url = table
        .get("database")
        .and_then(Value::as_table)
        .is_some_and(|db| db.contains_key("url"));
    if !has_url {
        stand_ins.push((
            "SWF_DATABASE__URL".to_string(),
            "postgres://migrate-check".to_string(),
        ));
    }
    Config::from_toml_str(&out, source, &stand_ins)?;
    Ok(out)
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_string()
    } else {
        Value::String(key.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::NodeType;
    use crate::config::testutil::{db, load, pools, top, Pools, DEFAULT_POOL, FILE};

    struct MigrateCase {
        name: &'static str,
        text: &'static str,
        node_type: NodeType,
        pools: Pools,
    }

    const MIGRATE_CASES: &[MigrateCase] = &[
        MigrateCase {
            name: "orchestrator with array pools",
            text: concat!(
                "# old file\nmode = \"orchestrator\"\n",
                top!(),
                "regions_file = \"regions/local.toml\"\n",
                db!(),
                "[[worker_pools]]\nname = \"default\"\nsize = 10\nqueue = \"default\"\n",
                "[[worker_pools]]\nname = \"gpu\"\nsize = 2\nqueue = \"gpu_tasks\"\n",
                "[executor]\nlease_ms = 20000\n[handlers]\nshell_allow = [\"echo\"]\n",
            ),
            node_type: NodeType::Hybrid,
            pools: &[("default", 10, "default"), ("gpu", 2, "gpu_tasks")],
        },
        MigrateCase {
            name: "client mode",
            text: concat!("mode = \"client\"\n", top!(), db!()),
            node_type: NodeType::Edge,
            pools: &[],
        },
        MigrateCase {
            name: "worker mode with an explicit role key",
            text: concat!("mode = \"worker\"\nenable_client = true\n", top!(), db!()),
            node_type: NodeType::Hybrid,
            pools: DEFAULT_POOL,
        },
        MigrateCase {
            name: "already current",
            text: concat!(
                "node_id = \"n\"\nenable_client = false\n",
                top!(),
                db!(),
                "[worker_pools.\"a-b\"]\nsize = 3\n"
            ),
            node_type: NodeType::Worker,
            pools: &[("a-b", 3, "a-b")],
        },
        MigrateCase {
            name: "required keys left to the environment",
            text: "mode = \"worker\"\n[[worker_pools]]\nname = \"w\"\n",
            node_type: NodeType::Worker,
            pools: &[("w", 10, "w")],
        },
    ];

    #[test]
    fn migrate_round_trips() {
        let stand_ins = [
            ("SWF_REGION", "us-east"),
            ("SWF_DATABASE__URL", "postgres://db"),
        ];
        for case in MIGRATE_CASES {
            let name = case.name;
            let out =
                migrate_legacy(case.text, "old.toml").unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                out.starts_with("# migrated by swf config migrate from old.toml\n"),
                "{name}: {out}"
            );
            assert!(!out.contains("mode"), "{name}: {out}");
            let env: &[(&str, &str)] = if case.text.contains("region") {
                &[]
            } else {
                &stand_ins
            };
            let before = load(case.text, env).unwrap_or_else(|e| panic!("{name}: {e}"));
            let after = load(&out, env).unwrap_or_else(|e| panic!("{name}: {e}\n{out}"));
            assert!(after.warnings.is_empty(), "{name}: {:?}", after.warnings);
            assert_eq!(after.config.node_type(), case.node_type, "{name}");
            let want: Vec<_> = case
                .pools
                .iter()
                .map(|(n, s, q)| (n.to_string(), *s, q.to_string()))
                .collect();
            assert_eq!(pools(&after.config), want, "{name}");
            // Same file name, so even the resolved regions_file and the default node_id agree.
            assert_eq!(after.config, before.config, "{name}\n{out}");
            // Migrating again changes nothing but the header.
            let twice = migrate_legacy(&out, "old.toml").unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(twice, out, "{name}");
        }
    }

    #[test]
    fn migrate_rejects_what_load_rejects() {
        let cases: &[(&str, &str)] = &[
            (concat!("mode = \"boss\"\n", top!(), db!()), "key `mode`"),
            (
                concat!(top!(), db!(), "[api]\nlistn = 1\n"),
                "unknown key `api.listn`",
            ),
            ("region = ", "invalid TOML at line 1"),
            (
                concat!(top!(), db!(), "[[worker_pools]]\nname = \"g\"\nsize = 0\n"),
                "key `worker_pools.g.size`",
            ),
        ];
        for (text, want) in cases {
            let err = migrate_legacy(text, FILE).expect_err(text).to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
            assert!(err.contains(FILE), "{err:?}");
        }
    }
}

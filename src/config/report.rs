//! `swf config check`: what a loaded config says, as JSON (`--json`) or as aligned
//! `label  value` lines. The keys shown are those the key table marks `reported` (the text
//! form's layout is written out here; a test holds it to the table); `file`, `node_type`, `roles` and the text form's `api.tls`
//! summary are derived. The database password is replaced by `***`.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::keys::KEYS;
use super::model::Config;

/// What `swf config check --json` prints: every key the key table marks `reported`, nested
/// as in the file, plus `file`, `node_type` and `roles`.
pub fn check_report(config: &Config) -> Value {
    let mut report = json!({
        "file": shown_path(&config.source),
        "node_type": config.node_type(),
        "roles": config.roles(),
    });
    for key in KEYS.iter().filter(|k| k.reported) {
        let mut at = &mut report;
        let mut parts = key.path.split('.').peekable();
        while let Some(part) = parts.next() {
            let Value::Object(map) = at else { break };
            let entry = map.entry(part).or_insert_with(|| json!({}));
            if parts.peek().is_none() {
                *entry = shown(config, key.path);
            }
            at = entry;
        }
    }
    report
}

fn shown_path(path: &Option<PathBuf>) -> Value {
    json!(path.as_ref().map(|p| p.display().to_string()))
}

/// How `--json` shows the value of a reported key.
fn shown(config: &Config, key: &str) -> Value {
    let api = &config.api;
    match key {
        "node_id" => json!(config.node_id),
        "region" => json!(config.region),
        "write_region" => json!(config.write_region),
        "api.listen" => json!(api.listen.to_string()),
        "api.public_url" => json!(api.public_url),
        "api.tls_cert" => shown_path(&api.tls_cert),
        "api.tls_key" => shown_path(&api.tls_key),
        "api.client_ca" => shown_path(&api.client_ca),
        "api.peer_ca" => shown_path(&api.peer_ca),
        "database.url" => json!(config.database.redacted_url()),
        "regions_file" => shown_path(&config.regions_file),
        "worker_pools" => config
            .worker_pools
            .iter()
            .map(|(name, p)| json!({"name": name, "size": p.size, "queue": p.queue}))
            .collect(),
        // A reported key without a way to show it (the report test catches this).
        _ => Value::Null,
    }
}

/// What `swf config check` prints without `--json`: one aligned `label  value` line per item.
pub fn check_report_text(config: &Config) -> String {
    let none = || "-".to_string();
    let mut lines: Vec<(&str, String)> = vec![
        (
            "file",
            config
                .source
                .as_ref()
                .map_or_else(none, |p| p.display().to_string()),
        ),
        ("node_id", config.node_id.clone()),
        ("node_type", config.node_type().to_string()),
        ("roles", config.roles().join(", ")),
        ("region", config.region.clone()),
        ("write_region", config.write_region.clone()),
        ("api.listen", config.api.listen.to_string()),
        ("api.public_url", config.api.public_url.clone()),
        (
            "api.tls",
            match (&config.api.tls_cert, &config.api.client_ca) {
                (None, _) => "off (plain HTTP)".to_string(),
                (Some(c), None) => format!("on, certificate {}", c.display()),
                (Some(c), Some(ca)) => format!(
                    "on, certificate {}, client certificates required (CA {})",
                    c.display(),
                    ca.display()
                ),
            },
        ),
        ("database.url", config.database.redacted_url()),
        (
            "regions_file",
            config
                .regions_file
                .as_ref()
                .map_or_else(none, |p| p.display().to_string()),
        ),
    ];
    if config.worker_pools.is_empty() {
        lines.push(("worker_pools", none()));
    }
    for (i, (name, pool)) in config.worker_pools.iter().enumerate() {
        let label = if i == 0 { "worker_pools" } else { "" };
        lines.push((
            label,
            format!("{name}: size {}, queue {}", pool.size, pool.queue),
        ));
    }
    let width = lines
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    lines
        .iter()
        .map(|(label, value)| format!("{label:<width$}  {value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::testutil::{db, load, top, FILE};
    use std::collections::BTreeSet;
    use std::net::SocketAddr;

    use super::*;

    /// Labels that are not keys of the file.
    const DERIVED: &[&str] = &["file", "node_type", "roles", "api.tls"];
    /// Reported keys the text form has no line of their own for.
    const TEXT_OMITS: &[&str] = &[
        "api.tls_cert",
        "api.tls_key",
        "api.client_ca",
        "api.peer_ca",
    ];

    fn leaves(value: &serde_json::Value, at: &str, out: &mut BTreeSet<String>) {
        match value.as_object() {
            Some(map) => {
                for (k, v) in map {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    leaves(v, &path, out);
                }
            }
            None => {
                out.insert(at.to_string());
            }
        }
    }

    #[test]
    fn reports_exactly_the_keys_the_table_marks() {
        let listen: SocketAddr = "127.0.0.1:4100".parse().expect("addr");
        let mut config = Config::for_dev("n", "r", "r", listen, "postgres://db");
        config.regions_file = Some("r.toml".into());
        config.api.tls_cert = Some("c.pem".into());
        config.api.tls_key = Some("k.pem".into());
        config.api.client_ca = Some("ca.pem".into());
        config.api.peer_ca = Some("ca.pem".into());
        for key in KEYS.iter().filter(|k| k.reported) {
            assert_ne!(
                shown(&config, key.path),
                Value::Null,
                "{} has no value",
                key.path
            );
        }
        let marked: BTreeSet<String> = KEYS
            .iter()
            .filter(|k| k.reported)
            .map(|k| k.path.to_string())
            .collect();
        let mut json = BTreeSet::new();
        leaves(&check_report(&config), "", &mut json);
        json.retain(|k| !DERIVED.contains(&k.as_str()));
        assert_eq!(json, marked, "--json fields vs reported keys");

        let text: BTreeSet<String> = check_report_text(&config)
            .lines()
            .filter_map(|l| l.split("  ").next())
            .filter(|l| !l.is_empty() && !DERIVED.contains(l))
            .map(str::to_string)
            .collect();
        // The text form sums the TLS files up in its `api.tls` line.
        let folded: BTreeSet<String> = marked
            .iter()
            .filter(|k| !TEXT_OMITS.contains(&k.as_str()))
            .cloned()
            .collect();
        assert_eq!(text, folded, "text labels vs reported keys");
    }

    #[test]
    fn check_report_redacts_the_password() {
        let text = concat!(
            "regions_file = \"r.toml\"\n",
            top!(),
            db!(),
            "[worker_pools.gpu]\nsize = 2\nqueue = \"gpu_tasks\"\n"
        );
        let config = load(text, &[]).expect("loads").config;
        let report = check_report(&config);
        let json = report.to_string();
        assert!(!json.contains("secret"), "{json}");
        assert_eq!(report["database"]["url"], "postgres://swf:***@db:5432/swf");
        assert_eq!(report["file"], FILE);
        assert_eq!(report["node_type"], "hybrid");
        assert_eq!(report["roles"], serde_json::json!(["client", "executor"]));
        assert_eq!(report["region"], "us-east");
        assert_eq!(report["write_region"], "us-east");
        assert_eq!(report["api"]["listen"], "127.0.0.1:4000");
        assert_eq!(report["api"]["public_url"], "http://127.0.0.1:4000");
        assert_eq!(
            report["worker_pools"],
            serde_json::json!([{"name": "gpu", "size": 2, "queue": "gpu_tasks"}])
        );
        assert_eq!(report["regions_file"], "deploy/r.toml");

        let text_report = check_report_text(&config);
        assert!(!text_report.contains("secret"), "{text_report}");
        assert!(
            text_report.contains("node_type       hybrid\n"),
            "{text_report}"
        );
        assert!(
            text_report.contains("worker_pools    gpu: size 2, queue gpu_tasks\n"),
            "{text_report}"
        );
        assert!(
            !format!("{config:?}").contains("secret"),
            "Debug leaks the password"
        );
    }
}

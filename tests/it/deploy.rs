//! The deployment artifacts under `deploy/` and `regions/` stay valid: every node file
//! passes `swf config check`, every regions file loads, every Kubernetes and Prometheus
//! YAML file parses. No database, no network.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use singularity_workflow::config::{self, Config};

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` (recursively) whose extension is one of `exts`, sorted.
fn files_under(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn is_regions_file(path: &Path, regions_dir: &Path) -> bool {
    path.starts_with(regions_dir) || path.file_name().is_some_and(|n| n == "regions.toml")
}

#[test]
fn every_node_config_checks() {
    let root = repo_root();
    let regions_dir = root.join("regions");
    let mut files = files_under(&root.join("deploy"), &["toml"]);
    files.extend(files_under(&regions_dir, &["toml"]));

    let (mut nodes, mut regions) = (0, 0);
    for path in &files {
        let shown = path.strip_prefix(root).unwrap_or(path).display();
        if is_regions_file(path, &regions_dir) {
            let listed = config::load_regions(path).unwrap_or_else(|e| panic!("{shown}: {e}"));
            assert!(!listed.is_empty(), "{shown}: no regions");
            regions += 1;
            continue;
        }
        // The file alone must check: no SWF_* override from this process may help it.
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_swf"));
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(|n| n.starts_with("SWF_")) {
                cmd.env_remove(name);
            }
        }
        let out = cmd
            .args(["config", "check"])
            .arg(path)
            .output()
            .expect("run swf");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "swf config check {shown}: {}\n{stderr}",
            out.status
        );
        nodes += 1;
    }
    assert!(nodes >= 10, "only {nodes} node configs under deploy/");
    assert!(regions >= 3, "only {regions} regions files");
}

#[test]
fn every_yaml_manifest_parses() {
    let root = repo_root();
    let mut parsed = 0;
    for path in files_under(&root.join("deploy"), &["yaml", "yml"]) {
        let shown = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{shown}: {e}"));
        let mut documents = 0;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value =
                serde_yaml::Value::deserialize(document).unwrap_or_else(|e| panic!("{shown}: {e}"));
            assert!(
                value.is_mapping(),
                "{shown}: document {documents} is not a mapping"
            );
            // A Patroni member's config: its promotions must move the epoch.
            if value.get("scope").is_some() && value.get("postgresql").is_some() {
                let callback = value["postgresql"]["callbacks"]["on_role_change"]
                    .as_str()
                    .unwrap_or_default();
                let name = value["name"].as_str().unwrap_or_default();
                assert!(
                    callback.contains("swf patroni-callback")
                        && callback.contains(&format!("--region {name}")),
                    "{shown}: on_role_change must run `swf patroni-callback ... --region {name}`"
                );
                documents += 1;
                continue;
            }
            assert!(
                value.get("kind").is_some()
                    || value.get("groups").is_some()
                    || value.get("scrape_configs").is_some(),
                "{shown}: document {documents} has no `kind`, `groups` or `scrape_configs`"
            );
            // Node files embedded in a ConfigMap must be valid node files too.
            if value.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap") {
                let data = value.get("data").and_then(|d| d.as_mapping());
                for (key, file) in data.into_iter().flatten() {
                    let (Some(key), Some(file)) = (key.as_str(), file.as_str()) else {
                        panic!("{shown}: data entries must be strings");
                    };
                    if key.ends_with(".toml") {
                        // The error names `{shown}#{key}` as its file.
                        Config::from_toml_str(file, &format!("{shown}#{key}"), &[])
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                }
            }
            documents += 1;
        }
        assert!(documents > 0, "{shown}: no YAML document");
        parsed += 1;
    }
    assert!(parsed >= 7, "only {parsed} YAML files under deploy/");
}

//! The architecture rules of lib.rs, checked on the source tree itself:
//! layers import downwards only, no import cycle between files, SQL only in
//! `store`, short files, one place that builds HTTP clients.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Source files (relative to src/) and their text.
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).expect("read src") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, std::fs::read_to_string(&p).expect("read source"));
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// The module path of a file: `api/routes/health.rs` -> `api::routes::health`.
fn module_of(file: &str) -> String {
    let f = file.trim_end_matches(".rs");
    let f = f.strip_suffix("/mod").unwrap_or(f);
    match f {
        "lib" | "main" => String::new(),
        _ => f.replace('/', "::"),
    }
}

/// The code of a file without its `#[cfg(test)]` module and comments.
fn code(text: &str) -> String {
    let body = text
        .find("#[cfg(test)]")
        .or_else(|| text.find("#[cfg(all(test"))
        .map_or(text, |i| &text[..i]);
    body.lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with("//")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths this file names: `crate::a::b::C` and `super::x`, resolved to the
/// deepest module that exists (a file).
fn imports(file: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let me = module_of(file);
    let is_folder_root = file.ends_with("mod.rs") || file == "lib.rs";
    let parent: Vec<&str> = if is_folder_root {
        me.split("::").filter(|s| !s.is_empty()).collect()
    } else {
        let mut v: Vec<&str> = me.split("::").collect();
        v.pop();
        v
    };
    let code = code(text);
    let mut out = BTreeSet::new();
    // `use` items (expanded from `a::{b, c::{d}}` groups) and inline `crate::` paths.
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = find_use(rest) {
        let stmt = &rest[i..];
        let end = stmt.find(';').unwrap_or(stmt.len());
        let flat: String = stmt[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        paths.extend(expand(&flat));
        rest = &stmt[end..];
    }
    for (i, _) in code.match_indices("crate::") {
        let tail: String = code[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        paths.push(tail);
    }
    // A folder root may name its child modules by bare paths (`phases::Drill`).
    let children: Vec<String> = modules
        .iter()
        .filter_map(|m| {
            let rest = if me.is_empty() {
                Some(m.as_str())
            } else {
                m.strip_prefix(&format!("{me}::"))
            }?;
            (is_folder_root && !rest.contains("::")).then(|| rest.to_string())
        })
        .collect();
    for child in &children {
        let needle = format!("{child}::");
        let named = code.match_indices(&needle).any(|(i, _)| {
            let before = code[..i].chars().next_back();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        });
        if named {
            paths.push(format!("self::{child}"));
        }
    }
    for p in paths {
        let segs: Vec<String> = p.split("::").map(|s| s.trim().to_string()).collect();
        let abs: Vec<String> = match segs.first().map(String::as_str) {
            Some("crate") => segs[1..].to_vec(),
            Some("super") => {
                let mut base: Vec<String> = parent.iter().map(|s| s.to_string()).collect();
                let mut rest = &segs[..];
                while rest.first().map(String::as_str) == Some("super") {
                    if rest.len() > 1 && rest[1] == "super" {
                        base.pop();
                    }
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                base
            }
            Some("self") if is_folder_root => {
                let mut base: Vec<String> = parent.iter().map(|s| s.to_string()).collect();
                base.extend(segs[1..].iter().cloned());
                base
            }
            _ => continue,
        };
        // Deepest existing module.
        for n in (1..=abs.len()).rev() {
            let m = abs[..n].join("::");
            if modules.contains(&m) {
                if m != me {
                    out.insert(m);
                }
                break;
            }
        }
    }
    out
}

/// Where the next `use` item's path starts (after `use `), at a line start.
fn find_use(text: &str) -> Option<usize> {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let t2 = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        if let Some(p) = t2.strip_prefix("use ") {
            return Some(at + (line.len() - p.len()));
        }
        at += line.len();
    }
    None
}

/// `a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"].
fn expand(s: &str) -> Vec<String> {
    let s = s.trim();
    let Some(open) = s.find('{') else {
        let p = s.split(" as ").next().unwrap_or(s).trim();
        return vec![p.to_string()];
    };
    let prefix = &s[..open];
    let inner = &s[open + 1..s.rfind('}').unwrap_or(s.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand)
        .map(|p| {
            if p == "self" {
                prefix.trim_end_matches("::").to_string()
            } else {
                format!("{prefix}{p}")
            }
        })
        .collect()
}

fn graph() -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, String>) {
    let src = sources();
    let modules: BTreeSet<String> = src.keys().map(|f| module_of(f)).collect();
    let mut g = BTreeMap::new();
    for (f, text) in &src {
        g.insert(module_of(f), imports(f, text, &modules));
    }
    (g, src)
}

/// A layer rank per module: a module may import ranks at or below its own.
fn rank(m: &str) -> u8 {
    let top = m.split("::").next().unwrap_or("");
    match (top, m) {
        ("", _) => 99,
        (_, "api::wire" | "api::wire::drills") => 1,
        (_, "api::tls") => 2,
        // One connection of the server; the accept loop in api::tls uses it.
        (_, "api::conn") => 2,
        (_, "api::client") => 3,
        ("model" | "wait" | "telemetry" | "batch", _) => 0,
        ("config", _) => 1,
        ("store", _) => 2,
        ("router", _) => 3,
        ("drill", _) => 4,
        ("client" | "executor", _) => 5,
        ("api", _) => 6,
        ("node", _) => 7,
        ("dev", _) => 8,
        ("cli", _) => 9,
        _ => panic!("module {m} has no layer in tests/it/layout.rs: add it"),
    }
}

#[test]
fn layers_import_downwards_only() {
    let (g, _) = graph();
    let mut bad = Vec::new();
    for (m, deps) in &g {
        for d in deps {
            if !m.is_empty() && rank(d) > rank(m) {
                bad.push(format!(
                    "{m} (layer {}) imports {d} (layer {})",
                    rank(m),
                    rank(d)
                ));
            }
        }
    }
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

#[test]
fn no_import_cycle_between_files() {
    let (g, _) = graph();
    // Depth-first search with colours; report one cycle path.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        colour: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        colour.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            match colour.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let i = stack.iter().position(|s| s == d).unwrap();
                    let mut cycle = stack[i..].to_vec();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(d, g, colour, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        colour.insert(m.to_string(), 2);
        None
    }
    let mut colour = BTreeMap::new();
    for m in g.keys().filter(|m| !m.is_empty()) {
        if colour.get(m.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(m, &g, &mut colour, &mut Vec::new()) {
                panic!("import cycle between files: {}", c.join(" -> "));
            }
        }
    }
}

#[test]
fn the_layout_checker_sees_cycles_and_upward_imports() {
    // The checker itself must be able to fail.
    let modules: BTreeSet<String> = ["store", "store::conn", "store::engine", "api", "router"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let root = imports(
        "store/mod.rs",
        "mod conn;\nmod engine;\npub use engine::Claimed;\nfn f() { conn::open(); }",
        &modules,
    );
    assert_eq!(
        root,
        ["store::conn", "store::engine"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let child = imports(
        "store/engine.rs",
        "use super::conn::Store;\nuse crate::store::X;",
        &modules,
    );
    assert_eq!(
        child,
        ["store", "store::conn"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let up = imports("store/conn.rs", "fn f() { crate::api::thing(); }", &modules);
    assert!(up.contains("api") && rank("api") > rank("store::conn"));
    assert_eq!(
        expand("crate::a::{b, c::{d, self}}"),
        vec!["crate::a::b", "crate::a::c::d", "crate::a::c"]
    );
}

#[test]
fn sql_only_in_store() {
    let (_, src) = graph();
    let mut bad = Vec::new();
    for (f, text) in &src {
        if f.starts_with("store/") {
            continue;
        }
        for (i, line) in code(text).lines().enumerate() {
            let sqlish = line.contains("sqlx::query")
                || [
                    "\"SELECT ",
                    "\"INSERT INTO",
                    "\"UPDATE ",
                    "\"DELETE FROM",
                    "\"CREATE ",
                    "\"DROP ",
                    "\"ALTER ",
                ]
                .iter()
                .any(|k| line.contains(k));
            if sqlish {
                bad.push(format!("src/{f}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "SQL outside src/store/:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_file_over_800_lines_before_its_tests() {
    let (_, src) = graph();
    let long: Vec<String> = src
        .iter()
        .filter_map(|(f, text)| {
            let before = text
                .find("#[cfg(test)]")
                .or_else(|| text.find("#[cfg(all(test"))
                .map_or(text.as_str(), |i| &text[..i]);
            let n = before.lines().count();
            (n > 800).then(|| format!("src/{f}: {n} lines"))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over 800 lines before their tests:\n{}",
        long.join("\n")
    );
}

#[test]
fn one_place_builds_http_clients() {
    let (_, src) = graph();
    let builders: Vec<String> = src
        .iter()
        .filter(|(_, text)| {
            let c = code(text);
            c.contains("reqwest::Client::builder") || c.contains("reqwest::ClientBuilder::new")
        })
        .map(|(f, _)| f.clone())
        .collect();
    // api/tls.rs builds every API and peer client; the executor's http handler its own.
    let allowed = ["api/tls.rs", "executor/handlers/http.rs"];
    let extra: Vec<&String> = builders
        .iter()
        .filter(|f| !allowed.contains(&f.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "HTTP clients built outside api/tls.rs: {extra:?}"
    );
}

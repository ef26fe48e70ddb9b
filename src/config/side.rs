//! The side files a node file names, as text: the regions file (`regions_file`, every
//! region and its database) and the tokens file (`auth.tokens_file`, API token hashes).
//! Parsing and validation only; `files.rs` reads them.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::error::ConfigError;
use super::model::{Config, DrillManager, RegionSpec, TokenSpec};
use super::names::valid_name;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionsFile {
    regions: Vec<RegionSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenSpec>,
}

/// Reads side-file text as `T`; errors name the file and `key`.
fn parse_side_file<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
    key: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Invalid {
        file: file.to_string(),
        key: key.into(),
        message: e.message().to_string(),
    })
}

/// Parses and validates a regions file read from `file`: unique valid names, postgres URLs.
pub fn parse_regions(text: &str, file: &str) -> Result<Vec<RegionSpec>, ConfigError> {
    let file = file.to_string();
    let parsed: RegionsFile = parse_side_file(text, &file, "regions")?;
    let mut seen = BTreeSet::new();
    for (i, r) in parsed.regions.iter().enumerate() {
        let key = format!("regions[{i}]");
        let bad = |message: String| ConfigError::Invalid {
            file: file.clone(),
            key: key.clone(),
            message,
        };
        if !valid_name(&r.name) {
            return Err(bad(format!("name {:?} is not a valid region name", r.name)));
        }
        if !seen.insert(r.name.clone()) {
            return Err(bad(format!("region `{}` is listed twice", r.name)));
        }
        if !(r.database_url.starts_with("postgres://")
            || r.database_url.starts_with("postgresql://"))
        {
            return Err(bad(
                "database_url must start with postgres:// or postgresql://".into(),
            ));
        }
        if let Some(u) = &r.api_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(bad("api_url must start with http:// or https://".into()));
            }
        }
    }
    if parsed.regions.is_empty() {
        return Err(ConfigError::Invalid {
            file,
            key: "regions".into(),
            message: "lists no region".into(),
        });
    }
    Ok(parsed.regions)
}

/// Parses and validates a tokens file read from `file`.
pub fn parse_tokens(text: &str, file: &str) -> Result<Vec<TokenSpec>, ConfigError> {
    let file = file.to_string();
    let parsed: TokensFile = parse_side_file(text, &file, "tokens")?;
    for (i, t) in parsed.tokens.iter().enumerate() {
        let bad = |message: String| ConfigError::Invalid {
            file: file.clone(),
            key: format!("tokens[{i}]"),
            message,
        };
        if t.name.is_empty() {
            return Err(bad("name must not be empty".into()));
        }
        if t.sha256.len() != 64
            || !t
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad(
                "sha256 must be 64 lower-case hex digits (swf auth hash-token)".into(),
            ));
        }
        if let Some(s) = t
            .scopes
            .iter()
            .find(|s| !["read", "submit", "admin"].contains(&s.as_str()))
        {
            return Err(bad(format!(
                "unknown scope `{s}` (use read, submit, admin)"
            )));
        }
    }
    Ok(parsed.tokens)
}

/// Checks that the node's `region` and `write_region` are among `regions` (read from
/// `regions_file`); errors name the node file `source`.
pub(crate) fn check_listed(
    config: &Config,
    regions: &[RegionSpec],
    regions_file: &str,
    source: &str,
) -> Result<(), ConfigError> {
    for (key, name) in [
        ("region", &config.region),
        ("write_region", &config.write_region),
    ] {
        if !regions.iter().any(|r| &r.name == name) {
            return Err(ConfigError::Invalid {
                file: source.to_string(),
                key: key.into(),
                message: format!("region `{name}` is not listed in {regions_file}"),
            });
        }
    }
    // Patroni-managed drills need every region's Patroni, and no other.
    if config.drills.manager == DrillManager::Patroni {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: source.to_string(),
            key,
            message,
        };
        if let Some(r) = regions
            .iter()
            .find(|r| !config.drills.patroni.contains_key(&r.name))
        {
            return Err(invalid(
                "drills.patroni".into(),
                format!(
                    "region `{}` of {regions_file} has no Patroni: add [drills.patroni.{}] url = \"http://...:8008\"",
                    r.name, r.name
                ),
            ));
        }
        if let Some(name) = config
            .drills
            .patroni
            .keys()
            .find(|n| !regions.iter().any(|r| &r.name == *n))
        {
            return Err(invalid(
                format!("drills.patroni.{name}"),
                format!("region `{name}` is not listed in {regions_file}"),
            ));
        }
    }
    Ok(())
}

/// Why a node with auth on would refuse every call, if it would.
pub(crate) fn auth_warning(config: &Config) -> Option<String> {
    (config.auth.enabled && config.auth.tokens.is_empty()).then(|| {
        "key `auth.tokens_file`: auth is enabled and no token is configured, so every \
         /v1 call will be refused with 401 (set auth.tokens_file, or auth.enabled = false \
         on a trusted network)"
            .to_string()
    })
}
/// Warnings for links that cross regions unprotected: another region's
/// database reached without verified TLS (`sslmode=verify-full` or
/// `verify-ca`), and, with auth on, another region's node reached over plain
/// `http://` (forwarded calls carry the caller's bearer token). Loopback
/// addresses (one machine, `swf dev`) are not warned about.
pub(crate) fn link_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for r in config.regions.iter().filter(|r| r.name != config.region) {
        let host = url_host(&r.database_url);
        let mode = url_query(&r.database_url, "sslmode");
        if !is_loopback(host) && !matches!(mode, Some("verify-full" | "verify-ca")) {
            out.push(format!(
                "region `{}`: its database_url reaches {host} without verified TLS \
                 (sslmode={}): add sslmode=verify-full&sslrootcert=... so the cross-region \
                 link is encrypted and the server is checked",
                r.name,
                mode.unwrap_or("unset")
            ));
        }
        if let Some(api) = &r.api_url {
            if config.auth.enabled && api.starts_with("http://") && !is_loopback(url_host(api)) {
                out.push(format!(
                    "region `{}`: api_url {api} is plain http: calls pinned to that region \
                     would forward the caller's bearer token unencrypted; use https://",
                    r.name
                ));
            }
        }
    }
    out
}

/// The host of `scheme://[user[:pass]@]host[:port][/...]` (brackets kept off IPv6).
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    host_port.split(':').next().unwrap_or("")
}

/// The value of query parameter `key`, if present.
fn url_query<'a>(url: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.is_empty()
        || host.starts_with('/')
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod link_tests {
    use super::*;

    #[test]
    fn unprotected_cross_region_links_are_warned_about() {
        let region = |name: &str, db: &str, api: Option<&str>| RegionSpec {
            name: name.into(),
            database_url: db.into(),
            api_url: api.map(Into::into),
        };
        // (regions, auth on, expected warnings: region names, in order)
        let cases: Vec<(Vec<RegionSpec>, bool, Vec<&str>)> = vec![
            (
                vec![region("eu", "postgres://u:p@db.eu.example:5432/swf", None)],
                true,
                vec!["eu"],
            ),
            (
                vec![region(
                    "eu",
                    "postgres://db.eu.example/swf?sslmode=require",
                    None,
                )],
                false,
                vec!["eu"],
            ),
            (
                vec![region(
                    "eu",
                    "postgres://db.eu.example/swf?sslmode=verify-full&sslrootcert=/ca.pem",
                    None,
                )],
                true,
                vec![],
            ),
            (
                vec![region("eu", "postgres://u@127.0.0.1:6000/swf", None)],
                true,
                vec![],
            ),
            (
                vec![region(
                    "eu",
                    "postgres://u@[::1]:6000/swf",
                    Some("http://[::1]:4001"),
                )],
                true,
                vec![],
            ),
            (
                vec![region(
                    "eu",
                    "postgres://db/swf?sslmode=verify-ca",
                    Some("http://node.eu:4000"),
                )],
                true,
                vec!["eu"],
            ),
            (
                vec![region(
                    "eu",
                    "postgres://db/swf?sslmode=verify-ca",
                    Some("http://node.eu:4000"),
                )],
                false,
                vec![],
            ),
            // The node's own region is its local link: not warned about.
            (
                vec![region("us", "postgres://db.us.example/swf", None)],
                true,
                vec![],
            ),
        ];
        for (regions, auth, want) in cases {
            let mut c = Config::for_dev(
                "n",
                "us",
                "us",
                ([127, 0, 0, 1], 0).into(),
                "postgres://x/y",
            );
            c.regions = regions.clone();
            c.auth.enabled = auth;
            let got = link_warnings(&c);
            assert_eq!(got.len(), want.len(), "{regions:?} auth={auth}: {got:?}");
            for (g, w) in got.iter().zip(want) {
                assert!(g.starts_with(&format!("region `{w}`")), "{g}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::{db, load, top};

    fn region(name: &str) -> RegionSpec {
        RegionSpec {
            name: name.into(),
            database_url: format!("postgres://db.{name}/swf"),
            api_url: None,
        }
    }

    #[test]
    fn patroni_drills_need_every_listed_region_and_no_other() {
        let text = concat!(
            top!(),
            db!(),
            "[drills]\nmanager = \"patroni\"\n",
            "[drills.patroni.us-east]\nurl = \"http://a:8008\"\n",
            "[drills.patroni.eu-west]\nurl = \"http://b:8008\"\n",
        );
        let c = load(text, &[]).expect("loads").config;
        let both = [region("us-east"), region("eu-west")];
        assert!(check_listed(&c, &both, "r.toml", "n.toml").is_ok());
        let three = [region("us-east"), region("eu-west"), region("ap-south")];
        let err = check_listed(&c, &three, "r.toml", "n.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ap-south") && err.contains("[drills.patroni.ap-south]"),
            "{err}"
        );
        let one = [region("us-east")];
        let err = check_listed(&c, &one, "r.toml", "n.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("drills.patroni.eu-west") && err.contains("not listed"),
            "{err}"
        );
    }
}

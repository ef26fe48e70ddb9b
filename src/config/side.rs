//! The side files a node file names, as text: the regions file (`regions_file`, every
//! region and its database) and the tokens file (`auth.tokens_file`, API token hashes).
//! Parsing and validation only; `files.rs` reads them.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::error::ConfigError;
use super::model::{Config, RegionSpec, TokenSpec};
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

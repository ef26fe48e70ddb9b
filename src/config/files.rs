//! The I/O edge of config, and the only file here that touches the machine: it reads the node
//! file, the process environment and the host name, hands them to the pure [`parse`], then
//! checks that the TLS files named can be opened and reads the side files (regions, tokens).

use std::path::Path;
use std::sync::OnceLock;

use super::env::{ignored_env, var_for};
use super::error::ConfigError;
use super::model::{Config, Loaded, RegionSpec, TokenSpec};
use super::parse::{parse, Input};
use super::side::{auth_warning, check_listed, link_warnings, parse_regions, parse_tokens};

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// Loads and validates a regions file: unique valid names, postgres URLs.
pub fn load_regions(path: &Path) -> Result<Vec<RegionSpec>, ConfigError> {
    parse_regions(&read(path)?, &path.display().to_string())
}

/// Loads and validates a tokens file.
pub fn load_tokens(path: &Path) -> Result<Vec<TokenSpec>, ConfigError> {
    parse_tokens(&read(path)?, &path.display().to_string())
}

/// The `SWF_*` variables of this process that may name node-file keys.
fn process_env(source: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("SWF_") || ignored_env(name) {
            continue;
        }
        let value = value.into_string().map_err(|_| ConfigError::Env {
            file: source.to_string(),
            var: name.to_string(),
            message: "value is not valid UTF-8".to_string(),
        })?;
        env.push((name.to_string(), value));
    }
    Ok(env)
}

/// TLS files must be readable when the config is loaded.
fn check_tls_files(
    config: &Config,
    source: &str,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    let api = &config.api;
    for (key, path) in [
        ("api.tls_cert", &api.tls_cert),
        ("api.tls_key", &api.tls_key),
        ("api.client_ca", &api.client_ca),
        ("api.peer_ca", &api.peer_ca),
    ] {
        let Some(p) = path else { continue };
        if let Err(e) = std::fs::File::open(p) {
            let mut message = format!("cannot read {}: {e}", p.display());
            if let Some(var) = var_for(env, key) {
                message.push_str(&format!(" (set by environment variable {var})"));
            }
            return Err(ConfigError::Invalid {
                file: source.to_string(),
                key: key.to_string(),
                message,
            });
        }
    }
    Ok(())
}

impl Config {
    /// Reads `path` and applies the `SWF_*` variables of this process's environment, then
    /// reads the tokens and regions files it names.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = read(path)?;
        let source = path.display().to_string();
        let env = process_env(&source)?;
        let mut loaded = Self::from_toml_str(&text, &source, &env)?;
        loaded.config.source = Some(path.to_path_buf());
        if let Some(file) = loaded.config.auth.tokens_file.clone() {
            loaded.config.auth.tokens = load_tokens(&file)?;
        }
        loaded.warnings.extend(auth_warning(&loaded.config));
        if let Some(file) = loaded.config.regions_file.clone() {
            let regions = load_regions(&file)?;
            check_listed(
                &loaded.config,
                &regions,
                &file.display().to_string(),
                &source,
            )?;
            loaded.config.regions = regions;
        }
        loaded.warnings.extend(link_warnings(&loaded.config));
        Ok(loaded)
    }

    /// Parses and validates `text` as if read from the file `source`, with `env` as the
    /// environment (only `SWF_*` entries matter) and this machine's host name, and checks
    /// that the TLS files it names can be opened. Reads no side file.
    pub fn from_toml_str(
        text: &str,
        source: &str,
        env: &[(String, String)],
    ) -> Result<Loaded, ConfigError> {
        static HOSTNAME: OnceLock<String> = OnceLock::new();
        let input = Input {
            text,
            file: source,
            env,
            hostname: HOSTNAME.get_or_init(hostname),
        };
        let loaded = parse(&input)?;
        check_tls_files(&loaded.config, source, env)?;
        Ok(loaded)
    }
}

/// This machine's host name: `gethostname(2)`, then `/etc/hostname`, then `"node"`.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes, and gethostname writes at most
    // that many; the result is read only up to the first NUL (or the buffer's end).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if let Ok(name) = std::str::from_utf8(&buf[..end]) {
            if !name.trim().is_empty() {
                return name.trim().to_string();
            }
        }
    }
    match std::fs::read_to_string("/etc/hostname") {
        Ok(name) if !name.trim().is_empty() => name.trim().to_string(),
        _ => "node".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::{db, top};

    #[test]
    fn load_reads_a_file_and_names_it() {
        let dir = std::env::temp_dir().join(format!("swf-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("node.toml");
        let text = concat!("regions_file = \"regions/a.toml\"\n", top!(), db!());
        std::fs::write(&path, text).expect("write");
        let loaded = Config::load(&path);
        let missing = Config::load(&dir.join("absent.toml"));
        let _ = std::fs::remove_dir_all(&dir);

        // The process env may carry SWF_* settings of its own; only check what they cannot move.
        if let Ok(loaded) = loaded {
            assert_eq!(loaded.config.source.as_deref(), Some(path.as_path()));
            assert_eq!(loaded.config.regions_file, Some(dir.join("regions/a.toml")));
        }
        let err = missing.expect_err("absent file").to_string();
        assert!(
            err.contains("absent.toml") && err.contains("cannot read"),
            "{err}"
        );
    }
}

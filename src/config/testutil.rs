//! Helpers the config tests share: a small valid node file in two parts (`top!`, `db!`) and
//! the pure parser run as a host called `host` would run it.

use super::error::ConfigError;
use super::model::{Config, Loaded};
use super::parse::{parse, Input};

pub(crate) const FILE: &str = "deploy/x.toml";

// The smallest valid file, split so cases can put top-level keys before its table.
macro_rules! top {
    () => {
        "region = \"us-east\"\n"
    };
}
macro_rules! db {
    () => {
        "[database]\nurl = \"postgres://swf:secret@db:5432/swf\"\n"
    };
}
pub(crate) use {db, top};

pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The pure parser, as a host called `host` would run it.
pub(crate) fn load(text: &str, pairs: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let env = env(pairs);
    parse(&Input {
        text,
        file: FILE,
        env: &env,
        hostname: "host",
    })
}

pub(crate) fn pools(c: &Config) -> Vec<(String, usize, String)> {
    c.worker_pools
        .iter()
        .map(|(n, p)| (n.clone(), p.size, p.queue.clone()))
        .collect()
}

pub(crate) type Pools = &'static [(&'static str, usize, &'static str)];
pub(crate) const DEFAULT_POOL: Pools = &[("default", 10, "default")];

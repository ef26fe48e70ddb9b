//! Node configuration: the TOML node file (DESIGN.md section 4), its `SWF_*` environment
//! overrides, validation, legacy-key handling and the `swf config check` / `swf config migrate`
//! output.
//!
//! **One key table.** `keys.rs` lists every key of the node file once: its kind (which also
//! says how an `SWF_<KEY>` variable is read, nesting with `__`), its order (how `swf config
//! migrate` writes top-level keys, and how unknown-key errors list the expected ones), and
//! whether `swf config check` reports it. Parsing goes through that table rather than through
//! serde structs: the parsed file is walked against it (unknown keys and values of the wrong
//! type are refused in serde's words, as before), then values are read with getters typed by
//! it. So adding a key is one table entry, its typed field in `model.rs`, and the line in
//! `parse.rs` that validates it and gives its default.
//!
//! **Pure parsing, I/O at the edge.** [`parse`] takes the text, the file's name, an
//! environment map and the host name, and returns a [`Loaded`] or a [`ConfigError`] without
//! touching the machine; `tests.rs` drives it with tables. `files.rs` is the edge:
//! [`Config::load`] reads the node file, `std::env` and the host name, checks that the TLS
//! files named can be opened, and reads the regions and tokens files.
//!
//! | file | owns |
//! |---|---|
//! | `model.rs` | [`Config`], its sections and their defaults, [`NodeType`], [`RegionSpec`], [`TokenSpec`] |
//! | `keys.rs` | the key table; checking a parsed file against it |
//! | `parse.rs` | text + environment map to [`Config`]: the pipeline and per-key validation |
//! | `env.rs` | `SWF_<KEY>` overrides, [`IGNORED_ENV`] |
//! | `legacy.rs` | `mode = "orchestrator"` and `[[worker_pools]]` rewrites |
//! | `migrate.rs` | [`migrate_legacy`] (`swf config migrate`) |
//! | `side.rs` | regions and tokens file formats ([`parse_regions`], [`parse_tokens`]) |
//! | `files.rs` | reading files and the environment: [`Config::load`], [`load_regions`], [`load_tokens`] |
//! | `report.rs` | [`check_report`], [`check_report_text`] (`swf config check`) |
//! | `retention.rs` | the `[retention]` keys: durations such as `"7d"`, `"off"` |
//! | `error.rs` | [`ConfigError`] and the context that words it (file, key, variable) |
//! | `names.rs` | [`valid_name`], [`redact_url`] |
//!
//! Deprecations and ignored settings come back as warnings in [`Loaded`]; the caller decides
//! how to show them (log line for `swf serve`, stderr for `swf config check`).
//! The database URL may hold a password: it is never printed unredacted, including by `Debug`.

mod env;
mod error;
mod files;
mod keys;
mod legacy;
mod migrate;
mod model;
mod names;
mod parse;
mod report;
mod retention;
mod side;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use env::IGNORED_ENV;
pub use error::ConfigError;
pub use files::{load_regions, load_tokens};
pub use migrate::migrate_legacy;
pub use model::{
    ApiConfig, AuthConfig, CommandHandlerConfig, Config, DatabaseConfig, DrillHooks, DrillManager,
    ExecutorConfig, HandlersConfig, HttpHandlerConfig, LimitsConfig, Loaded, NodeType,
    PatroniMember, PoolConfig, RegionSpec, RetentionConfig, RoutingConfig, TokenSpec,
};
pub use names::{redact_url, valid_name};
pub use parse::{parse, Input};
pub use report::{check_report, check_report_text};
pub use side::{parse_regions, parse_tokens};

//! [`ConfigError`], and [`Ctx`]: the one place config errors are built, so every message names
//! the file, the dotted key and, when the environment set that key, the variable that did.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::names::valid_name;

/// Why a config could not be loaded. Every message names the file and, where there is one,
/// the dotted key or the environment variable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config file {}: cannot read: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {file}: invalid TOML at line {line} column {column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("config file {file}: unknown key `{key}`{}", expected_suffix(.expected))]
    UnknownKey {
        file: String,
        key: String,
        expected: String,
    },
    #[error("config file {file}: key `{key}` is required")]
    Missing { file: String, key: String },
    #[error("config file {file}: key `{key}`: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
    #[error("config file {file}: environment variable {var}: {message}")]
    Env {
        file: String,
        var: String,
        message: String,
    },
    #[error(
        "config file {file}: node is disabled: enable_client and enable_executor are both false \
         (a node must have at least one role)"
    )]
    Disabled { file: String },
}

fn expected_suffix(expected: &str) -> String {
    if expected.is_empty() {
        String::new()
    } else {
        format!(" ({expected})")
    }
}

/// Error-building context: the file name, and which keys the environment set (so an error
/// about such a key says where the value came from).
pub(crate) struct Ctx {
    pub(crate) file: String,
    /// Dotted key to the `SWF_*` variable that set it.
    pub(crate) env_keys: BTreeMap<String, String>,
}

impl Ctx {
    pub(crate) fn new(file: &str) -> Ctx {
        Ctx {
            file: file.to_string(),
            env_keys: BTreeMap::new(),
        }
    }

    /// A file named by `key`, relative to the config file's directory.
    pub(crate) fn path(
        &self,
        key: &str,
        v: Option<String>,
    ) -> Result<Option<PathBuf>, ConfigError> {
        match v {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Err(self.invalid(key, "must not be empty")),
            Some(s) => Ok(Some(
                Path::new(&self.file)
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(s.trim()),
            )),
        }
    }

    pub(crate) fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let mut message = message.into();
        if let Some(var) = self.env_keys.get(key) {
            message.push_str(&format!(" (set by environment variable {var})"));
        }
        ConfigError::Invalid {
            file: self.file.clone(),
            key: key.to_string(),
            message,
        }
    }

    pub(crate) fn missing(&self, key: &str) -> ConfigError {
        ConfigError::Missing {
            file: self.file.clone(),
            key: key.to_string(),
        }
    }

    pub(crate) fn unknown(&self, key: &str, expected: &str) -> ConfigError {
        ConfigError::UnknownKey {
            file: self.file.clone(),
            key: key.to_string(),
            expected: expected.to_string(),
        }
    }

    pub(crate) fn env(&self, var: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Env {
            file: self.file.clone(),
            var: var.to_string(),
            message: message.into(),
        }
    }

    /// Checks an integer setting against `lo..=hi` and converts it to its field's type.
    pub(crate) fn ranged<T: TryFrom<i64>>(
        &self,
        key: &str,
        value: Option<i64>,
        default: i64,
        lo: i64,
        hi: i64,
    ) -> Result<T, ConfigError> {
        let v = value.unwrap_or(default);
        let range = if hi == i64::MAX {
            format!("must be at least {lo}")
        } else {
            format!("must be between {lo} and {hi}")
        };
        if v < lo || v > hi {
            return Err(self.invalid(key, format!("{range} (got {v})")));
        }
        T::try_from(v).map_err(|_| self.invalid(key, format!("{range} (got {v})")))
    }

    pub(crate) fn name(&self, key: &str, value: &str, what: &str) -> Result<(), ConfigError> {
        if valid_name(value) {
            Ok(())
        } else {
            Err(self.invalid(
                key,
                format!("{what} must be 1 to 64 characters of A-Z a-z 0-9 _ - (got {value:?})"),
            ))
        }
    }
}

//! [`PgError`]: why locating binaries, initializing a cluster or running
//! a server failed, with what to do about it.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use super::conf::START_DEADLINE;

const FIX_HINT: &str = "install PostgreSQL server binaries, e.g. `apt-get install postgresql`, \
                        or set SWF_PG_BIN=/path/to/bin";

/// Errors from locating binaries, initializing clusters and running servers.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "PostgreSQL server binaries (postgres, initdb) not found; searched: {}. To fix: {}",
        .searched.join("; "),
        FIX_HINT
    )]
    BinariesNotFound { searched: Vec<String> },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        command: String,
        status: ExitStatus,
        output: String,
    },
    #[error(
        "PostgreSQL server `{name}` did not accept connections within {}s (it was killed); last log lines:\n{log_tail}",
        START_DEADLINE.as_secs()
    )]
    StartTimeout { name: String, log_tail: String },
    #[error(
        "PostgreSQL server `{name}` exited during startup ({status}); last log lines:\n{log_tail}"
    )]
    Exited {
        name: String,
        status: ExitStatus,
        log_tail: String,
    },
    #[error(
        "directory {} is not traversable by user `{user}` (the PostgreSQL server runs as `{user}` because we run as root); \
         make it searchable, e.g. `chmod o+x {}`, or use a data directory elsewhere",
        .path.display(),
        .path.display()
    )]
    NotTraversable { path: PathBuf, user: String },
}

pub(super) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> PgError {
    let context = context.into();
    move |source| PgError::Io { context, source }
}

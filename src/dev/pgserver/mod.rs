//! Real PostgreSQL server processes, started from the machine's PostgreSQL binaries, for the
//! embedded dev cluster (`swf dev`) and the integration test harness.
//!
//! The API is blocking; async callers wrap it in `tokio::task::spawn_blocking`.
//!
//! Design notes:
//! - PostgreSQL refuses to run as root. When `geteuid() == 0`, `initdb`, `pg_basebackup` and
//!   `postgres` run as the `postgres` account (fallback `nobody`), data directories are chowned
//!   to it and every parent directory must be searchable by it ([`PgError::NotTraversable`]).
//! - Servers never outlive this process: every `postgres` child gets `PR_SET_PDEATHSIG = SIGQUIT`
//!   (immediate shutdown). The kernel sends that signal when the *thread* that forked the child
//!   exits, so all servers are forked by one dedicated spawner thread that lives as long as the
//!   process. `std` applies `setgroups(0)`/`setgid`/`setuid` before running `pre_exec` hooks;
//!   that order matters because a credential change clears the parent-death signal, and the hook
//!   verifies it (the spawn fails rather than silently losing the guarantee).
//! - `init_primary` and `init_replica` build the cluster in a staging sibling directory and
//!   rename it into place, so a crash half way never leaves a data directory that looks
//!   initialized (has `PG_VERSION`) but is not.
//!
//! Layout: `binaries` locates the PostgreSQL binaries, `user` is the
//! unprivileged account and file ownership, `process` spawns children and
//! checks pids, `init` creates data directories, `server` runs a
//! postmaster, `conf` holds the fixed settings and `error` the error type.

mod binaries;
mod conf;
mod error;
mod init;
mod process;
mod server;
#[cfg(test)]
mod testutil;
mod user;

pub use binaries::{find_on_path, PgBinaries};
pub use error::PgError;
pub use init::{
    fence_data_dir, free_port, init_primary, init_replica, install_server_tls,
    set_primary_conninfo, PgTls,
};
pub use process::{
    cleanup_stale_dirs, hand_dir_to_server_user, pid_alive, postmaster_pid, signal, spawn_service,
};
pub use server::{PgServer, PgSettings};

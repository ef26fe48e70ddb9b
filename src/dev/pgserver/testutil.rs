//! Helpers shared by the unit tests of the pgserver modules: a scratch
//! directory the server user can reach, `psql`, and waiting on a condition.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::binaries::{combined_output, PgBinaries};
use super::conf::{HOST, POLL, SUPERUSER};

/// A scratch dir under /tmp, traversable by the server user, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> TempDir {
        let path = PathBuf::from(format!("/tmp/swf-pgserver-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        DirBuilder::new().mode(0o755).create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(super) fn psql(bins: &PgBinaries, port: u16, sql: &str) -> String {
    let out = Command::new(bins.tool("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            HOST,
            "-p",
            &port.to_string(),
        ])
        .args(["-U", SUPERUSER, "-d", "postgres", "-Atc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        combined_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub(super) fn eventually(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    let held = crate::wait::until_true_blocking(timeout, POLL, cond);
    assert!(held, "timed out waiting for {what}");
}

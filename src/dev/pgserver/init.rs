//! Creating data directories: `initdb` for a primary, `pg_basebackup` for
//! a replica (both built in a staging sibling and renamed into place), a
//! replica's `primary_conninfo`, and the files that turn TLS on.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tracing::{debug, info};

use super::binaries::PgBinaries;
use super::conf::{CONF_FILE, HOST, PG_HBA, SUPERUSER, SWF_CONF, TLS_CA_FILE, TLS_CONF_FILE};
use super::error::{io_err, PgError};
use super::process::run_as_server_user;
use super::user::{check_traversable, chown_tree, run_as, set_mode, write_owned, RunAs};

/// Returns a free TCP port on 127.0.0.1 (bind port 0, read it, release it).
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind((HOST, 0))?.local_addr()?.port())
}

pub(super) fn absolute(path: &Path) -> Result<PathBuf, PgError> {
    std::path::absolute(path).map_err(io_err(format!("cannot resolve {}", path.display())))
}

pub(super) fn is_initialized(data_dir: &Path) -> bool {
    data_dir.join("PG_VERSION").is_file()
}

pub(super) fn parent_of(data_dir: &Path) -> Result<&Path, PgError> {
    data_dir.parent().ok_or_else(|| PgError::Io {
        context: format!(
            "data directory {} has no parent directory",
            data_dir.display()
        ),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

/// Creates the parent (mode 0755) if needed, checks that the server user can reach it, and
/// returns a fresh, empty staging directory owned by that user, next to `data_dir`.
fn prepare_staging(data_dir: &Path, user: Option<&RunAs>) -> Result<PathBuf, PgError> {
    if data_dir.exists() {
        let non_empty = fs::read_dir(data_dir)
            .map_err(io_err(format!("cannot read {}", data_dir.display())))?
            .next()
            .is_some();
        if non_empty {
            return Err(PgError::Io {
                context: format!(
                    "cannot initialize {}: it is not empty and is not a PostgreSQL data directory (no PG_VERSION); \
                     remove it or choose another directory",
                    data_dir.display()
                ),
                source: io::Error::from(io::ErrorKind::DirectoryNotEmpty),
            });
        }
    }
    let parent = parent_of(data_dir)?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)
        .map_err(io_err(format!("cannot create {}", parent.display())))?;
    if let Some(u) = user {
        check_traversable(parent, u)?;
    }
    let file_name = data_dir.file_name().unwrap_or_default().to_string_lossy();
    let staging = parent.join(format!(".{file_name}.swf-staging"));
    if fs::symlink_metadata(&staging).is_ok() {
        fs::remove_dir_all(&staging).map_err(io_err(format!(
            "cannot remove stale staging dir {}",
            staging.display()
        )))?;
    }
    DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io_err(format!("cannot create {}", staging.display())))?;
    if let Some(u) = user {
        chown_tree(&staging, u).map_err(io_err(format!(
            "cannot chown {} to {}",
            staging.display(),
            u.name
        )))?;
    }
    set_mode(&staging, 0o700)?;
    Ok(staging)
}

/// Atomically moves a finished staging directory to `data_dir` (which may be an empty dir).
fn finish_staging(staging: &Path, data_dir: &Path) -> Result<(), PgError> {
    fs::rename(staging, data_dir).map_err(io_err(format!(
        "cannot move {} to {}",
        staging.display(),
        data_dir.display()
    )))?;
    set_mode(data_dir, 0o700)
}

fn with_staging(
    data_dir: &Path,
    user: Option<&RunAs>,
    build: impl FnOnce(&Path) -> Result<(), PgError>,
) -> Result<(), PgError> {
    let staging = prepare_staging(data_dir, user)?;
    let result = build(&staging).and_then(|()| finish_staging(&staging, data_dir));
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// initdb a fresh primary cluster if `data_dir` has no `PG_VERSION` (an existing cluster is left
/// as is). Superuser `postgres`, trust auth on local/127.0.0.1/::1 incl. replication, UTF8 with
/// the C locale, and the settings of [`SWF_CONF`] in an included `swf.conf`.
pub fn init_primary(bins: &PgBinaries, data_dir: &Path) -> Result<(), PgError> {
    let data_dir = absolute(data_dir)?;
    if is_initialized(&data_dir) {
        debug!(data_dir = %data_dir.display(), "primary already initialized");
        return Ok(());
    }
    let user = run_as()?;
    let user = user.as_ref();
    info!(data_dir = %data_dir.display(), "initializing PostgreSQL primary");
    with_staging(&data_dir, user, |staging| {
        let mut cmd = Command::new(bins.tool("initdb"));
        cmd.arg("-D").arg(staging).args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        run_as_server_user(cmd, user)?;
        write_owned(&staging.join(CONF_FILE), SWF_CONF, false, user)?;
        write_owned(&staging.join("pg_hba.conf"), PG_HBA, false, user)?;
        write_owned(
            &staging.join("postgresql.conf"),
            &format!("\n# singularity-workflow dev/test settings\ninclude '{CONF_FILE}'\n"),
            true,
            user,
        )
    })
}

/// `pg_basebackup` from the primary on 127.0.0.1:`primary_port` into `data_dir` with `-R`
/// (standby.signal + primary_conninfo) and `-X stream`. An existing `PG_VERSION` is left as is.
pub fn init_replica(bins: &PgBinaries, primary_port: u16, data_dir: &Path) -> Result<(), PgError> {
    let data_dir = absolute(data_dir)?;
    if is_initialized(&data_dir) {
        debug!(data_dir = %data_dir.display(), "replica already initialized");
        return Ok(());
    }
    let user = run_as()?;
    let user = user.as_ref();
    info!(data_dir = %data_dir.display(), primary_port, "initializing PostgreSQL replica");
    with_staging(&data_dir, user, |staging| {
        let mut cmd = Command::new(bins.tool("pg_basebackup"));
        cmd.args([
            "-h",
            HOST,
            "-p",
            &primary_port.to_string(),
            "-U",
            SUPERUSER,
            "-w",
            "-D",
        ])
        .arg(staging)
        .args(["-R", "-X", "stream", "--checkpoint=fast"]);
        run_as_server_user(cmd, user)
    })
}

/// Points a replica at its upstream: rewrites `primary_conninfo` in
/// `postgresql.auto.conf` (the port of a dev cluster's primary, or of the
/// delay proxy in front of it, changes between starts). `application_name`
/// names the standby in the primary's `pg_stat_replication`.
pub fn set_primary_conninfo(
    data_dir: &Path,
    port: u16,
    application_name: &str,
) -> Result<(), PgError> {
    let path = data_dir.join("postgresql.auto.conf");
    let text = fs::read_to_string(&path).map_err(|source| PgError::Io {
        context: format!("read {}", path.display()),
        source,
    })?;
    let mut out: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("primary_conninfo"))
        .map(|l| format!("{l}\n"))
        .collect();
    // A server with TLS installed also replicates over TLS, verifying its upstream.
    let ca = data_dir.join(TLS_CA_FILE);
    // sslcert names a file that does not exist: otherwise libpq looks in
    // $HOME/.postgresql, which the server user may not be allowed to read.
    let tls = if ca.exists() {
        format!(
            " sslmode=verify-full sslrootcert={} sslcert={}",
            ca.display(),
            data_dir.join("swf-no-client-cert.crt").display()
        )
    } else {
        String::new()
    };
    out.push_str(&format!(
        "primary_conninfo = 'host={HOST} port={port} user={SUPERUSER} application_name={application_name}{tls}'\n"
    ));
    fs::write(&path, out).map_err(|source| PgError::Io {
        context: format!("write {}", path.display()),
        source,
    })
}

/// Fences the (stopped) server in `data_dir` from its next start: new
/// sessions are read-only by default, as `ALTER SYSTEM SET
/// default_transaction_read_only = on` would make them (and `ALTER SYSTEM
/// RESET` undoes it).
pub fn fence_data_dir(data_dir: &Path) -> Result<(), PgError> {
    let path = data_dir.join("postgresql.auto.conf");
    let text = fs::read_to_string(&path).map_err(io_err(format!("read {}", path.display())))?;
    let mut out: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("default_transaction_read_only"))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str("default_transaction_read_only = 'on'\n");
    fs::write(&path, out).map_err(io_err(format!("write {}", path.display())))
}

/// PEM texts a server needs for TLS.
#[derive(Debug, Clone)]
pub struct PgTls {
    pub cert_pem: String,
    pub key_pem: String,
    /// Verifies the upstream of a replica's replication connection.
    pub ca_pem: String,
}

impl PgTls {
    /// The PEM texts of a [`crate::dev::pki::DevPki`]: its certificate and key
    /// for the server, its CA for replication.
    pub fn from_pki(pki: &crate::dev::pki::DevPki) -> Result<PgTls, PgError> {
        let read =
            |p: &Path| fs::read_to_string(p).map_err(io_err(format!("read {}", p.display())));
        Ok(PgTls {
            cert_pem: read(&pki.cert)?,
            key_pem: read(&pki.key)?,
            ca_pem: read(&pki.ca_cert)?,
        })
    }
}

/// Makes the server in `data_dir` accept TLS (from its next start): writes
/// `server.crt`, `server.key` (mode 0600, owned by the server user) and
/// the CA into the data dir, and `ssl = on` into an included `swf-tls.conf`.
/// Idempotent. Clients choose TLS with `sslmode` (plain connections stay
/// allowed by pg_hba); replicas set up afterwards replicate over TLS.
pub fn install_server_tls(data_dir: &Path, tls: &PgTls) -> Result<(), PgError> {
    let data_dir = absolute(data_dir)?;
    let user = run_as()?;
    let user = user.as_ref();
    write_owned(&data_dir.join("server.crt"), &tls.cert_pem, false, user)?;
    write_owned(&data_dir.join("server.key"), &tls.key_pem, false, user)?;
    write_owned(&data_dir.join(TLS_CA_FILE), &tls.ca_pem, false, user)?;
    write_owned(
        &data_dir.join(TLS_CONF_FILE),
        "# Written by singularity-workflow (pgserver): TLS for clients and replication.\n\
         ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        false,
        user,
    )?;
    let conf = data_dir.join("postgresql.conf");
    let text = fs::read_to_string(&conf).map_err(io_err(format!("read {}", conf.display())))?;
    if !text.contains(TLS_CONF_FILE) {
        write_owned(
            &conf,
            &format!("include_if_exists '{TLS_CONF_FILE}'\n"),
            true,
            user,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::pgserver::binaries::tests::bins;
    use crate::dev::pgserver::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn unreachable_parent_dir_is_named() {
        let Some(user) = run_as().unwrap() else {
            return; // not root: the server runs as ourselves, nothing to check
        };
        let bins = bins();
        let tmp = TempDir::new("private");
        let private = tmp.0.join("private");
        DirBuilder::new().mode(0o700).create(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let err =
            init_primary(&bins, &private.join("data")).expect_err("0700 root dir must be rejected");
        match &err {
            PgError::NotTraversable { path, user: name } => {
                assert_eq!(path, &private);
                assert_eq!(name, &user.name);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string().contains(&private.display().to_string()),
            "{err}"
        );
    }
}

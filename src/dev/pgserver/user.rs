//! The unprivileged account the servers run as when this process is root
//! (PostgreSQL refuses root), and handing files and directories to it.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::error::{io_err, PgError};

/// The account the server processes run as when we are root.
#[derive(Debug, Clone)]
pub(super) struct RunAs {
    pub(super) name: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// `None` when we are not root (servers run as ourselves).
pub(super) fn run_as() -> Result<Option<RunAs>, PgError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_err("cannot read /etc/passwd"))?;
    for name in ["postgres", "nobody"] {
        if let Some((uid, gid)) = passwd_lookup(&passwd, name) {
            if uid != 0 {
                return Ok(Some(RunAs {
                    name: name.to_string(),
                    uid,
                    gid,
                }));
            }
        }
    }
    Err(PgError::Io {
        context:
            "running as root, but PostgreSQL refuses root and neither a `postgres` nor a `nobody` \
                  account exists in /etc/passwd (create one, e.g. `useradd --system postgres`)"
                .to_string(),
        source: io::Error::from(io::ErrorKind::NotFound),
    })
}

fn passwd_lookup(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != user {
            return None;
        }
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// Every directory from `dir` up to `/` must be searchable by `user` (owner, group or other x
/// bit, in the order the kernel checks them; supplementary groups are dropped at spawn).
pub(super) fn check_traversable(dir: &Path, user: &RunAs) -> Result<(), PgError> {
    let real =
        fs::canonicalize(dir).map_err(io_err(format!("cannot resolve {}", dir.display())))?;
    for d in real.ancestors() {
        let md = fs::metadata(d).map_err(io_err(format!("cannot stat {}", d.display())))?;
        let mode = md.mode();
        let ok = if md.uid() == user.uid {
            mode & 0o100 != 0
        } else if md.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(PgError::NotTraversable {
                path: d.to_path_buf(),
                user: user.name.clone(),
            });
        }
    }
    Ok(())
}

/// Recursively hands `path` to `user` (symlinks are not followed; vanished entries are fine,
/// e.g. temp files of a server that just stopped).
pub(super) fn chown_tree(path: &Path, user: &RunAs) -> io::Result<()> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if md.uid() != user.uid || md.gid() != user.gid {
        match std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    if md.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), user)?;
        }
    }
    Ok(())
}

pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), PgError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(format!(
        "cannot chmod {:o} {}",
        mode,
        path.display()
    )))
}

/// Writes `contents` to `path` (mode 0600) and hands it to `user`.
pub(super) fn write_owned(
    path: &Path,
    contents: &str,
    append: bool,
    user: Option<&RunAs>,
) -> Result<(), PgError> {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .mode(0o600)
        .open(path)
        .map_err(io_err(format!("cannot open {}", path.display())))?;
    f.write_all(contents.as_bytes())
        .map_err(io_err(format!("cannot write {}", path.display())))?;
    if let Some(u) = user {
        std::os::unix::fs::lchown(path, Some(u.uid), Some(u.gid))
            .map_err(io_err(format!("cannot chown {}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::pgserver::binaries::parse_dotted;

    #[test]
    fn passwd_parsing() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104:PG,,,:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(passwd_lookup(passwd, "postgres"), Some((101, 104)));
        assert_eq!(passwd_lookup(passwd, "nobody"), None);
        assert_eq!(parse_dotted("15"), Some(vec![15]));
        assert_eq!(parse_dotted("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_dotted("common"), None);
    }
}

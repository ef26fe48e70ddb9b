//! Locating the machine's PostgreSQL server binaries ([`PgBinaries`]),
//! and describing the commands run from them and their output.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tracing::debug;

use super::error::{io_err, PgError};

/// A directory holding the PostgreSQL server binaries, and their version (e.g. "15.14").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    pub bin_dir: PathBuf,
    pub version: String,
}

impl PgBinaries {
    /// Finds the binaries: env `SWF_PG_BIN` (a bin dir; if set it must be valid), else
    /// `postgres` + `initdb` on `PATH` (resolved to the directory of the real `postgres` when
    /// PATH only holds symlinks), else `pg_config --bindir`, else the highest
    /// `/usr/lib/postgresql/*/bin`.
    pub fn locate() -> Result<PgBinaries, PgError> {
        if let Some(dir) = std::env::var_os("SWF_PG_BIN") {
            let dir = PathBuf::from(dir);
            if has_server_binaries(&dir) {
                return Self::from_dir(dir);
            }
            return Err(PgError::BinariesNotFound {
                searched: vec![format!(
                    "SWF_PG_BIN={} (no executable `postgres` and `initdb` in that directory)",
                    dir.display()
                )],
            });
        }
        let mut searched = Vec::new();

        match std::env::var_os("PATH") {
            Some(path) => {
                if let Some(dir) = std::env::split_paths(&path).find(|d| has_server_binaries(d)) {
                    // PATH often holds only symlinks to postgres/initdb (e.g. /usr/local/bin);
                    // the directory of the real binary also has pg_isready, pg_basebackup, ...
                    let real = fs::canonicalize(dir.join("postgres"))
                        .ok()
                        .and_then(|p| p.parent().map(Path::to_path_buf))
                        .filter(|d| has_server_binaries(d));
                    return Self::from_dir(real.unwrap_or(dir));
                }
                searched.push(format!("PATH ({})", path.to_string_lossy()));
            }
            None => searched.push("PATH (unset)".to_string()),
        }

        match find_on_path("pg_config") {
            Some(pg_config) => match Command::new(&pg_config).arg("--bindir").output() {
                Ok(out) if out.status.success() => {
                    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                    if has_server_binaries(&dir) {
                        return Self::from_dir(dir);
                    }
                    searched.push(format!(
                        "`{} --bindir` = {} (no server binaries there)",
                        pg_config.display(),
                        dir.display()
                    ));
                }
                Ok(out) => searched.push(format!(
                    "`{} --bindir` failed ({})",
                    pg_config.display(),
                    out.status
                )),
                Err(e) => searched.push(format!("`{} --bindir` failed ({e})", pg_config.display())),
            },
            None => searched.push("pg_config (not on PATH)".to_string()),
        }

        let root = Path::new("/usr/lib/postgresql");
        let mut candidates: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(root)
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = parse_dotted(entry.file_name().to_str()?)?;
                Some((version, entry.path().join("bin")))
            })
            .collect();
        candidates.sort();
        if let Some((_, dir)) = candidates
            .into_iter()
            .rev()
            .find(|(_, d)| has_server_binaries(d))
        {
            return Self::from_dir(dir);
        }
        searched.push(format!("{}/*/bin", root.display()));

        Err(PgError::BinariesNotFound { searched })
    }

    /// Path of a tool in the bin dir, e.g. `tool("pg_isready")`.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn from_dir(dir: PathBuf) -> Result<PgBinaries, PgError> {
        let bin_dir = std::path::absolute(&dir).map_err(io_err(format!(
            "cannot resolve PostgreSQL bin dir {}",
            dir.display()
        )))?;
        let postgres = bin_dir.join("postgres");
        // `--version` is answered before postgres' root check, so this works as root too.
        let out = Command::new(&postgres)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!(
                "cannot run `{} --version`",
                postgres.display()
            )))?;
        if !out.status.success() {
            return Err(PgError::CommandFailed {
                command: format!("{} --version", postgres.display()),
                status: out.status,
                output: combined_output(&out),
            });
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // "postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"
        let version = text
            .split_whitespace()
            .skip_while(|w| *w != "(PostgreSQL)")
            .nth(1)
            .unwrap_or_else(|| text.trim())
            .to_string();
        debug!(bin_dir = %bin_dir.display(), %version, "located PostgreSQL binaries");
        Ok(PgBinaries { bin_dir, version })
    }
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

fn has_server_binaries(dir: &Path) -> bool {
    is_executable_file(&dir.join("postgres")) && is_executable_file(&dir.join("initdb"))
}

/// The first executable file `name` in a directory of `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable_file(p))
}

/// "15" -> [15], "9.6" -> [9, 6]; anything else -> None.
pub(super) fn parse_dotted(s: &str) -> Option<Vec<u32>> {
    s.split('.').map(|p| p.parse().ok()).collect()
}

pub(super) fn combined_output(out: &std::process::Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    if !s.is_empty() && !err.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(&err);
    s.trim_end().to_string()
}

pub(super) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Env vars are process-global: every test that reads or writes SWF_PG_BIN holds this.
    static ENV_LOCK: Mutex<()> = Mutex::new(());

    pub(in crate::dev::pgserver) fn bins() -> PgBinaries {
        let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        PgBinaries::locate().expect("PostgreSQL binaries")
    }

    #[test]
    fn locate_finds_server_binaries() {
        let bins = bins();
        assert!(bins.tool("postgres").is_file());
        assert!(bins.tool("initdb").is_file());
        assert!(
            bins.version.starts_with(|c: char| c.is_ascii_digit()),
            "version {:?}",
            bins.version
        );
    }

    #[test]
    fn missing_swf_pg_bin_names_the_dir() {
        let dir = "/nonexistent/swf-pg-bin-test";
        let result = {
            let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let previous = std::env::var_os("SWF_PG_BIN");
            std::env::set_var("SWF_PG_BIN", dir);
            let result = PgBinaries::locate();
            match previous {
                Some(v) => std::env::set_var("SWF_PG_BIN", v),
                None => std::env::remove_var("SWF_PG_BIN"),
            }
            result
        };
        let err = result.expect_err("locate must fail");
        assert!(matches!(err, PgError::BinariesNotFound { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(dir), "{msg}");
        assert!(msg.contains("apt-get install postgresql"), "{msg}");
        assert!(msg.contains("SWF_PG_BIN=/path/to/bin"), "{msg}");
    }
}

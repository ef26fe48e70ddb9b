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

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

/// Interval between readiness / exit polls.
const POLL: Duration = Duration::from_millis(50);
/// How long `start` waits for the server to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long `stop` waits after the fast-shutdown signal before SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// How long `kill` waits for the killed backends to disappear.
const KILL_DEADLINE: Duration = Duration::from_secs(10);
const LOG_TAIL_LINES: usize = 20;
const FIX_HINT: &str = "install PostgreSQL server binaries, e.g. `apt-get install postgresql`, \
                        or set SWF_PG_BIN=/path/to/bin";
const SUPERUSER: &str = "postgres";
const HOST: &str = "127.0.0.1";
const CONF_FILE: &str = "swf.conf";
/// Included (if present) TLS settings written by [`install_server_tls`].
const TLS_CONF_FILE: &str = "swf-tls.conf";
/// The CA a TLS-enabled server's replication connection verifies its upstream with.
const TLS_CA_FILE: &str = "swf-ca.crt";

/// Settings written into `<data_dir>/swf.conf`, included from `postgresql.conf`. The port is
/// deliberately absent: it is passed with `-p` at start so a restart can move ports. `fsync` and
/// `synchronous_commit` keep their (safe) defaults.
const SWF_CONF: &str = "\
# Written by singularity-workflow (pgserver). The port is passed at start time (-p).
# fsync and synchronous_commit deliberately keep their defaults (on).
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
wal_keep_size = '256MB'
max_connections = 200
shared_buffers = '128MB'
logging_collector = off
";

const PG_HBA: &str = "\
# Written by singularity-workflow (pgserver): local development / test cluster, trust auth.
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
host    replication     all             ::1/128                 trust
";

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

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> PgError {
    let context = context.into();
    move |source| PgError::Io { context, source }
}

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

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

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable_file(p))
}

/// "15" -> [15], "9.6" -> [9, 6]; anything else -> None.
fn parse_dotted(s: &str) -> Option<Vec<u32>> {
    s.split('.').map(|p| p.parse().ok()).collect()
}

fn combined_output(out: &std::process::Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    if !s.is_empty() && !err.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(&err);
    s.trim_end().to_string()
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Unprivileged user
// ---------------------------------------------------------------------------------------------

/// The account the server processes run as when we are root.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// `None` when we are not root (servers run as ourselves).
fn run_as() -> Result<Option<RunAs>, PgError> {
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
fn check_traversable(dir: &Path, user: &RunAs) -> Result<(), PgError> {
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
fn chown_tree(path: &Path, user: &RunAs) -> io::Result<()> {
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

fn set_mode(path: &Path, mode: u32) -> Result<(), PgError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(format!(
        "cannot chmod {:o} {}",
        mode,
        path.display()
    )))
}

/// Writes `contents` to `path` (mode 0600) and hands it to `user`.
fn write_owned(
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

// ---------------------------------------------------------------------------------------------
// Child process setup and the spawner thread
// ---------------------------------------------------------------------------------------------

/// Removes libpq / server environment (PGHOST, PGPORT, PGDATA, PGOPTIONS, ...) so only our
/// explicit arguments count.
fn strip_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.as_bytes().starts_with(b"PG") {
            cmd.env_remove(key);
        }
    }
}

/// Runs the child as `user` (if any) with a parent-death signal, and makes it exit at once if
/// this process already died between fork and exec.
fn child_setup(cmd: &mut Command, user: Option<&RunAs>, death_signal: libc::c_int) {
    let parent = std::process::id() as libc::pid_t;
    let expect_uid = user.map(|u| u.uid);
    if let Some(u) = user {
        // std calls setgroups(0, NULL), setgid, setuid in that order, before pre_exec hooks
        // (documented on CommandExt::uid).
        cmd.uid(u.uid).gid(u.gid);
    }
    // SAFETY: the hook only makes async-signal-safe syscalls and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(uid) = expect_uid {
                // A credential change after prctl would clear PDEATHSIG, and supplementary
                // groups must be gone: verify std did both before us.
                if libc::geteuid() != uid || libc::getgroups(0, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::from_raw_os_error(libc::EPERM));
                }
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                death_signal as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::SyncSender<io::Result<Child>>,
}

/// Sender to the process-lifetime spawner thread. The thread is started lazily and never exits
/// (this static keeps the channel open), so PDEATHSIG only fires when the process dies.
static SPAWNER: Mutex<Option<mpsc::Sender<SpawnRequest>>> = Mutex::new(None);

fn spawn_on_spawner_thread(cmd: Command) -> io::Result<Child> {
    let tx = {
        let mut guard = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = mpsc::channel::<SpawnRequest>();
                std::thread::Builder::new()
                    .name("swf-pg-spawner".into())
                    .spawn(move || {
                        for mut req in rx {
                            // A panic must not end this thread: that would SIGQUIT every server.
                            let result =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    req.cmd.spawn()
                                }))
                                .unwrap_or_else(|_| Err(io::Error::other("spawn panicked")));
                            let _ = req.reply.send(result);
                        }
                    })?;
                *guard = Some(tx.clone());
                tx
            }
        }
    };
    let (reply, result) = mpsc::sync_channel(1);
    tx.send(SpawnRequest { cmd, reply })
        .map_err(|_| io::Error::other("the PostgreSQL spawner thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("the PostgreSQL spawner thread dropped the request"))?
}

/// Runs a short-lived tool (initdb, pg_basebackup) to completion as the server user.
fn run_as_server_user(mut cmd: Command, user: Option<&RunAs>) -> Result<(), PgError> {
    strip_pg_env(&mut cmd);
    cmd.current_dir("/").stdin(Stdio::null());
    // The calling thread blocks until the tool exits, so a per-thread death signal is safe here.
    child_setup(&mut cmd, user, libc::SIGKILL);
    let what = describe(&cmd);
    debug!(command = %what, "running");
    let out = cmd
        .output()
        .map_err(io_err(format!("cannot run `{what}`")))?;
    if !out.status.success() {
        return Err(PgError::CommandFailed {
            command: what,
            status: out.status,
            output: combined_output(&out),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cluster initialization
// ---------------------------------------------------------------------------------------------

/// Returns a free TCP port on 127.0.0.1 (bind port 0, read it, release it).
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind((HOST, 0))?.local_addr()?.port())
}

fn absolute(path: &Path) -> Result<PathBuf, PgError> {
    std::path::absolute(path).map_err(io_err(format!("cannot resolve {}", path.display())))
}

fn is_initialized(data_dir: &Path) -> bool {
    data_dir.join("PG_VERSION").is_file()
}

fn parent_of(data_dir: &Path) -> Result<&Path, PgError> {
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

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// Port and display name of a server to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSettings {
    pub port: u16,
    /// For logs and the log file name, e.g. "us-east".
    pub name: String,
}

/// A running `postgres` postmaster owned by this process.
#[derive(Debug)]
pub struct PgServer {
    child: Child,
    exit: Option<ExitStatus>,
    data_dir: PathBuf,
    port: u16,
    name: String,
    log_path: PathBuf,
}

impl PgServer {
    /// Starts `postgres -D data_dir -p port` (TCP on 127.0.0.1 only) with output appended to
    /// `<data_dir>/../<name>.log`, and waits until it accepts connections.
    pub fn start(
        bins: &PgBinaries,
        data_dir: &Path,
        settings: PgSettings,
    ) -> Result<PgServer, PgError> {
        let PgSettings { port, name } = settings;
        let data_dir = absolute(data_dir)?;
        if !is_initialized(&data_dir) {
            return Err(PgError::Io {
                context: format!(
                    "cannot start `{name}`: {} is not a PostgreSQL data directory (no PG_VERSION); \
                     run init_primary or init_replica first",
                    data_dir.display()
                ),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        let user = run_as()?;
        let user = user.as_ref();
        let parent = parent_of(&data_dir)?;
        if let Some(u) = user {
            check_traversable(parent, u)?;
            chown_tree(&data_dir, u).map_err(io_err(format!(
                "cannot chown {} to {}",
                data_dir.display(),
                u.name
            )))?;
        }
        set_mode(&data_dir, 0o700)?;
        remove_stale_pidfile(&data_dir)?;

        let file_stem: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let log_path = parent.join(format!("{file_stem}.log"));
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(&log_path)
            .map_err(io_err(format!(
                "cannot open log file {}",
                log_path.display()
            )))?;
        if let Some(u) = user {
            std::os::unix::fs::lchown(&log_path, Some(u.uid), Some(u.gid))
                .map_err(io_err(format!("cannot chown {}", log_path.display())))?;
        }
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = writeln!(
            log,
            "--- swf: starting `{name}` on {HOST}:{port} from {} ---",
            data_dir.display()
        );
        let log_err = log
            .try_clone()
            .map_err(io_err("cannot duplicate log file handle"))?;

        let mut cmd = Command::new(bins.tool("postgres"));
        cmd.arg("-D")
            .arg(&data_dir)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                &format!("listen_addresses={HOST}"),
            ])
            .args(["-c", "unix_socket_directories="])
            .current_dir(&data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Own process group: a terminal Ctrl-C reaches only us, and we stop servers in order.
            .process_group(0);
        strip_pg_env(&mut cmd);
        child_setup(&mut cmd, user, libc::SIGQUIT);
        let what = describe(&cmd);
        let child =
            spawn_on_spawner_thread(cmd).map_err(io_err(format!("cannot start `{what}`")))?;
        info!(name = %name, port, pid = child.id(), data_dir = %data_dir.display(), "started PostgreSQL");

        let mut server = PgServer {
            child,
            exit: None,
            data_dir,
            port,
            name,
            log_path,
        };
        server.wait_ready(bins, log_start)?;
        Ok(server)
    }

    fn wait_ready(&mut self, bins: &PgBinaries, log_start: u64) -> Result<(), PgError> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.exit = Some(status);
                    return Err(PgError::Exited {
                        name: self.name.clone(),
                        status,
                        log_tail: log_tail(&self.log_path, log_start),
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    self.kill();
                    return Err(io_err(format!("cannot wait for `{}`", self.name))(e));
                }
            }
            match self.accepts_connections(bins) {
                Ok(true) => {
                    debug!(name = %self.name, port = self.port, "PostgreSQL accepts connections");
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => {
                    self.kill();
                    return Err(e);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                self.kill();
                return Err(PgError::StartTimeout {
                    name: self.name.clone(),
                    log_tail: log_tail(&self.log_path, log_start),
                });
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }

    /// `pg_isready` succeeds, and it is *our* postmaster that answers (postmaster.pid names our
    /// child and says ready/standby), not some other server that already held the port.
    fn accepts_connections(&self, bins: &PgBinaries) -> Result<bool, PgError> {
        let mut cmd = Command::new(bins.tool("pg_isready"));
        cmd.args([
            "-q",
            "-h",
            HOST,
            "-p",
            &self.port.to_string(),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-t",
            "2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        strip_pg_env(&mut cmd);
        let status = cmd
            .status()
            .map_err(io_err(format!("cannot run `{}`", describe(&cmd))))?;
        if !status.success() {
            return Ok(false);
        }
        let pidfile = fs::read_to_string(self.data_dir.join("postmaster.pid")).unwrap_or_default();
        let lines: Vec<&str> = pidfile.lines().collect();
        let ours =
            lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(self.child.id());
        let ready = lines
            .get(7)
            .is_some_and(|s| s.starts_with("ready") || s.starts_with("standby"));
        Ok(ours && ready)
    }

    /// [`PgServer::start`] on `port`, or on a free port when None. A free
    /// port can be taken by another process before the server binds it, so
    /// a bind failure is retried on another port (5 tries).
    pub fn start_on(
        bins: &PgBinaries,
        data_dir: &Path,
        name: &str,
        port: Option<u16>,
    ) -> Result<PgServer, PgError> {
        let settings = |port| PgSettings {
            port,
            name: name.to_string(),
        };
        if let Some(port) = port {
            return PgServer::start(bins, data_dir, settings(port));
        }
        let mut last = None;
        for _ in 0..5 {
            let port = free_port().map_err(io_err("find a free port"))?;
            match PgServer::start(bins, data_dir, settings(port)) {
                Err(PgError::Exited { log_tail, .. }) if log_tail.contains("could not bind") => {
                    last = Some(log_tail)
                }
                other => return other,
            }
        }
        Err(PgError::Io {
            context: format!(
                "start `{name}`: no free port after 5 tries; last log: {}",
                last.unwrap_or_default()
            ),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's log file, `<data_dir>/../<name>.log`.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `postgres://postgres@127.0.0.1:{port}/{database}`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@{HOST}:{}/{database}", self.port)
    }

    /// Pid of the postmaster.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exit = Some(status);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Fast shutdown (SIGINT to the postmaster), wait up to 30 s, then SIGKILL.
    pub fn stop(&mut self) -> Result<(), PgError> {
        if !self.is_running() {
            return Ok(());
        }
        info!(name = %self.name, port = self.port, pid = self.pid(), "stopping PostgreSQL (fast shutdown)");
        signal(self.pid() as libc::pid_t, libc::SIGINT);
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.exit = Some(status);
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => return Err(io_err(format!("cannot wait for `{}`", self.name))(e)),
            }
            let now = Instant::now();
            if now >= deadline {
                warn!(name = %self.name, "PostgreSQL did not stop within {}s; killing it", STOP_DEADLINE.as_secs());
                self.kill();
                return Ok(());
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }

    /// Hard stop, simulating the loss of the machine: SIGKILL the postmaster and, at the same
    /// instant, its backends (rather than letting them notice postmaster death on their own), so
    /// nothing commits afterwards and the data dir can be restarted at once.
    pub fn kill(&mut self) {
        if !self.is_running() {
            return;
        }
        let pid = self.pid() as libc::pid_t;
        let backends = child_pids(pid);
        warn!(name = %self.name, port = self.port, pid, "killing PostgreSQL (SIGKILL)");
        signal(pid, libc::SIGKILL);
        for &b in &backends {
            signal(b, libc::SIGKILL);
        }
        match self.child.wait() {
            Ok(status) => self.exit = Some(status),
            Err(e) => warn!(name = %self.name, error = %e, "cannot reap killed postmaster"),
        }
        let deadline = Instant::now() + KILL_DEADLINE;
        while backends.iter().any(|&b| pid_alive(b)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.stop();
        }
    }
}

fn signal(pid: libc::pid_t, sig: libc::c_int) {
    if pid > 0 {
        // SAFETY: plain syscall; pid > 0 targets exactly one process.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Process state letter from /proc/<pid>/stat ('R', 'S', 'Z', ...), None if gone.
fn proc_state(pid: libc::pid_t) -> Option<(char, libc::pid_t)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ..." where comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Alive and not a zombie.
fn pid_alive(pid: libc::pid_t) -> bool {
    matches!(proc_state(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

fn child_pids(parent: libc::pid_t) -> Vec<libc::pid_t> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&pid| matches!(proc_state(pid), Some((_, ppid)) if ppid == parent))
        .collect()
}

/// kill(pid, 0) says ESRCH.
fn pid_gone(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence; pid > 0 is checked by callers.
    unsafe {
        libc::kill(pid, 0) == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
}

/// Removes `postmaster.pid` if the pid in it is gone, a zombie, or (pid reuse) not a postgres
/// process. A live postgres is left alone: the server will refuse to start with a clear message.
fn remove_stale_pidfile(data_dir: &Path) -> Result<(), PgError> {
    let pidfile = data_dir.join("postmaster.pid");
    let content = match fs::read_to_string(&pidfile) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("cannot read {}", pidfile.display()))(e)),
    };
    let pid = content
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<libc::pid_t>().ok())
        .filter(|&p| p > 0);
    let stale = match pid {
        None => true,
        Some(p) if pid_gone(p) || !pid_alive(p) => true,
        Some(p) => match fs::read_to_string(format!("/proc/{p}/comm")) {
            Ok(comm) => comm.trim() != "postgres",
            Err(_) => false,
        },
    };
    if stale {
        info!(pidfile = %pidfile.display(), ?pid, "removing stale postmaster.pid");
        match fs::remove_file(&pidfile) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err(format!("cannot remove {}", pidfile.display()))(e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The last lines written to the log since `from` (at most the last 64 KiB are read).
fn log_tail(path: &Path, from: u64) -> String {
    let read = || -> io::Result<String> {
        let mut f = fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(from.max(len.saturating_sub(64 * 1024))))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read log {}: {e})", path.display()),
    }
}

/// Removes `root/swf-test-<pid>` directories whose process is gone (kill(pid, 0) gives ESRCH).
/// Errors are logged, not returned: this is best-effort housekeeping.
pub fn cleanup_stale_dirs(root: &Path) {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) => {
            debug!(root = %root.display(), error = %e, "cannot list dir for stale test dirs");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("swf-test-"))
            .and_then(|p| p.parse::<libc::pid_t>().ok())
            .filter(|&p| p > 0)
        else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && pid_gone(pid) {
            let path = entry.path();
            match fs::remove_dir_all(&path) {
                Ok(()) => info!(dir = %path.display(), "removed stale test dir"),
                Err(e) => warn!(dir = %path.display(), error = %e, "cannot remove stale test dir"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Env vars are process-global: every test that reads or writes SWF_PG_BIN holds this.
    static ENV_LOCK: Mutex<()> = Mutex::new(());

    fn bins() -> PgBinaries {
        let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        PgBinaries::locate().expect("PostgreSQL binaries")
    }

    /// A scratch dir under /tmp, traversable by the server user, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
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

    fn psql(bins: &PgBinaries, port: u16, sql: &str) -> String {
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

    /// Starts on a fresh port; retries if another process grabbed the port in the meantime.
    fn start(bins: &PgBinaries, dir: &Path, name: &str) -> PgServer {
        PgServer::start_on(bins, dir, name, None).unwrap()
    }

    fn eventually(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
        let held = crate::wait::until_true_blocking(timeout, POLL, cond);
        assert!(held, "timed out waiting for {what}");
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

    #[test]
    fn passwd_parsing() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104:PG,,,:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(passwd_lookup(passwd, "postgres"), Some((101, 104)));
        assert_eq!(passwd_lookup(passwd, "nobody"), None);
        assert_eq!(parse_dotted("15"), Some(vec![15]));
        assert_eq!(parse_dotted("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_dotted("common"), None);
    }

    #[test]
    fn primary_serves_queries_and_restarts_on_a_new_port() {
        let bins = bins();
        let tmp = TempDir::new("primary");
        let data = tmp.0.join("us-east");
        init_primary(&bins, &data).unwrap();
        fs::write(data.join("swf-marker"), "x").unwrap();
        init_primary(&bins, &data).unwrap(); // idempotent: leaves the cluster as is
        assert!(data.join("swf-marker").exists());

        assert!(!tmp.0.join(".us-east.swf-staging").exists());
        assert_eq!(fs::metadata(&data).unwrap().mode() & 0o777, 0o700);

        let mut server = start(&bins, &data, "us-east");
        let port = server.port();
        assert!(server.is_running());
        if let Some(user) = run_as().unwrap() {
            // As root the server runs unprivileged, and owns its data dir.
            assert_eq!(
                fs::metadata(format!("/proc/{}", server.pid()))
                    .unwrap()
                    .uid(),
                user.uid
            );
            assert_eq!(fs::metadata(&data).unwrap().uid(), user.uid);
        }
        assert_eq!(server.data_dir(), data.as_path());
        assert_eq!(
            server.url("app"),
            format!("postgres://postgres@127.0.0.1:{port}/app")
        );
        assert_eq!(server.log_path(), tmp.0.join("us-east.log").as_path());
        let ready = Command::new(bins.tool("pg_isready"))
            .args(["-h", HOST, "-p", &port.to_string()])
            .output()
            .unwrap();
        assert!(ready.status.success(), "{}", combined_output(&ready));
        assert_eq!(psql(&bins, port, "select 1"), "1");
        assert_eq!(psql(&bins, port, "show wal_level"), "replica");
        assert_eq!(psql(&bins, port, "show fsync"), "on");
        assert_eq!(psql(&bins, port, "show max_connections"), "200");
        assert_eq!(psql(&bins, port, "show unix_socket_directories"), "");
        assert_eq!(
            psql(&bins, port, "select current_setting('server_encoding')"),
            "UTF8"
        );
        psql(
            &bins,
            port,
            "create table kept(v int); insert into kept values (42)",
        );

        server.stop().unwrap();
        assert!(!server.is_running());
        assert!(!data.join("postmaster.pid").exists());
        server.stop().unwrap(); // stopping twice is fine

        let mut again = loop {
            let s = start(&bins, &data, "us-east");
            if s.port() != port {
                break s;
            }
        };
        assert_eq!(psql(&bins, again.port(), "select v from kept"), "42");
        again.stop().unwrap();
        assert!(!again.is_running());
    }

    #[test]
    fn replica_streams_and_kill_is_a_hard_stop() {
        let bins = bins();
        let tmp = TempDir::new("replica");
        let primary_dir = tmp.0.join("primary");
        let replica_dir = tmp.0.join("replica");
        init_primary(&bins, &primary_dir).unwrap();
        let mut primary = start(&bins, &primary_dir, "primary");
        psql(
            &bins,
            primary.port(),
            "create table t(v int); insert into t values (1)",
        );

        fs::create_dir(&replica_dir).unwrap(); // an existing empty dir is fine
        init_replica(&bins, primary.port(), &replica_dir).unwrap();
        assert!(replica_dir.join("standby.signal").exists());
        init_replica(&bins, primary.port(), &replica_dir).unwrap(); // idempotent
        let mut replica = start(&bins, &replica_dir, "replica");
        assert_eq!(
            psql(&bins, replica.port(), "select pg_is_in_recovery()"),
            "t"
        );
        assert_eq!(
            psql(&bins, primary.port(), "select pg_is_in_recovery()"),
            "f"
        );
        assert_eq!(psql(&bins, replica.port(), "select count(*) from t"), "1");

        psql(&bins, primary.port(), "insert into t values (2)");
        eventually(
            "the row to reach the replica",
            Duration::from_secs(30),
            || psql(&bins, replica.port(), "select count(*) from t where v = 2") == "1",
        );
        assert_eq!(
            psql(
                &bins,
                primary.port(),
                "select count(*) from pg_stat_replication"
            ),
            "1"
        );

        let replica_pid = replica.pid() as libc::pid_t;
        replica.kill();
        assert!(!replica.is_running());
        assert!(!pid_alive(replica_pid));

        // Lose the primary, then bring it back: stale postmaster.pid, crash recovery, data kept.
        psql(&bins, primary.port(), "insert into t values (3)");
        primary.kill();
        assert!(!primary.is_running());
        assert!(
            primary_dir.join("postmaster.pid").exists(),
            "SIGKILL leaves the pid file behind"
        );
        let mut primary = start(&bins, &primary_dir, "primary");
        assert_eq!(psql(&bins, primary.port(), "select count(*) from t"), "3");
        primary.stop().unwrap();
    }

    #[test]
    fn start_reports_early_exit_with_log_tail() {
        let bins = bins();
        let tmp = TempDir::new("badconf");
        let data = tmp.0.join("bad");
        init_primary(&bins, &data).unwrap();
        fs::write(data.join(CONF_FILE), "shared_buffers = 'not a size'\n").unwrap();
        let err = PgServer::start(
            &bins,
            &data,
            PgSettings {
                port: free_port().unwrap(),
                name: "bad".into(),
            },
        )
        .expect_err("bad config must fail");
        match &err {
            PgError::Exited { name, log_tail, .. } => {
                assert_eq!(name, "bad");
                assert!(log_tail.contains("shared_buffers"), "{log_tail}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = PgServer::start(
            &bins,
            &tmp.0.join("missing"),
            PgSettings {
                port: 1,
                name: "x".into(),
            },
        )
        .expect_err("uninitialized dir must fail");
        assert!(err.to_string().contains("PG_VERSION"), "{err}");
    }

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

    #[test]
    fn cleanup_stale_dirs_removes_only_dead_pids() {
        let tmp = TempDir::new("cleanup");
        let mut child = Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let dead_dir = tmp.0.join(format!("swf-test-{dead}"));
        let own_dir = tmp.0.join(format!("swf-test-{}", std::process::id()));
        let other = tmp.0.join(format!("other-{dead}"));
        let junk = tmp.0.join("swf-test-junk");
        for d in [&dead_dir, &own_dir, &other, &junk] {
            fs::create_dir_all(d.join("sub")).unwrap();
            fs::write(d.join("sub/file"), "x").unwrap();
        }
        cleanup_stale_dirs(&tmp.0);
        assert!(!dead_dir.exists());
        assert!(own_dir.exists());
        assert!(other.exists());
        assert!(junk.exists());
        cleanup_stale_dirs(&tmp.0.join("does-not-exist")); // no panic
    }

    const CHILD_DIR_ENV: &str = "SWF_PGSERVER_TEST_CHILD_DIR";

    /// Helper run in a subprocess by `servers_die_with_their_process`; a
    /// no-op in a normal test run (the environment variable is not set).
    #[test]
    fn pdeathsig_child() {
        let Some(dir) = std::env::var_os(CHILD_DIR_ENV).map(PathBuf::from) else {
            return;
        };
        let bins = bins();
        let data = dir.join("orphan");
        init_primary(&bins, &data).unwrap();
        let server = start(&bins, &data, "orphan");
        fs::write(dir.join("pid.tmp"), server.pid().to_string()).unwrap();
        fs::rename(dir.join("pid.tmp"), dir.join("pid")).unwrap();
        std::mem::forget(server); // like the harness' never-dropped static
        std::thread::sleep(Duration::from_secs(120)); // the parent kills us long before this
    }

    #[test]
    fn servers_die_with_their_process() {
        let bins = bins();
        let tmp = TempDir::new("pdeathsig");
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, rest)| rest);
        let log = fs::File::create(tmp.0.join("child.out")).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                &format!("{module}::pdeathsig_child"),
                "--exact",
                "--nocapture",
            ])
            .env(CHILD_DIR_ENV, &tmp.0)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid_file = tmp.0.join("pid");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !pid_file.exists() {
            if Instant::now() >= deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!(
                    "child did not start a server: {}",
                    fs::read_to_string(tmp.0.join("child.out")).unwrap()
                );
            }
            std::thread::sleep(POLL);
        }
        let pg_pid: libc::pid_t = fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(pid_alive(pg_pid));

        child.kill().unwrap(); // SIGKILL: no destructors, no cleanup code runs
        child.wait().unwrap();
        eventually(
            "the orphaned postmaster to exit",
            Duration::from_secs(30),
            || !pid_alive(pg_pid),
        );

        // SIGQUIT is an immediate shutdown: the data dir can be started again right away.
        let mut server = start(&bins, &tmp.0.join("orphan"), "orphan");
        assert_eq!(psql(&bins, server.port(), "select 1"), "1");
        server.stop().unwrap();
    }
}

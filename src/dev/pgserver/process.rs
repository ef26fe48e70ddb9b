//! Child processes: the environment and credentials a PostgreSQL child
//! runs with, the spawner thread that keeps its parent-death signal armed,
//! running a tool to completion, signals and pid checks, and removing the
//! directories of test processes that are gone.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};

use tracing::{debug, info, warn};

use super::binaries::{combined_output, describe};
use super::error::{io_err, PgError};
use super::user::RunAs;

/// Removes libpq / server environment (PGHOST, PGPORT, PGDATA, PGOPTIONS, ...) so only our
/// explicit arguments count.
pub(super) fn strip_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.as_bytes().starts_with(b"PG") {
            cmd.env_remove(key);
        }
    }
}

/// Runs the child as `user` (if any) with a parent-death signal, and makes it exit at once if
/// this process already died between fork and exec.
pub(super) fn child_setup(cmd: &mut Command, user: Option<&RunAs>, death_signal: libc::c_int) {
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

pub(super) fn spawn_on_spawner_thread(cmd: Command) -> io::Result<Child> {
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
pub(super) fn run_as_server_user(mut cmd: Command, user: Option<&RunAs>) -> Result<(), PgError> {
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

/// Starts a long-running service next to the servers (etcd, Patroni) as
/// the server user, in `cwd`, its output appended to `log`. It gets SIGTERM
/// when this process dies.
pub fn spawn_service(
    program: &str,
    args: &[String],
    cwd: &Path,
    log: &Path,
) -> Result<Child, PgError> {
    let user = super::user::run_as()?;
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(format!("cannot open {}", log.display())))?;
    if let Some(u) = &user {
        std::os::unix::fs::chown(log, Some(u.uid), Some(u.gid)).map_err(io_err(format!(
            "cannot hand {} to {}",
            log.display(),
            u.name
        )))?;
    }
    let err = out
        .try_clone()
        .map_err(io_err(format!("cannot open {}", log.display())))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    strip_pg_env(&mut cmd);
    child_setup(&mut cmd, user.as_ref(), libc::SIGTERM);
    let what = describe(&cmd);
    info!(command = %what, "starting");
    spawn_on_spawner_thread(cmd).map_err(io_err(format!("cannot start `{what}`")))
}

/// Hands `dir` (made if missing) to the server user when we are root.
pub fn hand_dir_to_server_user(dir: &Path) -> Result<(), PgError> {
    fs::create_dir_all(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
    if let Some(u) = super::user::run_as()? {
        std::os::unix::fs::chown(dir, Some(u.uid), Some(u.gid)).map_err(io_err(format!(
            "cannot hand {} to {}",
            dir.display(),
            u.name
        )))?;
        super::user::check_traversable(dir, &u)?;
    }
    Ok(())
}

/// Sends `sig` to process `pid` (a plain kill(2); nothing for pid <= 0).
pub fn signal(pid: libc::pid_t, sig: libc::c_int) {
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
pub fn pid_alive(pid: libc::pid_t) -> bool {
    matches!(proc_state(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

pub(super) fn child_pids(parent: libc::pid_t) -> Vec<libc::pid_t> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&pid| matches!(proc_state(pid), Some((_, ppid)) if ppid == parent))
        .collect()
}

/// The postmaster pid that `data_dir/postmaster.pid` names, if any.
pub fn postmaster_pid(data_dir: &Path) -> Option<libc::pid_t> {
    fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
        .filter(|&p| p > 0)
}

/// kill(pid, 0) says ESRCH.
pub(super) fn pid_gone(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence; pid > 0 is checked by callers.
    unsafe {
        libc::kill(pid, 0) == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
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
    use crate::dev::pgserver::testutil::TempDir;

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
}

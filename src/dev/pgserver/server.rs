//! [`PgServer`]: a running postmaster owned by this process. Starting it
//! (as the server user, logging to a file, on a given or free port) and
//! waiting until it is ready, stopping it cleanly or killing it with its
//! backends, and clearing a stale `postmaster.pid` first.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

use tracing::{debug, info, warn};

use super::binaries::{describe, PgBinaries};
use super::conf::{
    HOST, KILL_DEADLINE, LOG_TAIL_LINES, POLL, START_DEADLINE, STOP_DEADLINE, SUPERUSER,
};
use super::error::{io_err, PgError};
use super::init::{absolute, free_port, is_initialized, parent_of};
use super::process::{
    child_pids, child_setup, pid_alive, pid_gone, signal, spawn_on_spawner_thread, strip_pg_env,
};
use super::user::{check_traversable, chown_tree, run_as, set_mode};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::pgserver::binaries::combined_output;
    use crate::dev::pgserver::binaries::tests::bins;
    use crate::dev::pgserver::conf::CONF_FILE;
    use crate::dev::pgserver::init::{init_primary, init_replica};
    use crate::dev::pgserver::testutil::{eventually, psql, TempDir};
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    /// Starts on a fresh port; retries if another process grabbed the port in the meantime.
    fn start(bins: &PgBinaries, dir: &Path, name: &str) -> PgServer {
        PgServer::start_on(bins, dir, name, None).unwrap()
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

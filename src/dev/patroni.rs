//! `swf dev --ha patroni`: each region's PostgreSQL managed by a real
//! Patroni, all of them one Patroni cluster (scope `swf-dev`) over one
//! etcd. Patroni bootstraps the first region's database, clones the others
//! as its replicas, elects the leader and moves it; the nodes discover the
//! primary as with any deployment (out of recovery, highest epoch).
//!
//! Drills go through Patroni: a switchover asks the leader's REST API
//! (`POST /switchover`); a failover kills the leader's Patroni and its
//! postmaster with SIGKILL and lets Patroni elect the next leader once the
//! leader key's TTL has run out. The old primary rejoins as Patroni makes
//! it a replica again (pg_rewind where needed).
//!
//! The epoch follows promotions this product did not ask for: every member
//! runs `swf patroni-callback` on a role change, which starts a new epoch
//! naming the promoted region unless it is already the write region (a
//! drill that asked for the promotion bumped it first). See the README's
//! "Patroni" part for the window this leaves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context};

use super::pgserver::{self, free_port, PgBinaries};
use crate::api::tls::ClientTls;
use crate::config::PatroniMember;
use crate::drill::PatroniApi;

/// The Patroni cluster's name in etcd.
const SCOPE: &str = "swf-dev";
/// Seconds the leader key lives without renewal: how long a failover
/// waits before Patroni elects a new leader.
const TTL_SECS: u64 = 10;
/// How long a member may take to become leader or a running replica.
const MEMBER_DEADLINE: Duration = Duration::from_secs(120);

/// One region's Patroni and the PostgreSQL it manages.
struct Member {
    rest_port: u16,
    pg_port: u16,
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Killed by a failover drill and not started again yet.
    killed: bool,
}

impl Member {
    /// Its REST API (plain HTTP on loopback).
    fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rest_port)
    }
}

/// etcd and one Patroni per region.
pub struct Patroni {
    dir: PathBuf,
    etcd: Mutex<Option<Child>>,
    members: Mutex<BTreeMap<String, Member>>,
    http: reqwest::Client,
    /// Every member's REST API, once the members are configured.
    api: OnceLock<PatroniApi>,
}

/// What a started Patroni cluster serves: the leader's region and every
/// region's PostgreSQL port.
pub struct Started {
    pub patroni: Patroni,
    pub leader: String,
    pub ports: BTreeMap<String, u16>,
}

impl Patroni {
    /// Starts etcd and a Patroni per region under `dir` (reusing what an
    /// earlier run left there), the first region's first on a new cluster,
    /// and waits until one is leader and the others run as its replicas.
    pub async fn start(dir: &Path, regions: &[String], swf_exe: &Path) -> anyhow::Result<Started> {
        for tool in ["patroni", "etcd"] {
            if pgserver::find_on_path(tool).is_none() {
                bail!(
                    "`--ha patroni` needs `{tool}` on PATH (Debian: apt-get install patroni etcd-server)"
                );
            }
        }
        let bins = tokio::task::spawn_blocking(PgBinaries::locate).await??;
        let bin_dir = bins
            .tool("postgres")
            .parent()
            .map(Path::to_path_buf)
            .context("the PostgreSQL bin dir")?;
        pgserver::hand_dir_to_server_user(dir)?;
        let dir = std::fs::canonicalize(dir)?;
        let fresh = !dir.join("etcd").exists();
        let (client, peer) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client}");
        let etcd = pgserver::spawn_service(
            "etcd",
            &[
                "--name".into(),
                "swf-dev".into(),
                "--data-dir".into(),
                dir.join("etcd").display().to_string(),
                "--listen-client-urls".into(),
                etcd_url.clone(),
                "--advertise-client-urls".into(),
                etcd_url.clone(),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                format!("swf-dev=http://127.0.0.1:{peer}"),
            ],
            &dir,
            &dir.join("etcd.log"),
        )?;
        let p = Patroni {
            dir: dir.clone(),
            etcd: Mutex::new(Some(etcd)),
            members: Mutex::new(BTreeMap::new()),
            api: OnceLock::new(),
            // Patroni's REST API is plain HTTP on loopback here.
            http: crate::api::tls::ClientTls::default()
                .builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        };
        let started = async {
            p.wait_ok(&format!("{etcd_url}/health"), Duration::from_secs(30))
                .await
                .context("etcd did not become healthy within 30 s (see etcd.log)")?;
            for r in regions {
                let m = Member {
                    rest_port: free_port()?,
                    pg_port: free_port()?,
                    config: dir.join(format!("{r}.yml")),
                    data_dir: dir.join("pg").join(r),
                    log: dir.join(format!("patroni-{r}.log")),
                    child: None,
                    killed: false,
                };
                pgserver::hand_dir_to_server_user(&dir.join("pg"))?;
                let yaml = member_config(r, &m, &etcd_url, &bin_dir, swf_exe);
                std::fs::write(&m.config, yaml)
                    .with_context(|| format!("write {}", m.config.display()))?;
                p.members.lock().expect("members").insert(r.clone(), m);
            }
            let rest: BTreeMap<String, PatroniMember> = p
                .members
                .lock()
                .expect("members")
                .iter()
                .map(|(r, m)| {
                    let url = format!("http://127.0.0.1:{}", m.rest_port);
                    (
                        r.clone(),
                        PatroniMember {
                            url,
                            member: r.clone(),
                        },
                    )
                })
                .collect();
            let _ = p.api.set(PatroniApi::new(&rest, &ClientTls::default())?);
            let first = &regions[0];
            if fresh {
                // The first region bootstraps the cluster; the others
                // clone it once it leads.
                p.spawn(first)?;
                p.wait_role(first, "primary").await?;
                for r in &regions[1..] {
                    p.spawn(r)?;
                }
            } else {
                for r in regions {
                    p.spawn(r)?;
                }
            }
            let leader = p.wait_leader(regions).await?;
            for r in regions.iter().filter(|r| **r != leader) {
                p.wait_role(r, "replica").await?;
            }
            Ok::<_, anyhow::Error>(leader)
        }
        .await;
        match started {
            Ok(leader) => {
                let ports = p
                    .members
                    .lock()
                    .expect("members")
                    .iter()
                    .map(|(r, m)| (r.clone(), m.pg_port))
                    .collect();
                Ok(Started {
                    patroni: p,
                    leader,
                    ports,
                })
            }
            Err(e) => {
                p.stop().await;
                Err(e)
            }
        }
    }

    /// Starts region `r`'s Patroni.
    fn spawn(&self, r: &str) -> anyhow::Result<()> {
        let mut members = self.members.lock().expect("members");
        let m = members.get_mut(r).context("no such member")?;
        let child = pgserver::spawn_service(
            "patroni",
            &[m.config.display().to_string()],
            &self.dir,
            &m.log,
        )?;
        // Where a hard stop from outside finds it (`hard_stop_command`).
        let pid_file = self.dir.join(format!("{r}.patroni.pid"));
        std::fs::write(&pid_file, format!("{}\n", child.id()))
            .with_context(|| format!("write {}", pid_file.display()))?;
        m.child = Some(child);
        m.killed = false;
        Ok(())
    }

    fn rest(&self, r: &str) -> anyhow::Result<String> {
        let members = self.members.lock().expect("members");
        let m = members
            .get(r)
            .with_context(|| format!("no Patroni for region {r}"))?;
        Ok(m.rest_url())
    }

    /// Waits until `url` answers 200.
    async fn wait_ok(&self, url: &str, deadline: Duration) -> Result<(), crate::wait::TimedOut> {
        crate::wait::until(deadline, Duration::from_millis(100), || async {
            match self.http.get(url).send().await {
                Ok(r) if r.status().is_success() => Some(()),
                _ => None,
            }
        })
        .await
    }

    /// Waits until region `r`'s Patroni answers 200 on `/primary` or
    /// `/replica` (running in that role).
    async fn wait_role(&self, r: &str, role: &str) -> anyhow::Result<()> {
        let url = format!("{}/{role}", self.rest(r)?);
        self.wait_ok(&url, MEMBER_DEADLINE).await.map_err(|_| {
            anyhow::anyhow!(
                "Patroni of region {r} did not run as {role} within {} s (see {})",
                MEMBER_DEADLINE.as_secs(),
                self.dir.join(format!("patroni-{r}.log")).display()
            )
        })
    }

    /// Waits until one region's Patroni leads; answers its region.
    async fn wait_leader(&self, regions: &[String]) -> anyhow::Result<String> {
        let found = crate::wait::until(MEMBER_DEADLINE, Duration::from_millis(100), || async {
            for r in regions {
                let url = format!("{}/primary", self.rest(r).ok()?);
                if matches!(self.http.get(&url).send().await, Ok(a) if a.status().is_success()) {
                    return Some(r.clone());
                }
            }
            None
        })
        .await;
        found.map_err(|_| anyhow::anyhow!("no Patroni became leader within 120 s"))
    }

    /// The members' REST API.
    pub fn api(&self) -> anyhow::Result<&PatroniApi> {
        self.api
            .get()
            .context("Patroni's members are not configured yet")
    }

    /// Each region's Patroni REST API URL.
    pub fn rest_urls(&self) -> BTreeMap<String, String> {
        self.members
            .lock()
            .expect("members")
            .iter()
            .map(|(r, m)| (r.clone(), m.rest_url()))
            .collect()
    }

    /// A shell command that stops the Patroni and the PostgreSQL of the
    /// region named by `$SWF_DRILL_REGION` hard (SIGKILL), as a
    /// deployment's `drills.kill_command` would on that region's host.
    pub fn hard_stop_command(&self) -> String {
        let dir = self.dir.display();
        format!(
            "kill -KILL \"$(cat \"{dir}/$SWF_DRILL_REGION.patroni.pid\")\"; \
             pid=$(head -n 1 \"{dir}/pg/$SWF_DRILL_REGION/postmaster.pid\" 2>/dev/null) \
             && kill -KILL \"$pid\"; true"
        )
    }

    /// Starts region `r`'s Patroni again if its process exited without this
    /// cluster stopping it (killed from outside), as a service manager
    /// would; answers whether it did.
    pub fn restart_exited(&self, r: &str) -> anyhow::Result<bool> {
        let exited = {
            let mut members = self.members.lock().expect("members");
            let m = members
                .get_mut(r)
                .with_context(|| format!("no Patroni for region {r}"))?;
            match m.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) => {
                    m.child = None;
                    true
                }
                _ => false,
            }
        };
        if exited {
            self.spawn(r)?;
        }
        Ok(exited)
    }

    /// Whether region `r`'s Patroni was killed by a failover drill.
    pub fn killed(&self, r: &str) -> bool {
        self.members
            .lock()
            .expect("members")
            .get(r)
            .is_some_and(|m| m.killed)
    }

    /// The loss of region `r`'s database: its Patroni and its postmaster
    /// killed with SIGKILL, so that nothing demotes it cleanly.
    pub async fn kill(&self, r: &str) -> anyhow::Result<()> {
        let (child, data_dir) = {
            let mut members = self.members.lock().expect("members");
            let m = members
                .get_mut(r)
                .with_context(|| format!("no Patroni for region {r}"))?;
            m.killed = true;
            (m.child.take(), m.data_dir.clone())
        };
        if let Some(mut c) = child {
            let _ = c.kill();
            tokio::task::spawn_blocking(move || c.wait()).await??;
        }
        if let Some(pid) = pgserver::postmaster_pid(&data_dir) {
            pgserver::signal(pid, libc::SIGKILL);
            crate::wait::until(
                Duration::from_secs(10),
                Duration::from_millis(20),
                || async { (!pgserver::pid_alive(pid)).then_some(()) },
            )
            .await
            .map_err(|_| anyhow::anyhow!("the postmaster of region {r} outlived SIGKILL"))?;
        }
        Ok(())
    }

    /// Region `r` back as a replica: its Patroni started again if a
    /// failover killed it, then running as a replica of the leader, then
    /// unfenced (a switchover's SQL fence survives the demotion in
    /// `postgresql.auto.conf`).
    ///
    /// Patroni may report a member running as a replica and then restart
    /// it (to rewind it onto the leader's timeline): the unfence is tried
    /// again after any error until the member stays up.
    pub async fn rejoin(&self, r: &str) -> anyhow::Result<()> {
        if self.killed(r) {
            self.spawn(r)?;
        }
        let port = self.members.lock().expect("members")[r].pg_port;
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        crate::drill::follow_and_unfence(self.api()?, r, &url, MEMBER_DEADLINE)
            .await
            .with_context(|| {
                format!(
                    "see {}",
                    self.dir.join(format!("patroni-{r}.log")).display()
                )
            })
    }

    /// Stops every Patroni (each stops its PostgreSQL), then etcd.
    pub async fn stop(&self) {
        let children: Vec<(String, Child, PathBuf)> = {
            let mut members = self.members.lock().expect("members");
            members
                .iter_mut()
                .filter_map(|(r, m)| Some((r.clone(), m.child.take()?, m.data_dir.clone())))
                .collect()
        };
        for (r, mut c, data_dir) in children {
            eprintln!("stopping Patroni ({r})");
            pgserver::signal(c.id() as libc::pid_t, libc::SIGTERM);
            let gone = tokio::task::spawn_blocking(move || {
                for _ in 0..300 {
                    if matches!(c.try_wait(), Ok(Some(_))) {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = c.kill();
                let _ = c.wait();
                false
            })
            .await
            .unwrap_or(false);
            if !gone {
                if let Some(pid) = pgserver::postmaster_pid(&data_dir) {
                    pgserver::signal(pid, libc::SIGKILL);
                }
            }
        }
        // Killed members may have left a postmaster behind only if the
        // drill's kill failed; their Patroni is gone either way.
        let etcd = self.etcd.lock().expect("etcd").take();
        if let Some(mut e) = etcd {
            pgserver::signal(e.id() as libc::pid_t, libc::SIGTERM);
            let _ = tokio::task::spawn_blocking(move || e.wait()).await;
        }
    }
}

/// Region `r`'s Patroni configuration (YAML; JSON-quoted strings are
/// valid YAML scalars).
fn member_config(r: &str, m: &Member, etcd_url: &str, bin_dir: &Path, swf_exe: &Path) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("a string");
    let callback = format!(
        "{} patroni-callback --database-url postgres://postgres@127.0.0.1:{}/{} --region {r}",
        swf_exe.display(),
        m.pg_port,
        super::servers::DEV_DATABASE
    );
    let etcd_host = etcd_url.trim_start_matches("http://");
    format!(
        r#"# Written by `swf dev --ha patroni` at every start.
scope: {scope}
name: {name}
restapi:
  listen: 127.0.0.1:{rest}
  connect_address: 127.0.0.1:{rest}
etcd3:
  hosts: {etcd}
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: 1
    retry_timeout: 4
    maximum_lag_on_failover: 67108864
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 256MB
        wal_log_hints: "on"
        max_connections: 200
  initdb:
    - encoding: UTF8
    - locale: C
    - auth: trust
  pg_hba:
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {data}
  bin_dir: {bin}
  pgpass: {pgpass}
  authentication:
    superuser:
      username: postgres
    replication:
      username: postgres
  parameters:
    unix_socket_directories: ''
    shared_buffers: 256MB
  callbacks:
    on_role_change: {callback}
"#,
        scope = SCOPE,
        name = q(r),
        rest = m.rest_port,
        etcd = q(etcd_host),
        ttl = TTL_SECS,
        pg = m.pg_port,
        data = q(&m.data_dir.display().to_string()),
        bin = q(&bin_dir.display().to_string()),
        pgpass = q(&m.data_dir.with_extension("pgpass").display().to_string()),
        callback = q(&callback),
    )
}

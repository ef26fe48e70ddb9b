//! What a drill may do to the databases: the [`ClusterControl`] trait, and
//! [`HookControl`], which runs the node's configured `[drills]` hook commands.

use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::DrillHooks;

/// What a drill may do to the databases. `swf dev` implements it over the
/// PostgreSQL processes it runs; a production deployment would delegate to
/// its HA manager.
pub trait ClusterControl: Send + Sync {
    /// Stops a region's database at once (the simulated loss of the region).
    fn kill(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Stops a region's database cleanly.
    fn stop(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Makes `region`'s database a streaming replica of `primary`'s.
    fn rejoin(&self, region: &str, primary: &str) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Points a running replica at a new primary.
    fn repoint(&self, region: &str, primary: &str) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Records the new write region where the deployment keeps it.
    fn promoted(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Fences the old primary its own way; false: the drill fences with SQL.
    fn fence(&self, _from: &str, _to: &str) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async { Ok(false) })
    }
    /// Promotes the target its own way; false: the drill calls `pg_promote()`.
    fn promote(&self, _from: &str, _to: &str) -> BoxFuture<'_, anyhow::Result<bool>> {
        Box::pin(async { Ok(false) })
    }
    /// Cuts (`cut`) or heals every link between `region` and the other
    /// regions: node to database, replication, node to node. Answers how
    /// many links it changed (none where [`ClusterControl::can_partition`]
    /// is false).
    fn partition(&self, _region: &str, _cut: bool) -> usize {
        0
    }
    /// Checks, before anything moves, that the control sees the cluster as
    /// the drill does: `from` the leader, `to` a member (an HA manager's
    /// view); an error refuses the drill.
    fn preflight(&self, _from: &str, _to: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// The HA manager that carries out the drill's steps, named in its
    /// report (e.g. `patroni`); None: the drill itself.
    fn manager(&self) -> Option<&'static str> {
        None
    }
    /// Whether [`ClusterControl::partition`] can cut links.
    fn can_partition(&self) -> bool {
        false
    }
    /// Whether [`ClusterControl::rejoin`] really rebuilds a database as a
    /// replica (recovery otherwise leaves it to the operator).
    fn can_rejoin(&self) -> bool {
        true
    }
}

/// A [`ClusterControl`] that runs the node's `[drills]` hook commands (see
/// [`DrillHooks`]); steps without a command are left to the drill (fence,
/// promote) or to the HA manager (stop, repoint).
pub struct HookControl {
    hooks: DrillHooks,
    from_to: std::sync::Mutex<(String, String)>,
}

impl HookControl {
    pub fn new(hooks: DrillHooks) -> HookControl {
        HookControl {
            hooks,
            from_to: std::sync::Mutex::new(Default::default()),
        }
    }

    /// Runs `cmd` with `sh -c` (60 s at most); Ok(false) when there is none.
    async fn run(&self, what: &str, cmd: &Option<String>, region: &str) -> anyhow::Result<bool> {
        let Some(cmd) = cmd else { return Ok(false) };
        let (from, to) = self.from_to.lock().expect("hook lock").clone();
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("SWF_DRILL_REGION", region)
                .env("SWF_DRILL_FROM", from)
                .env("SWF_DRILL_TO", to)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("drills.{what}_command did not finish within 60 s"))??;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: String = err
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            anyhow::bail!("drills.{what}_command exited with {}: {tail}", out.status);
        }
        Ok(true)
    }
}

impl ClusterControl for HookControl {
    fn kill(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let region = region.to_string();
        Box::pin(async move {
            if !self.run("kill", &self.hooks.kill_command, &region).await? {
                anyhow::bail!("no drills.kill_command is configured: a failover drill cannot stop the primary");
            }
            Ok(())
        })
    }
    fn stop(&self, _region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn rejoin(&self, region: &str, _primary: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let region = region.to_string();
        Box::pin(async move {
            self.run("rejoin", &self.hooks.rejoin_command, &region)
                .await
                .map(|_| ())
        })
    }
    fn repoint(&self, _region: &str, _primary: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn promoted(&self, _region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn fence(&self, from: &str, to: &str) -> BoxFuture<'_, anyhow::Result<bool>> {
        *self.from_to.lock().expect("hook lock") = (from.to_string(), to.to_string());
        let from = from.to_string();
        Box::pin(async move { self.run("fence", &self.hooks.fence_command, &from).await })
    }
    fn promote(&self, from: &str, to: &str) -> BoxFuture<'_, anyhow::Result<bool>> {
        *self.from_to.lock().expect("hook lock") = (from.to_string(), to.to_string());
        let to = to.to_string();
        Box::pin(async move { self.run("promote", &self.hooks.promote_command, &to).await })
    }
    fn can_rejoin(&self) -> bool {
        self.hooks.rejoin_command.is_some()
    }
}

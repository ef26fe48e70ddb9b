//! What drills may do to the dev cluster: [`DevControl`], the
//! [`ClusterControl`] of `swf dev` and of the drill tests, over the
//! PostgreSQL servers `swf dev` runs (or its Patroni members), the proxies
//! on every cross-region link, and `--tls`'s throwaway PKI.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;

use super::cluster_file::ClusterFile;
use super::pgserver::{self, PgServer};
use super::proxy::DelayProxy;
use super::servers::start_replica;
use super::{patroni, restart};
use crate::config::Config;
use crate::drill::ClusterControl;
use crate::store::Store;

/// One region's dev database.
pub(super) struct DevDb {
    pub(super) dir: PathBuf,
    pub(super) port: u16,
    pub(super) server: Option<PgServer>,
}

/// What drills may do to the dev cluster's databases: the
/// [`ClusterControl`] of `swf dev` and of the drill tests.
pub struct DevControl {
    pub(super) dbs: tokio::sync::Mutex<std::collections::BTreeMap<String, DevDb>>,
    /// Cross-region links by name (`db A->B`, `api A->B`, `replication
    /// A->B`); a link made again (a replica re-pointed or re-cloned)
    /// replaces and stops the old one.
    pub(super) proxies: std::sync::Mutex<std::collections::BTreeMap<String, DelayProxy>>,
    pub(super) wan: Duration,
    pub(super) cluster_path: PathBuf,
    pub(super) tls: Option<DevTls>,
    /// With `--ha patroni`: the Patroni cluster that runs the databases.
    pub(super) patroni: Option<patroni::Patroni>,
}

/// What `swf dev --tls` runs with.
#[derive(Debug, Clone)]
pub(super) struct DevTls {
    pub(super) pki: crate::dev::pki::DevPki,
    pub(super) pg: pgserver::PgTls,
    /// The admin token (printed; its hash is the node's only token).
    pub(super) token: String,
    pub(super) token_file: PathBuf,
}

impl DevTls {
    /// Reuses or creates `data_dir/tls` and `data_dir/admin.token`.
    pub(super) fn ensure(data_dir: &Path) -> anyhow::Result<DevTls> {
        let pki = crate::dev::pki::DevPki::ensure(&data_dir.join("tls"), "swf dev CA")
            .context("create the dev CA and certificates")?;
        let pg = pgserver::PgTls::from_pki(&pki)?;
        let token_file = data_dir.join("admin.token");
        let token = match std::fs::read_to_string(&token_file) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let bytes: [u8; 24] = rand::random();
                let t: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                crate::dev::pki::write_private(&token_file, &format!("{t}\n"))
                    .with_context(|| format!("write {}", token_file.display()))?;
                t
            }
        };
        Ok(DevTls {
            pki,
            pg,
            token,
            token_file,
        })
    }

    /// Puts HTTPS, peer verification and auth with the admin token into a node's config.
    pub(super) fn apply(&self, config: &mut Config) {
        config.api.tls_cert = Some(self.pki.cert.clone());
        config.api.tls_key = Some(self.pki.key.clone());
        config.api.peer_ca = Some(self.pki.ca_cert.clone());
        config.api.public_url = format!("https://{}", config.api.listen);
        config.auth.enabled = true;
        config.auth.tokens = vec![crate::config::TokenSpec {
            name: "dev-admin".into(),
            sha256: crate::api::auth::hash_token(&self.token),
            scopes: vec!["read".into(), "submit".into(), "admin".into()],
        }];
    }
}

impl DevControl {
    /// Keeps a started server as `region`'s database.
    pub(super) async fn keep(&self, region: &str, dir: PathBuf, pg: PgServer) {
        let db = DevDb {
            dir,
            port: pg.port(),
            server: Some(pg),
        };
        self.dbs.lock().await.insert(region.to_string(), db);
    }

    /// URL of database `db` behind `port`: verify-full TLS with `--tls`.
    pub(super) fn url(&self, port: u16, db: &str) -> String {
        match &self.tls {
            Some(t) => format!(
                "postgres://postgres@127.0.0.1:{port}/{db}?sslmode=verify-full&sslrootcert={}",
                t.pki.ca_cert.display()
            ),
            None => format!("postgres://postgres@127.0.0.1:{port}/{db}"),
        }
    }

    pub(super) fn pg_tls(&self) -> Option<&pgserver::PgTls> {
        self.tls.as_ref().map(|t| &t.pg)
    }

    /// A cross-region link to `target`: always through a proxy (without
    /// `--wan-latency-ms`, one that adds no delay), so that a partition
    /// drill can cut it.
    pub(super) async fn link(&self, target: u16, name: String) -> anyhow::Result<u16> {
        let p = DelayProxy::start(
            ([127, 0, 0, 1], 0).into(),
            ([127, 0, 0, 1], target).into(),
            self.wan,
            &name,
        )
        .await?;
        let port = p.local_addr().port();
        let old = self.proxies.lock().expect("proxies lock").insert(name, p);
        if let Some(old) = old {
            old.shutdown().await;
        }
        Ok(port)
    }

    /// A replication link from `primary` to `region`'s database, and that
    /// database's directory and port.
    async fn upstream(&self, region: &str, primary: &str) -> anyhow::Result<(u16, PathBuf, u16)> {
        let upstream = self
            .link(
                self.port_of(primary).await?,
                format!("replication {primary}->{region}"),
            )
            .await?;
        let dbs = self.dbs.lock().await;
        let d = &dbs[region];
        Ok((upstream, d.dir.clone(), d.port))
    }

    async fn port_of(&self, region: &str) -> anyhow::Result<u16> {
        self.dbs
            .lock()
            .await
            .get(region)
            .map(|d| d.port)
            .with_context(|| format!("no dev database for region {region}"))
    }

    async fn take_server(&self, region: &str) -> anyhow::Result<Option<PgServer>> {
        let mut dbs = self.dbs.lock().await;
        let db = dbs
            .get_mut(region)
            .with_context(|| format!("no dev database for region {region}"))?;
        Ok(db.server.take())
    }

    /// Stops every database, replicas first.
    /// With `--ha patroni`: the Patroni cluster that runs the databases.
    pub fn patroni(&self) -> Option<&patroni::Patroni> {
        self.patroni.as_ref()
    }

    pub(super) async fn stop_all(&self, primary_first_order: &[String]) {
        if let Some(p) = &self.patroni {
            p.stop().await;
        }
        for r in primary_first_order.iter().rev() {
            if let Ok(Some(mut pg)) = self.take_server(r).await {
                eprintln!("stopping PostgreSQL ({r})");
                let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
            }
        }
        let proxies = std::mem::take(&mut *self.proxies.lock().expect("proxies lock"));
        for p in proxies.into_values() {
            p.shutdown().await;
        }
    }
}

impl ClusterControl for DevControl {
    fn kill(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let region = region.to_string();
        Box::pin(async move {
            if let Some(p) = &self.patroni {
                return p.kill(&region).await;
            }
            if let Some(mut pg) = self.take_server(&region).await? {
                tokio::task::spawn_blocking(move || pg.kill()).await?;
            }
            Ok(())
        })
    }

    fn stop(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let region = region.to_string();
        Box::pin(async move {
            if self.patroni.is_some() {
                // Patroni's switchover shuts the old leader down itself.
                return Ok(());
            }
            if let Some(mut pg) = self.take_server(&region).await? {
                tokio::task::spawn_blocking(move || pg.stop()).await??;
            }
            Ok(())
        })
    }

    fn rejoin(&self, region: &str, primary: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let (region, primary) = (region.to_string(), primary.to_string());
        Box::pin(async move {
            if let Some(p) = &self.patroni {
                // Patroni makes it a replica of the leader by itself.
                return p.rejoin(&region).await;
            }
            if let Some(mut pg) = self.take_server(&region).await? {
                tokio::task::spawn_blocking(move || pg.stop()).await??;
            }
            let (upstream, dir, port) = self.upstream(&region, &primary).await?;
            // A fresh clone of the new primary: the old timeline may hold
            // WAL the new primary never saw (always so after a failover).
            // Renamed away first, so a crash never leaves it half deleted.
            restart::remove_dir(&dir)?;
            crate::drill::hold_point("rejoin").await;
            let server = start_replica(&dir, &region, upstream, Some(port), self.pg_tls()).await?;
            self.dbs
                .lock()
                .await
                .get_mut(&region)
                .expect("region")
                .server = Some(server);
            Ok(())
        })
    }

    fn repoint(&self, region: &str, primary: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let (region, primary) = (region.to_string(), primary.to_string());
        Box::pin(async move {
            if self.patroni.is_some() {
                // Patroni points its replicas at the new leader.
                return Ok(());
            }
            let (upstream, dir, port) = self.upstream(&region, &primary).await?;
            pgserver::set_primary_conninfo(&dir, upstream, &region)?;
            // primary_conninfo is reloadable (PostgreSQL 13 and later).
            let store = Store::connect_lazy(&self.url(port, "postgres"), 1)?;
            store.reload_config().await?;
            store.close().await;
            Ok(())
        })
    }

    fn can_partition(&self) -> bool {
        true
    }

    fn promote(&self, from: &str, to: &str) -> BoxFuture<'_, anyhow::Result<bool>> {
        let (from, to) = (from.to_string(), to.to_string());
        Box::pin(async move {
            let Some(p) = &self.patroni else {
                return Ok(false);
            };
            // After a failover's kill Patroni elects the target, named the
            // only candidate, once the leader key expires; a switchover
            // asks the leader.
            if p.killed(&from) {
                p.api()?.failover(&to).await?;
            } else {
                p.api()?.switchover(&from, &to).await?;
            }
            Ok(true)
        })
    }

    fn preflight(&self, from: &str, to: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let (from, to) = (from.to_string(), to.to_string());
        Box::pin(async move {
            match &self.patroni {
                Some(p) => p.api()?.check_leader(&from, &to).await,
                None => Ok(()),
            }
        })
    }

    fn manager(&self) -> Option<&'static str> {
        self.patroni.as_ref().map(|_| "patroni")
    }

    fn partition(&self, region: &str, cut: bool) -> usize {
        let proxies = self.proxies.lock().expect("proxies lock");
        let mut n = 0;
        for (name, p) in proxies.iter() {
            if link_touches(name, region) {
                p.set_blocked(cut);
                n += 1;
            }
        }
        n
    }

    fn promoted(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let region = region.to_string();
        Box::pin(async move {
            let text = std::fs::read_to_string(&self.cluster_path)?;
            let mut c: ClusterFile = serde_json::from_str(&text)?;
            c.set_primary(&region);
            c.write(&self.cluster_path)
        })
    }
}

/// Whether link `name` (`<kind> <from>-><to>`) has `region` at either end.
fn link_touches(name: &str, region: &str) -> bool {
    name.split_once(' ')
        .and_then(|(_, ends)| ends.split_once("->"))
        .is_some_and(|(a, b)| a == region || b == region)
}

#[cfg(test)]
mod tests {
    use super::link_touches;

    #[test]
    fn a_partition_cuts_the_links_with_its_region_at_either_end() {
        for (name, region, cut) in [
            ("db eu-west->us-east", "eu-west", true),
            ("db us-east->eu-west", "eu-west", true),
            ("api us-east->eu-west", "eu-west", true),
            ("replication us-east->eu-west", "us-east", true),
            ("replication us-east->ap-south", "eu-west", false),
            ("db us-east->eu-west-2", "eu-west", false),
            ("db eu->us", "", false),
            ("garbage", "eu-west", false),
        ] {
            assert_eq!(link_touches(name, region), cut, "{name} / {region}");
        }
    }
}

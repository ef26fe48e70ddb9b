//! Drills through Patroni: [`PatroniApi`] speaks to each region's Patroni
//! REST API (switchover, failover to a named candidate, the cluster's
//! members), and [`PatroniControl`] is the [`ClusterControl`] of a node
//! configured with `drills.manager = "patroni"`. `swf dev --ha patroni`
//! runs its Patroni processes itself and uses the same API client.
//!
//! A switchover: the drill fences the old leader with SQL and waits until
//! the target has replayed its last write, then asks the leader's Patroni
//! to hand over (`POST /switchover` naming leader and candidate). Patroni
//! demotes the old leader and makes it a replica of the new one; the drill
//! waits until it follows on the leader's timeline, then lifts the fence.
//!
//! A failover: the leader's Patroni and PostgreSQL are stopped hard by
//! `drills.kill_command` (a node cannot SIGKILL a process on another host;
//! e.g. `ssh db-$SWF_DRILL_REGION sudo systemctl kill -s KILL patroni`),
//! and the target is named as the only candidate (`POST /failover` to its
//! own Patroni), so that when the leader key expires Patroni elects it and
//! no other replica. `drills.rejoin_command` (or the host's service
//! manager) starts the killed Patroni again, which rejoins as a replica.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::future::BoxFuture;
use percent_encoding::percent_decode_str;

use super::control::{ClusterControl, HookControl};
use crate::api::tls::ClientTls;
use crate::config::{DrillHooks, PatroniMember, RegionSpec};
use crate::store::Store;

/// How long a member may take to follow the leader after a drill.
pub const FOLLOW_DEADLINE: Duration = Duration::from_secs(120);
/// How long one REST call may take (a switchover answers once it is done).
const CALL_TIMEOUT: Duration = Duration::from_secs(40);

/// One region's Patroni REST API.
struct Endpoint {
    /// Without credentials or a trailing slash.
    base: String,
    member: String,
    auth: Option<(String, String)>,
}

/// A client of every region's Patroni REST API.
pub struct PatroniApi {
    http: reqwest::Client,
    regions: BTreeMap<String, Endpoint>,
}

impl PatroniApi {
    /// A client of `members` (region to REST URL and member name); basic
    /// auth credentials may sit in a URL's user info.
    pub fn new(
        members: &BTreeMap<String, PatroniMember>,
        tls: &ClientTls,
    ) -> anyhow::Result<PatroniApi> {
        let mut regions = BTreeMap::new();
        for (r, m) in members {
            let mut url = reqwest::Url::parse(&m.url)
                .with_context(|| format!("drills.patroni.{r}.url is not a URL"))?;
            let auth = (!url.username().is_empty()).then(|| {
                let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
                (
                    decode(url.username()),
                    decode(url.password().unwrap_or_default()),
                )
            });
            let _ = url.set_username("");
            let _ = url.set_password(None);
            regions.insert(
                r.clone(),
                Endpoint {
                    base: url.as_str().trim_end_matches('/').to_string(),
                    member: m.member.clone(),
                    auth,
                },
            );
        }
        let http = tls.builder().timeout(CALL_TIMEOUT).build()?;
        Ok(PatroniApi { http, regions })
    }

    fn endpoint(&self, r: &str) -> anyhow::Result<&Endpoint> {
        self.regions
            .get(r)
            .with_context(|| format!("no Patroni is configured for region {r}"))
    }

    fn post(&self, e: &Endpoint, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.post(format!("{}{path}", e.base));
        match &e.auth {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    }

    /// Asks the leader `from` to hand over to `to` (`POST /switchover`):
    /// Patroni demotes `from` and promotes `to` before it answers.
    pub async fn switchover(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let (f, t) = (self.endpoint(from)?, self.endpoint(to)?);
        let body = serde_json::json!({"leader": f.member, "candidate": t.member});
        let r = self
            .post(f, "/switchover")
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {}/switchover", f.base))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!(
                "Patroni refused the switchover from {from} to {to} ({status}): {}",
                text.trim()
            );
        }
        tracing::info!(%from, %to, answer = %text.trim(), "Patroni switched over");
        Ok(())
    }

    /// Names `to` the only candidate of a failover (`POST /failover` to its
    /// own Patroni). With the leader lost, Patroni elects it once the leader
    /// key expires; Patroni answers before that (503, "status unknown")
    /// when the key outlives its wait, which is no refusal.
    pub async fn failover(&self, to: &str) -> anyhow::Result<()> {
        let t = self.endpoint(to)?;
        let r = self
            .post(t, "/failover")
            .json(&serde_json::json!({"candidate": t.member}))
            .send()
            .await
            .with_context(|| format!("POST {}/failover", t.base))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if !status.is_success() && !text.contains("status unknown") {
            bail!(
                "Patroni refused the failover to {to} ({status}): {}",
                text.trim()
            );
        }
        tracing::info!(%to, answer = %text.trim(), "Patroni failover requested");
        Ok(())
    }

    /// The cluster's members (`GET /cluster`), asked of `first`'s Patroni,
    /// then of the others (a killed member's API does not answer).
    async fn cluster(&self, first: &str) -> Option<serde_json::Value> {
        let order = self
            .regions
            .iter()
            .filter(|(r, _)| *r == first)
            .chain(self.regions.iter().filter(|(r, _)| *r != first));
        for (_, e) in order {
            let got = self.http.get(format!("{}/cluster", e.base)).send().await;
            if let Ok(doc) = async { got?.error_for_status()?.json().await }.await {
                return Some(doc);
            }
        }
        None
    }

    /// Refuses unless Patroni's leader is `from`'s member and `to`'s member
    /// runs as a replica: a drill's view of the cluster and Patroni's agree
    /// (e.g. the configured member names are Patroni's).
    pub async fn check_leader(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let (f, t) = (self.endpoint(from)?, self.endpoint(to)?);
        let doc = self.cluster(from).await.with_context(|| {
            format!(
                "no Patroni REST API answered GET /cluster (first asked: {})",
                f.base
            )
        })?;
        let members = doc["members"].as_array().cloned().unwrap_or_default();
        let leader = leader(&members).and_then(|m| m["name"].as_str().map(str::to_string));
        match leader {
            Some(l) if l == f.member => {}
            Some(l) => bail!(
                "Patroni's leader is member `{l}`, not `{}` of the write region {from} \
                 (check drills.patroni.{from}.member)",
                f.member
            ),
            None => bail!("Patroni's cluster has no leader now"),
        }
        let replica = members.iter().any(|m| {
            m["name"] == t.member.as_str()
                && matches!(m["role"].as_str(), Some("replica" | "sync_standby"))
        });
        if !replica {
            bail!(
                "Patroni has no running replica named `{}` for region {to} \
                 (check drills.patroni.{to}.member)",
                t.member
            );
        }
        Ok(())
    }

    /// Waits until region `r` runs as a replica on the leader's timeline: a
    /// member started on an old timeline also reports `running` until
    /// Patroni stops it to rewind it.
    pub async fn wait_following(&self, r: &str, deadline: Duration) -> anyhow::Result<()> {
        let member = self.endpoint(r)?.member.clone();
        let done = crate::wait::until(deadline, Duration::from_millis(100), || async {
            let doc = self.cluster(r).await?;
            following(&doc, &member).then_some(())
        })
        .await;
        done.map_err(|_| {
            anyhow::anyhow!(
                "Patroni's member `{member}` (region {r}) did not follow the leader within {} s",
                deadline.as_secs()
            )
        })
    }
}

/// The leader among a `GET /cluster` answer's members (Patroni 3 says
/// `leader`; older ones `master` or `primary`).
fn leader(members: &[serde_json::Value]) -> Option<&serde_json::Value> {
    members
        .iter()
        .find(|m| matches!(m["role"].as_str(), Some("leader" | "master" | "primary")))
}

/// Whether `member` runs as a replica on the leader's timeline in a
/// `GET /cluster` answer.
fn following(doc: &serde_json::Value, member: &str) -> bool {
    let Some(members) = doc["members"].as_array() else {
        return false;
    };
    let me = members.iter().find(|m| m["name"] == member);
    let (Some(leader), Some(me)) = (leader(members), me) else {
        return false;
    };
    matches!(me["role"].as_str(), Some("replica" | "sync_standby"))
        && matches!(me["state"].as_str(), Some("running" | "streaming"))
        && me["timeline"].is_u64()
        && me["timeline"] == leader["timeline"]
}

/// After a drill, region `r` back as a replica of the leader: it follows
/// on the leader's timeline, then the switchover's SQL fence is lifted
/// (`ALTER SYSTEM` survives Patroni's demotion). Patroni may report a
/// member following and then restart it to rewind it: the unfence is tried
/// again after any error until `deadline`.
pub async fn follow_and_unfence(
    api: &PatroniApi,
    r: &str,
    database_url: &str,
    deadline: Duration,
) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        api.wait_following(r, left.max(Duration::from_secs(1)))
            .await?;
        let store = Store::connect_lazy(database_url, 1)?;
        let unfenced = store.unfence().await;
        store.close().await;
        match unfenced {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < until => {
                tracing::info!(region = %r, error = %e, "rejoin: the replica restarted; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The [`ClusterControl`] of `drills.manager = "patroni"`: switchovers and
/// failovers through each region's Patroni REST API; the hard stop of a
/// failover and the restart afterwards through `drills.kill_command` and
/// `drills.rejoin_command`.
pub struct PatroniControl {
    api: PatroniApi,
    hooks: HookControl,
    /// Each region's database, to lift the fence after a rejoin.
    databases: BTreeMap<String, String>,
    /// Regions whose Patroni the drill stopped hard.
    killed: Mutex<HashSet<String>>,
}

impl PatroniControl {
    pub fn new(
        hooks: &DrillHooks,
        regions: &[RegionSpec],
        tls: &ClientTls,
    ) -> anyhow::Result<PatroniControl> {
        Ok(PatroniControl {
            api: PatroniApi::new(&hooks.patroni, tls)?,
            hooks: HookControl::new(DrillHooks {
                kill_command: hooks.kill_command.clone(),
                rejoin_command: hooks.rejoin_command.clone(),
                ..Default::default()
            }),
            databases: regions
                .iter()
                .map(|r| (r.name.clone(), r.database_url.clone()))
                .collect(),
            killed: Mutex::new(HashSet::new()),
        })
    }

    fn was_killed(&self, r: &str) -> bool {
        self.killed.lock().expect("killed lock").contains(r)
    }
}

impl ClusterControl for PatroniControl {
    fn kill(&self, region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let region = region.to_string();
        Box::pin(async move {
            self.hooks.kill(&region).await.map_err(|e| {
                anyhow::anyhow!("{e} (with drills.manager = \"patroni\", a failover stops the leader's Patroni and PostgreSQL hard with it)")
            })?;
            self.killed.lock().expect("killed lock").insert(region);
            Ok(())
        })
    }
    fn stop(&self, _region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        // Patroni's switchover shuts the old leader down itself.
        Box::pin(async { Ok(()) })
    }
    fn rejoin(&self, region: &str, primary: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let (region, primary) = (region.to_string(), primary.to_string());
        Box::pin(async move {
            if self.was_killed(&region) && self.hooks.can_rejoin() {
                self.hooks.rejoin(&region, &primary).await?;
            }
            let url = self
                .databases
                .get(&region)
                .with_context(|| format!("region {region} is not in the regions file"))?;
            follow_and_unfence(&self.api, &region, url, FOLLOW_DEADLINE).await?;
            self.killed.lock().expect("killed lock").remove(&region);
            Ok(())
        })
    }
    fn repoint(&self, _region: &str, _primary: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        // Patroni points its replicas at the new leader.
        Box::pin(async { Ok(()) })
    }
    fn promoted(&self, _region: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn promote(&self, from: &str, to: &str) -> BoxFuture<'_, anyhow::Result<bool>> {
        let (from, to) = (from.to_string(), to.to_string());
        Box::pin(async move {
            if self.was_killed(&from) {
                self.api.failover(&to).await?;
            } else {
                self.api.switchover(&from, &to).await?;
            }
            Ok(true)
        })
    }
    fn preflight(&self, from: &str, to: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let (from, to) = (from.to_string(), to.to_string());
        Box::pin(async move { self.api.check_leader(&from, &to).await })
    }
    fn manager(&self) -> Option<&'static str> {
        Some("patroni")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_member_follows_only_as_a_running_replica_on_the_leaders_timeline() {
        let doc = |role: &str, state: &str, tl: serde_json::Value| {
            json!({"members": [
                {"name": "us-east", "role": "leader", "state": "running", "timeline": 4},
                {"name": "eu-west", "role": role, "state": state, "timeline": tl},
            ]})
        };
        assert!(following(&doc("replica", "streaming", json!(4)), "eu-west"));
        assert!(following(
            &doc("sync_standby", "running", json!(4)),
            "eu-west"
        ));
        assert!(!following(&doc("replica", "running", json!(3)), "eu-west"));
        assert!(!following(&doc("replica", "stopped", json!(4)), "eu-west"));
        assert!(!following(
            &doc("replica", "running", json!(null)),
            "eu-west"
        ));
        assert!(!following(&doc("replica", "running", json!(4)), "ap-south"));
        assert!(!following(&json!({"members": []}), "eu-west"));
        assert!(!following(&json!("garbage"), "eu-west"));
    }

    #[test]
    fn credentials_in_a_url_become_basic_auth_and_leave_the_url() {
        let members = BTreeMap::from([(
            "us-east".to_string(),
            PatroniMember {
                url: "http://ad%40min:p%3Ass@10.0.0.5:8008/".into(),
                member: "pg-1".into(),
            },
        )]);
        let api = PatroniApi::new(&members, &ClientTls::default()).unwrap();
        let e = api.endpoint("us-east").unwrap();
        assert_eq!(e.base, "http://10.0.0.5:8008");
        assert_eq!(e.member, "pg-1");
        assert_eq!(e.auth, Some(("ad@min".into(), "p:ss".into())));
        assert!(api.endpoint("eu-west").is_err());
    }
}

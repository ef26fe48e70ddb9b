//! Assembly: the store, the router (with its tracker and the cluster's
//! token key), the client and the executor a node's config asks for, their
//! background tasks joining the node's `JoinSet`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use crate::client::Client;
use crate::config::Config;
use crate::drill::ClusterControl;
use crate::executor::handlers::Registry;
use crate::executor::{Executor, ExecutorSettings, PoolSpec};
use crate::model::workflow::Limits;
use crate::router::{RegionDb, Router};
use crate::store::{Leases, Store};

/// Retry backoff: base 1 s, doubling, capped at 60 s (DESIGN section 8).
const BACKOFF_BASE_MS: i32 = 1_000;
const BACKOFF_CAP_MS: i32 = 60_000;

/// What a node runs besides its HTTP server and heartbeat.
pub(super) struct Assembled {
    pub(super) store: Store,
    pub(super) router: Arc<Router>,
    pub(super) client: Option<Client>,
    pub(super) executor: Option<Arc<Executor>>,
    pub(super) control: Option<Arc<dyn ClusterControl>>,
}

/// Connects, checks the schema, finds the primary (marking the drills this
/// node was running when it last stopped interrupted), starts the tracker
/// and the roles' subsystems. Their tasks join `tasks` under `span`.
pub(super) async fn assemble(
    config: &Config,
    registry: &Registry,
    control: Option<Arc<dyn ClusterControl>>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
    span: &Span,
) -> anyhow::Result<Assembled> {
    let control = match control {
        Some(c) => Some(c),
        None => configured_control(config)?,
    };
    let store = Store::connect_lazy(&config.database.url, config.database.max_connections)?;
    check_schema(&store).await?;
    // Read once from this region's database (a replica has it too); tokens
    // are signed and verified in memory from here on.
    let token_key = store
        .token_key()
        .await
        .context("load the cluster's token key")?;
    let router = Arc::new(Router::new(
        &config.region,
        store.clone(),
        region_dbs(config, &store)?,
        config.routing.clone(),
        &config.node_id,
        token_key,
    ));
    // With no writable primary (e.g. a drill was killed between fence and
    // promotion) the node still starts, so `swf drill recover` can be run
    // through it; its writes fail and look for the primary again.
    match router.discover_primary().await {
        Ok(()) => crate::drill::interrupt_own(&router, &config.node_id).await,
        Err(e) => tracing::warn!(
            "no writable primary found at start ({e:#}); writes fail until one is \
             (after an interrupted drill: `swf drill recover`)"
        ),
    }
    tasks.spawn(
        router
            .clone()
            .track(shutdown.clone())
            .instrument(span.clone()),
    );
    let _in_node = span.enter();
    let executor = config.enable_executor.then(|| {
        Executor::start(
            router.clone(),
            registry.clone(),
            executor_settings(config),
            shutdown.clone(),
            tasks,
        )
    });
    let client = config.enable_client.then(|| {
        Client::new(
            router.clone(),
            registry.clone(),
            Limits {
                max_steps: config.limits.max_steps,
                max_id_len: config.limits.max_id_len,
                max_goal_len: config.limits.max_goal_len,
                max_json_depth: config.limits.max_json_depth,
                max_queues: config.limits.max_queues,
                allow_unadvertised_handlers: config.limits.allow_unadvertised_handlers,
                max_map_items: config.limits.max_map_items,
            },
            &config.node_id,
            executor.clone(),
            tasks,
        )
    });
    Ok(Assembled {
        store,
        router,
        client,
        executor,
        control,
    })
}

/// Drills through what `[drills]` configures: Patroni's REST API
/// (`manager = "patroni"`), else the hook commands when any is set.
fn configured_control(config: &Config) -> anyhow::Result<Option<Arc<dyn ClusterControl>>> {
    let d = &config.drills;
    if d.manager == crate::config::DrillManager::Patroni {
        let tls = crate::api::tls::ClientTls::for_peers(&config.api)?;
        let control = crate::drill::PatroniControl::new(d, &config.regions, &tls)?;
        return Ok(Some(Arc::new(control)));
    }
    let hooks = d.fence_command.is_some()
        || d.promote_command.is_some()
        || d.kill_command.is_some()
        || d.rejoin_command.is_some();
    Ok(hooks.then(|| {
        Arc::new(crate::drill::HookControl::new(config.drills.clone())) as Arc<dyn ClusterControl>
    }))
}

/// Every region's database; this region's is the node's own store.
fn region_dbs(config: &Config, local: &Store) -> anyhow::Result<Vec<RegionDb>> {
    let mut regions = Vec::new();
    for r in &config.regions {
        let db = if r.name == config.region {
            local.clone()
        } else {
            Store::connect_lazy(&r.database_url, config.database.max_connections)?
        };
        regions.push(RegionDb {
            name: r.name.clone(),
            store: db,
            api_url: r.api_url.clone(),
        });
    }
    Ok(regions)
}

fn executor_settings(config: &Config) -> ExecutorSettings {
    ExecutorSettings {
        node_id: config.node_id.clone(),
        region: config.region.clone(),
        pools: config
            .worker_pools
            .iter()
            .map(|(name, p)| PoolSpec {
                name: name.clone(),
                queue: p.queue.clone(),
                size: p.size,
            })
            .collect(),
        claim_batch: config.executor.claim_batch,
        prefetch_min: config.executor.prefetch_min,
        poll_interval: Duration::from_millis(config.executor.poll_interval_ms),
        shutdown_grace: Duration::from_millis(config.executor.shutdown_grace_ms),
        leases: Leases {
            lease_ms: clamp_i32(config.executor.lease_ms),
            margin_ms: clamp_i32(config.executor.visibility_margin_ms),
            backoff_base_ms: BACKOFF_BASE_MS,
            backoff_cap_ms: BACKOFF_CAP_MS,
        },
        max_output_bytes: config.limits.max_output_bytes,
    }
}

fn clamp_i32(v: u64) -> i32 {
    v.min(i32::MAX as u64) as i32
}

/// Refuses to run against a database that is not migrated, or migrated by
/// a newer binary whose schema this one does not know.
async fn check_schema(store: &Store) -> anyhow::Result<()> {
    match store.schema_compat().await {
        Ok(c) => match c.problem() {
            None => Ok(()),
            Some(why) => bail!("database {}: {why}", crate::config::redact_url(store.url())),
        },
        Err(e) => Err(e).with_context(|| {
            format!(
                "connect to database {}",
                crate::config::redact_url(store.url())
            )
        }),
    }
}

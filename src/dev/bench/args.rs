//! The flags of `swf bench`.

use clap::Args;

#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Base URL of a node's API; without it, an embedded cluster is started.
    #[arg(long)]
    pub api: Option<String>,
    /// Workflows per shape in the throughput phase.
    #[arg(long, default_value_t = 3000)]
    pub workflows: usize,
    /// Concurrent submitters in the throughput phase (and the burn-down's
    /// untimed pre-submit).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Shapes to run: comma-separated of one, chain, fanout.
    #[arg(long, value_delimiter = ',', default_value = "one,chain,fanout")]
    pub shapes: Vec<String>,
    /// Samples for the latency phases.
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    /// Worker pool size of the embedded cluster's executing node (the
    /// hybrid node, or the burn-down's executor-only node).
    #[arg(long, visible_alias = "pool", default_value_t = 32)]
    pub pool_size: usize,
    /// Region reads: with `--api` pointing at a node outside the write
    /// region, measure read-after-own-write with the token and status reads
    /// by source; calls pinned to this region (the primary's) count as
    /// primary reads. Skips the throughput phases.
    #[arg(long, conflicts_with_all = ["burn_down", "soak"])]
    pub primary_region: Option<String>,
    /// Burn-down instead of the other phases: pre-submit N 1-step `noop`
    /// workflows while no executor serves their queue (through an edge node;
    /// not timed), then start one executor-only node (`--pool-size` slots)
    /// and time from its start until all N runs completed. Embedded cluster
    /// only (an external one would need queue pause).
    #[arg(long, value_name = "N")]
    pub burn_down: Option<usize>,
    /// With `--burn-down`: run it K times on the same database (fresh nodes
    /// each time), reporting each run's figures and the RSS after it.
    #[arg(long, value_name = "K", default_value_t = 1, requires = "burn_down")]
    pub repeat: usize,
    /// With `--burn-down`: before the first run, insert N finished 1-step
    /// runs (each with its step and completed attempt) straight into the
    /// database, so the drain runs against that much history; not timed.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "burn_down")]
    pub history: u64,
    /// With `--burn-down`: every run carries a concurrency key with this
    /// limit (`bench-0`, or one of `--keys` keys, in turn).
    #[arg(long, value_name = "LIMIT", requires = "burn_down")]
    pub key_limit: Option<u32>,
    /// With `--key-limit`: how many distinct keys the runs spread over.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "key_limit")]
    pub keys: usize,
    /// Soak instead of the other phases: a steady mixed load (chains, maps,
    /// failures retried, cancels, pauses; reads with consistency tokens) for
    /// SECS seconds, every run checked to end as it must, RSS sampled
    /// (embedded). Exits 1 when anything went wrong.
    #[arg(long, value_name = "SECS", conflicts_with = "burn_down")]
    pub soak: Option<u64>,
    /// With `--soak`: workflows started per second.
    #[arg(long, value_name = "PER_S", default_value_t = 50.0, requires = "soak")]
    pub rate: f64,
    /// The embedded node's lineage cache bound in MiB
    /// (`routing.cache_max_bytes`; 0: no cache). Default: the config's.
    #[arg(long, value_name = "MIB", conflicts_with = "api")]
    pub cache_mib: Option<u64>,
    /// Print JSON.
    /// Remote-region mode, on an embedded two-region cluster (us-east holds
    /// the primary, eu-west a streaming replica, `--wan-latency-ms` apart):
    /// the burn-down of `--workflows` 1-step workflows pinned to us-east,
    /// then pinned to eu-west (each executed by its region's node, pool
    /// `--pool-size`), and submits of as many workflows by `--callers`
    /// concurrent callers through each region's node; reports each pair
    /// and its ratio, with the round trips and batch sizes behind them
    #[arg(long, conflicts_with_all = ["api", "burn_down", "soak", "primary_region"])]
    pub remote_region: bool,
    /// With `--remote-region`: one-way delay added to every cross-region link
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 40,
        requires = "remote_region"
    )]
    pub wan_latency_ms: u64,
    /// With `--remote-region`: concurrent callers of the submit phase
    #[arg(
        long,
        value_name = "N",
        default_value_t = 16,
        requires = "remote_region"
    )]
    pub callers: usize,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub access: crate::api::tls::AccessArgs,
}

impl BenchArgs {
    /// Refuses flag values that cannot run, naming the flag.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        let positive = [
            ("--concurrency", self.concurrency),
            ("--pool-size", self.pool_size),
            ("--repeat", self.repeat),
            ("--keys", self.keys),
            ("--callers", self.callers),
            ("--workflows", self.workflows),
            ("--key-limit", self.key_limit.map_or(1, |l| l as usize)),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, v)| *v == 0) {
            anyhow::bail!("{flag} must be at least 1");
        }
        if self.soak == Some(0) {
            anyhow::bail!("--soak must be at least 1 second");
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 10_000.0) {
            anyhow::bail!("--rate must be above 0 and at most 10000 workflows/s");
        }
        if self.burn_down == Some(0) {
            anyhow::bail!("--burn-down must be at least 1 workflow");
        }
        if self.burn_down.is_some() {
            if let Some(api) = &self.api {
                anyhow::bail!(
                    "--burn-down runs on the embedded cluster only, not against --api {api}: \
                     it must hold the queue while it pre-submits, and queues cannot be paused \
                     yet (POST /v1/queues/{{name}}/pause); run it without --api"
                );
            }
        }
        Ok(())
    }
}

//! The command line's arguments (clap): every `swf` command and its flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "swf",
    version,
    about = "singularity-workflow: a geo-distributed workflow control plane on PostgreSQL + pgmq"
)]
pub struct Cli {
    /// Log format on stderr (filter with SWF_LOG or RUST_LOG, e.g. `info,swf=debug`).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an embedded local cluster: real PostgreSQL plus one hybrid node per region.
    #[cfg(feature = "dev")]
    Dev(DevArgs),
    /// Run one node from a config file.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Apply the database migrations (idempotent; safe from several nodes at once).
    Migrate {
        #[arg(long, env = "SWF_DATABASE__URL")]
        database_url: String,
    },
    /// Patroni's `on_role_change` callback (`swf dev --ha patroni` sets it):
    /// on a promotion, a new epoch naming REGION as the write region,
    /// unless the epoch already names it. Patroni appends ACTION ROLE SCOPE.
    #[command(hide = true)]
    PatroniCallback {
        #[arg(long)]
        database_url: String,
        /// The region of the member Patroni runs this for.
        #[arg(long)]
        region: String,
        action: String,
        role: String,
        scope: Option<String>,
    },
    /// Validate or rewrite node config files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Submit a workflow JSON file (or - for stdin); prints run_id and token.
    Submit {
        #[command(flatten)]
        api: ApiArgs,
        /// Workflow JSON file, or - for standard input.
        file: String,
        /// FILE holds a batch, `{"workflows": [...]}` or a JSON array of
        /// workflows: stored in one transaction, or none of them; prints
        /// each run id (in order) and the token.
        #[arg(long)]
        batch: bool,
    },
    /// Print a run's status.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        run_id: String,
        /// Wait until the run is completed, failed or cancelled (exit 0 only when completed).
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// List runs, newest first.
    Runs {
        #[command(flatten)]
        api: ApiArgs,
        /// Only runs of this status (running, completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// The next page: the cursor a previous page printed.
        #[arg(long)]
        after: Option<String>,
    },
    /// Cancel a run, or with --status every run that matches the filter.
    Cancel {
        #[command(flatten)]
        api: ApiArgs,
        /// The run to cancel.
        #[arg(required_unless_present = "status", conflicts_with = "status")]
        run_id: Option<String>,
        /// Bulk: cancel every run of this status (running or paused).
        #[arg(long)]
        status: Option<String>,
        /// Bulk: only runs with exactly this goal.
        #[arg(long, requires = "status")]
        goal: Option<String>,
        /// Bulk: only runs created at or after this time (RFC 3339).
        #[arg(long, requires = "status")]
        created_after: Option<String>,
        /// Bulk: only runs created before this time (RFC 3339).
        #[arg(long, requires = "status")]
        created_before: Option<String>,
    },
    /// Retry a failed or cancelled run: its steps that did not complete run again.
    Retry {
        #[command(flatten)]
        api: ApiArgs,
        run_id: String,
    },
    /// Pause a run: it starts no new task until resumed (started ones finish).
    Pause {
        #[command(flatten)]
        api: ApiArgs,
        run_id: String,
    },
    /// Resume a paused run.
    Resume {
        #[command(flatten)]
        api: ApiArgs,
        run_id: String,
    },
    /// Send a signal to a run: the first step waiting for NAME (`wait_for`)
    /// completes with the payload as its output; kept until one waits.
    Signal {
        #[command(flatten)]
        api: ApiArgs,
        run_id: String,
        name: String,
        /// The payload (JSON), the waiting step's output.
        #[arg(long)]
        payload: Option<String>,
    },
    /// Print a run's lineage: its DAG and every attempt.
    Lineage {
        #[command(flatten)]
        api: ApiArgs,
        run_id: String,
    },
    /// Print regions, primary, epoch, lag and nodes.
    Regions {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List queues (depth, in flight, delayed, oldest ready task, paused),
    /// or pause or resume one cluster-wide.
    Queues {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: Option<QueueAction>,
    },
    /// Cron schedules: list, create from a file, delete, pause, resume.
    Schedules {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: ScheduleAction,
    },
    /// End-to-end load benchmark against a running cluster (or one it starts).
    #[cfg(feature = "dev")]
    Bench(crate::dev::bench::BenchArgs),
    /// Failover drills: move the write region and report RTO and lost writes.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// API tokens.
    #[command(subcommand)]
    Auth(AuthCommand),
}

impl Command {
    /// Whether this command runs a node (or a cluster of them) until stopped.
    pub fn runs_a_node(&self) -> bool {
        match self {
            #[cfg(feature = "dev")]
            Command::Dev(_) | Command::Bench(_) => true,
            Command::Serve { .. } => true,
            _ => false,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ScheduleAction {
    /// Every schedule: cron, paused, next tick, last run.
    List,
    /// Create one from a JSON file (or - for stdin):
    /// `{"name", "cron": "*/5 * * * *", "workflow": {...}, "paused"?}`.
    Create { file: String },
    /// Delete one (the runs it started stay).
    Delete { name: String },
    /// Stop its ticks.
    Pause { name: String },
    /// Start its ticks again from the next one (missed ticks do not run).
    Resume { name: String },
}

#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// Stop claims of the queue's tasks on every node (running ones finish;
    /// submits still queue). Needs an admin token when auth is on.
    Pause { name: String },
    /// Let the queue's tasks be claimed again.
    Resume { name: String },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print the SHA-256 of a token (read from stdin) for a tokens file.
    HashToken,
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Planned move of the write region: fence, catch up, promote; zero loss.
    Switchover(DrillArgs),
    /// Simulated loss of the write region's primary: stop it hard, promote.
    Failover(DrillArgs),
    /// Cut every link between a region and the others for a while under
    /// load, then heal (`swf dev`): writes refused, acknowledged writes
    /// present or lost, stale token reads, time to converge.
    Partition(PartitionArgs),
    /// The drill journal, newest first.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// After a drill was interrupted: leave exactly one writable primary
    /// and report what was found and done.
    Recover {
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The region to move the write region to.
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Workflows submitted per second through every region's node during the drill.
    #[arg(long, default_value_t = 0.0)]
    pub load: f64,
    /// Refuse when the target replica lags more than this.
    #[arg(long, default_value_t = crate::api::wire::DEFAULT_MAX_LAG_MS)]
    pub max_lag_ms: u64,
}

#[derive(Debug, Args)]
pub struct PartitionArgs {
    /// The region to cut off from the others.
    #[arg(long)]
    pub region: String,
    /// How long its links stay cut, in seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub secs: u64,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Workflows submitted per second through every region's node during the drill.
    #[arg(long, default_value_t = 0.0)]
    pub load: f64,
}

#[cfg(feature = "dev")]
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where PostgreSQL data, logs and cluster.json live.
    #[arg(long, default_value = ".swf/dev")]
    pub data_dir: PathBuf,
    /// Comma-separated region names; the first holds the primary.
    #[arg(long, value_delimiter = ',', default_value = "us-east")]
    pub regions: Vec<String>,
    /// API port of the first region's node (next regions use the next ports);
    /// 0: any free ports (cluster.json names them).
    #[arg(long, default_value_t = 4000)]
    pub base_port: u16,
    /// One-way delay added to every cross-region link.
    #[arg(long, default_value_t = 0)]
    pub wan_latency_ms: u64,
    /// Delete the data dir first and start over.
    #[arg(long)]
    pub fresh: bool,
    /// Run everything over TLS from a throwaway CA under DATA_DIR/tls (HTTPS
    /// APIs, verify-full database links and replication) with auth on; the
    /// admin token is printed and kept in DATA_DIR/admin.token.
    #[arg(long)]
    pub tls: bool,
    /// Let an HA manager run each region's PostgreSQL: `patroni` (one
    /// Patroni per region over one etcd; needs Debian's `patroni` and
    /// `etcd-server`). Drills then go through Patroni.
    #[arg(long, value_enum)]
    pub ha: Option<crate::dev::HaManager>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a node config; print node_type, roles, region, pools.
    Check {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print a legacy config rewritten to the current keys.
    Migrate { file: PathBuf },
}

#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Base URL of a node's API.
    #[arg(long, env = "SWF_API_URL", default_value = "http://127.0.0.1:4000")]
    pub api: String,
    /// Print the raw JSON answer.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub access: crate::api::tls::AccessArgs,
}

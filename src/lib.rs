//! singularity-workflow: a geo-distributed workflow control plane on
//! PostgreSQL + pgmq.
//!
//! Crate map, top to bottom (an upper layer may call a lower one, never the
//! reverse):
//!
//! - [`cli`]: the `swf` command line (parsing and printing; `main.rs` only calls it).
//! - [`dev`]: `swf dev`, the embedded local cluster (real PostgreSQL servers).
//! - [`bench`]: `swf bench`, the end-to-end load benchmark.
//! - [`drill`]: switchover and failover drills with a measured report;
//!   [`drill_load`] is the load they generate and verify.
//! - [`api`]: HTTP routes, headers and error bodies (axum on hyper).
//! - [`auth`]: bearer tokens with scopes, per-token rate limits.
//! - [`node`]: assembles a node's subsystems from its config; supervision, shutdown.
//! - [`client`]: the client role: submit, status, lineage, list, cancel.
//! - [`executor`]: the executor role: worker pools, claims, handlers, completions.
//! - [`handlers`]: the handler and decomposer registry, built-in handlers.
//! - [`router`]: where each read and write goes; consistency tokens; epochs.
//! - [`store`]: ALL SQL: pools, migrations, engine functions, pgmq, nodes.
//! - [`workflow`]: workflow specs, DAG validation, pgmq queue naming (pure).
//! - [`token`]: consistency tokens and LSNs (pure).
//! - [`config`]: the node TOML file, environment overrides, validation (pure).
//! - [`batch`]: the micro-batcher behind submits and completions.
//! - [`cache`]: the lineage cache: status and lineage reads that know their LSN.
//! - [`pgserver`]: starts and stops PostgreSQL server processes (dev, tests).
//! - [`proxy`]: the TCP delay proxy that puts WAN latency (or a partition) on dev links.
//! - [`telemetry`]: logging and the Prometheus recorder.
//! - [`tls`]: rustls for the API server and every HTTP client; the dev PKI.
//!
//! Invariants:
//! - Only `store` issues SQL. Engine transitions are PL/pgSQL functions in
//!   `migrations/`, one round trip each.
//! - A 2xx on submit means the run is committed on the primary.
//! - A completion is accepted only for the step's current attempt; the
//!   database decides, not the executor.
//! - No lock is held across an await on the network in the hot path.
//! - The router never waits on a replica without a deadline; a read with a
//!   token never returns data older than the token's write.
//! - Every write carries the highest epoch the node has seen; a database of
//!   an older epoch (a resurrected old primary) refuses it.
//! - PostgreSQL servers started by this process never outlive it.

pub mod api;
pub mod batch;
pub mod cli;
pub mod client;
pub mod config;
#[cfg(feature = "dev")]
pub mod dev;
pub mod drill;
pub mod executor;
pub mod model;
pub mod node;
pub mod router;
pub mod store;
pub mod telemetry;
pub mod wait;

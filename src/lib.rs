//! singularity-workflow: a geo-distributed workflow control plane on
//! PostgreSQL + pgmq.
//!
//! Crate map, a folder per layer, top to bottom. An upper layer may call a
//! lower one, never the reverse, and no two files import each other in a
//! circle (each folder's `mod.rs` only declares, re-exports and documents).
//!
//! - [`cli`]: the `swf` command line: parsing, calls, printing (`main.rs` only calls it).
//! - [`dev`] (cargo feature `dev`, on by default): `swf dev` (the embedded local
//!   cluster), `swf bench`, PostgreSQL server processes (`pgserver/`), the WAN
//!   delay proxy and the dev PKI. `cargo build --no-default-features` leaves it out.
//! - [`api`]: the HTTP API (axum on hyper): routes, middleware, forwarding of
//!   pinned calls; `api::wire` (every body, error code and header name, shared
//!   by the server and its clients), `api::client` (the one typed API client:
//!   CLI, bench, drills, tests), `api::auth` (tokens, scopes, rate limits),
//!   `api::tls` (rustls for the server and every outgoing HTTP client).
//! - [`node`]: assembles a node from its config's roles; supervision (one
//!   `JoinSet`), heartbeats, the HTTP server task, signals, shutdown.
//! - [`client`]: the client role: validate and submit (micro-batched), status,
//!   lineage, list, cancel, the regions view.
//! - [`executor`]: the executor role: worker pools, claim loop with LISTEN
//!   wake-ups, running handlers, completion batching, lease extension, drain;
//!   `executor::handlers` the handler and decomposer registry.
//! - [`drill`]: switchover and failover drills: phases, timeline, the load
//!   they generate (`drill::load`) and the verdict (a pure function).
//! - [`router`]: where each read and write goes: the read plan (pure), the
//!   LSN tracker, primary discovery and epochs, the lineage cache.
//! - [`store`]: ALL SQL, by concern (connection and schema, engine
//!   transitions, reads, cluster state, nodes, queues).
//! - [`config`]: the node TOML file: one key table, environment overrides,
//!   legacy keys, side files. Parsing is pure (`config::parse`); only
//!   `config::files` reads files and the environment.
//! - [`model`]: workflow specs and DAG validation, pgmq queue naming,
//!   consistency tokens and LSNs (pure).
//! - [`batch`]: the micro-batcher behind submits and completions.
//! - [`telemetry`]: logging and the Prometheus recorder.
//! - [`wait`]: the one "poll until, or give up at a deadline" helper.
//!
//! Invariants, each with the test that fails if it breaks:
//! - Layers import downwards only and no two files import each other in a
//!   circle (`layout::layers_import_downwards_only`,
//!   `layout::no_import_cycle_between_files`).
//! - Only `store` issues SQL (`layout::sql_only_in_store`). Engine
//!   transitions are PL/pgSQL functions in `migrations/`, one round trip each;
//!   the newest migration's header is the state machine.
//! - A 2xx on submit means the run is committed on the primary: every
//!   acknowledged write of a switchover is found on the new primary
//!   (`drills::switchover_under_load_loses_nothing_and_moves_back`).
//! - A completion is accepted only for the step's current attempt; the
//!   database decides, not the executor (`engine::stale_completion_is_refused`).
//! - Every write carries the highest epoch the node has seen, heartbeats and
//!   queue creation included; a database of an older epoch refuses it
//!   (`store::a_stale_primary_refuses_heartbeats_and_queue_creation`,
//!   `drills::a_resurrected_old_primary_is_never_written_to`).
//! - A read with a token never returns data older than the token's write
//!   (`regions::token_reads_never_stale_while_replay_is_paused`).
//! - The router never waits on a replica without a deadline: a replica that
//!   stops answering turns unhealthy and reads go to the primary
//!   (`runtime::a_frozen_replica_turns_unhealthy_and_reads_go_to_the_primary`).
//! - Every task a node starts belongs to a `JoinSet` it supervises; shutdown
//!   drains by waiting on tasks, not by polling, and releases what cannot
//!   finish (`runtime::shutdown_finishes_in_flight_tasks_without_waiting_out_the_grace`,
//!   `engine::graceful_shutdown_releases_unfinished_tasks`).
//! - No `std` lock is held across an `.await` (clippy's `await_holding_lock`,
//!   denied below and run before every submission).
//! - PostgreSQL servers started by this process never outlive it
//!   (`dev::pgserver::server::tests::servers_die_with_their_process`).
//! - One bad message never blocks a queue: a claim that raises for a
//!   message's sake sets it apart and fails its step, and the queue goes on
//!   (`limits::a_message_no_claim_can_read_is_archived_and_the_queue_keeps_running`,
//!   `limits::a_step_input_too_large_for_the_database_fails_its_step_and_the_queue_keeps_running`).
//! - A handler's output never exceeds `limits.max_output_bytes` in the
//!   database (`limits::an_echo_chain_past_max_output_bytes_fails_once_with_output_too_large`).
//! - Submits never take the database past `limits.max_queues` pgmq queues,
//!   concurrent ones included
//!   (`limits::the_257th_queue_is_refused_with_too_many_queues_and_nothing_is_stored`).
//! - A completion report is retried while its attempt's lease lasts: a
//!   primary outage shorter than the lease runs no task twice
//!   (`limits::a_completion_report_outlasting_a_primary_outage_lands_and_the_task_runs_once`).

#![deny(clippy::await_holding_lock)]

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

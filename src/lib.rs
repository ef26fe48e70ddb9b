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
//!   delay proxy, the dev PKI, and `--ha patroni` (`dev::patroni`). `cargo build --no-default-features` leaves it out.
//! - [`api`]: the HTTP API (axum on hyper): routes, middleware, forwarding of
//!   pinned calls; `api::wire` (every body, error code and header name, shared
//!   by the server and its clients), `api::client` (the one typed API client:
//!   CLI, bench, drills, tests), `api::auth` (tokens, scopes, rate limits),
//!   `api::tls` (rustls for the server and every outgoing HTTP client),
//!   `api::openapi` (the OpenAPI document of the `/v1` routes),
//!   `api::routes::ui` (the dashboard of `ui/`, embedded).
//! - [`node`]: assembles a node from its config's roles; supervision (one
//!   `JoinSet`), heartbeats, the HTTP server task, the schedules' and
//!   waits' ticker,
//!   signals, shutdown.
//! - [`client`]: the client role: validate and submit (micro-batched; a batch
//!   submit in one transaction), status, lineage, list, cancel (one run or by
//!   filter), retry, pause/resume and signals of a run (and timing out
//!   waits), queues (overview, pause/resume), cron schedules (and
//!   firing them), which handlers a submit may name, the regions view.
//! - [`executor`]: the executor role: worker pools, claim loop with LISTEN
//!   wake-ups, running handlers, completion batching, lease extension, drain;
//!   `executor::handlers` the handler and decomposer registry, with the
//!   config's `http:<name>` and `command:<name>` handlers.
//! - [`drill`]: switchover, failover and partition drills: phases, timeline, the load
//!   they generate (`drill::load`), the verdict (a pure function), the
//!   journal and `swf drill recover`.
//! - [`router`]: where each read and write goes: the read plan (pure), the
//!   LSN tracker, primary discovery and epochs, the lineage cache.
//! - [`store`]: ALL SQL, by concern (connection and schema, engine
//!   transitions, reads, cluster state, nodes, queues, schedules).
//! - [`config`]: the node TOML file: one key table, environment overrides,
//!   legacy keys, side files. Parsing is pure (`config::parse`); only
//!   `config::files` reads files and the environment.
//! - [`model`]: workflow specs and DAG validation, pgmq queue naming, cron
//!   expressions and ticks,
//!   consistency tokens (signed and verified with the cluster's key) and
//!   LSNs (pure).
//! - [`batch`]: the micro-batcher behind submits and completions.
//! - [`telemetry`]: logging and the Prometheus recorder.
//! - [`wait`]: the one "poll until, or give up at a deadline" helper.
//!
//! Invariants, each with the test that fails if it breaks:
//! - Layers import downwards only and no two files import each other in a
//!   circle (`layout::layers_import_downwards_only`,
//!   `layout::no_import_cycle_between_files`).
//! - Only `store` issues SQL (`layout::sql_only_in_store`). Engine
//!   transitions are PL/pgSQL functions in `migrations/`, one round trip each
//!   (the README's "Engine state machine" names the migration headers that
//!   document them).
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
//! - A caller's token never changes node state or a cache version: one this
//!   cluster did not sign (altered, made up, foreign, unsigned) answers 400
//!   `invalid_token` before anything runs, forwarding included
//!   (`tokens::an_altered_or_made_up_token_is_refused_and_changes_nothing`,
//!   `tokens::a_pinned_call_with_a_forged_token_is_refused_where_it_arrives`),
//!   and a cached document's version is the database's own position
//!   (`client::tests::cache_versions_come_from_the_database_never_the_caller`,
//!   `tokens::a_forged_high_token_cannot_make_the_cache_serve_stale_reads`).
//! - The lineage cache is bounded in bytes of the memory its documents hold
//!   (`router::cache::tests::large_documents_are_evicted_by_their_bytes`,
//!   `router::cache::tests::an_entry_weighs_what_its_parsed_document_holds_in_memory`) and
//!   cleared by a new epoch
//!   (`router::discovery::tests::a_new_epoch_clears_the_lineage_cache`).
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
//! - A `/metrics` scrape costs no query: one task of the node refreshes the
//!   database-derived gauges (`serving::scrapes_cost_no_query_and_the_gauges_still_move`).
//! - Metric labels come from fixed sets: route templates, never raw paths;
//!   standard methods or `other`; status classes
//!   (`serving::http_metric_labels_are_route_templates_methods_and_status_classes`,
//!   `api::made_up_methods_add_no_metric_series`).
//! - Anonymous callers cannot starve `/v1`: calls that need no token have
//!   `api.anonymous_concurrency` permits of their own and are shed past them
//!   (`serving::anonymous_calls_past_their_limit_are_shed_and_v1_carries_on`).
//! - A connection is bounded in time outside its requests: its head by
//!   `api.header_read_timeout_ms`, its idle keep-alive by `api.idle_timeout_ms`
//!   (`api::a_client_that_never_finishes_its_headers_is_disconnected`,
//!   `serving::an_idle_keep_alive_connection_is_closed_over_http_and_https`).
//! - No header, path parameter or method gets an unspecified status, stores
//!   anything or moves the node's epoch
//!   (`fuzz::generated_headers_and_path_parameters_get_specified_answers_and_change_nothing`).
//! - A drill never leaves two writable primaries, and `swf drill recover`
//!   after a drill killed at any phase leaves exactly one
//!   (`recover::a_switchover_killed_after_the_fence_is_recovered_by_unfencing`,
//!   `recover::a_failover_killed_after_promotion_is_finished_forward`,
//!   `recover::a_switchover_killed_after_the_epoch_bump_is_finished_forward`,
//!   `recover::a_switchover_killed_during_rejoin_is_recovered`,
//!   `drills::a_drill_while_another_holds_the_primary_fenced_is_refused_and_recover_unfences`,
//!   `drills::a_failed_drill_unfences_the_old_primary_only_while_the_target_is_a_replica`).
//! - A partition loses no acknowledged write and serves no stale token read,
//!   whichever region is cut off
//!   (`drills::a_partition_of_either_region_loses_nothing_and_serves_no_stale_token_read`).
//! - Every promotion moves the epoch, an HA manager's own included: Patroni's
//!   callback starts one naming the promoted region
//!   (`drills::drills_go_through_patroni_and_its_own_promotions_move_the_epoch`).
//! - Drills are exclusive cluster-wide: a second one answers 409
//!   `drill_in_progress`, never 500
//!   (`drills::two_drills_at_once_one_runs_and_the_other_is_refused_and_the_journal_lists_them`,
//!   `drills::a_drill_while_another_holds_the_primary_fenced_is_refused_and_recover_unfences`).
//! - One bad message never blocks a queue: a claim that raises for a
//!   message's sake sets it apart and fails its step, and the queue goes on
//!   (`limits::a_message_no_claim_can_read_is_archived_and_the_queue_keeps_running`,
//!   `limits::a_step_input_too_large_for_the_database_fails_its_step_and_the_queue_keeps_running`).
//! - A handler's output never exceeds `limits.max_output_bytes` in the
//!   database (`limits::an_echo_chain_past_max_output_bytes_fails_once_with_output_too_large`).
//! - Submits never take the database past `limits.max_queues` pgmq queues,
//!   concurrent ones included
//!   (`limits::the_257th_queue_is_refused_with_too_many_queues_and_nothing_is_stored`).
//! - A batch is stored whole or not at all, in one transaction: a refused
//!   one names its first bad workflow and stores nothing
//!   (`batch::a_thousand_workflows_are_stored_in_one_transaction_and_all_complete`,
//!   `batch::a_bad_workflow_refuses_the_whole_batch_with_its_index_and_stores_nothing`,
//!   `batch::a_batch_past_the_queue_cap_names_the_first_workflow_that_does_not_fit`).
//! - A completion report is retried while its attempt's lease lasts: a
//!   primary outage shorter than the lease runs no task twice
//!   (`limits::a_completion_report_outlasting_a_primary_outage_lands_and_the_task_runs_once`).
//! - Retention deletes a finished run past `retention.finished_after` with
//!   every row it owns (steps, attempts, edges, signals) and nothing else
//!   (and concurrency slots dead since before the cutoff):
//!   running runs and recently finished ones stay whole, and a purge skips
//!   the runs another transaction holds instead of waiting for them
//!   (`retention::finished_runs_past_the_cutoff_go_with_everything_they_own_and_the_rest_stay`,
//!   `retention::a_purge_skips_runs_others_hold_and_a_stale_epoch_deletes_nothing`).
//! - Work queued by a submit or by a completion wakes idle executors: the
//!   notification is sent after the COMMIT that queued it, never lost to
//!   the move out of the data transaction
//!   (`batches::executors_wake_on_work_committed_by_the_deferred_notifications`,
//!   which fails with the wake-up removed).
//! - Every queue is claimable whether or not it has its per-queue
//!   statements: a missing one is made at the first claim or enqueue
//!   (`batches::a_queue_without_its_own_statements_gets_them_at_its_first_claim`).
//! - A batch's claim and completion cost follows its size, not the history
//!   nor the running runs, whatever the planner's statistics say: rows are
//!   reached by key (`batches::a_completion_batch_costs_what_its_size_does_whatever_the_statistics_say`).
//! - A pool's claim loop always waits for something that comes by itself
//!   while it has work (a slot, a task's end, the poll): buffered tasks
//!   never wait for a notification
//!   (`executor::claim::tests::the_claim_loop_always_waits_for_something_that_comes`).
//! - A fresh database's first submits reach steps by key, never by scanning
//!   `swf.steps` (`engine::submits_on_a_fresh_database_do_not_scan_the_steps_table`).
//! - An executor far from its primary claims and reports many tasks per
//!   round trip (`batches::an_executor_far_from_its_primary_claims_and_reports_many_tasks_per_round_trip`),
//!   and a task it held, buffered or running, when it died runs exactly
//!   once more elsewhere with the dead attempt recorded
//!   (`crashes::a_remote_executor_killed_with_a_full_buffer_runs_each_held_task_exactly_once_more`).
//! - Run controls (cancels, pauses, resumes, signals) of concurrent callers
//!   share transactions, and each caller gets its own answer
//!   (`control::controls_of_concurrent_callers_share_transactions_and_keep_their_own_answers`).
//! - A hybrid node's submit claims only its pool's free slots, in the
//!   submit's transaction, with the same claim as the executor's own
//!   (`batches::a_hybrid_node_starts_what_it_submits_in_the_same_transaction`).
//! - A paused queue starts nothing, on any node, until it is resumed; what
//!   was queued meanwhile then runs (`queues::a_paused_queue_starts_nothing_until_it_is_resumed`).
//! - A delayed step or a run with `run_at` never starts before its ready
//!   time (`delays::delayed_steps_and_runs_start_no_earlier_than_their_ready_time`).
//! - A retried run runs only what did not complete, and its lineage keeps
//!   every earlier attempt
//!   (`retry::a_failed_run_retried_runs_its_failed_step_and_dependents_only`).
//! - A schedule's tick starts exactly one run however many nodes fire it
//!   (`schedules::a_due_tick_starts_exactly_one_run_however_many_nodes_fire_it`).
//! - Within a queue, higher priority is claimed first
//!   (`priorities::high_priority_runs_overtake_low_ones_on_a_resumed_queue`).
//! - A submit names only handlers some executor runs for the step's queue
//!   (`handlers::a_node_accepts_only_handlers_some_executor_advertises_for_the_queue_and_only_they_run_them`),
//!   only nodes that run a handler claim its tasks (the same test),
//!   and a command handler's process group never outlives its attempt
//!   (`handlers::http_and_command_handlers_run_real_work`).
//! - `/openapi.json` documents every `/v1` route, with schemas generated
//!   from the wire types, and a real validator accepts it
//!   (`api::table::tests::every_v1_route_is_in_the_openapi_document_and_nothing_else`,
//!   `openapi::the_openapi_document_is_served_and_passes_a_real_validator`).
//! - A paused run starts no new task until resumed; what it started
//!   finishes (`control::a_paused_run_starts_nothing_new_until_resumed`).
//! - A signal completes the first step waiting for it, is kept for one
//!   that waits later, and a finished run refuses it storing nothing
//!   (`control::signals_complete_waiting_steps_early_late_or_time_out`).
//! - No more than a key's limit of its tasks run at once across nodes
//!   (`keys::a_key_limits_running_tasks_across_nodes`), a slot held by
//!   a dead executor frees with its lease
//!   (`keys::a_slot_held_by_a_dead_executor_frees_with_its_lease`), and a
//!   claim reuses only the slots of attempts it names as ended, each once
//!   (`keys::a_claim_reuses_the_slots_of_attempts_it_names_as_ended`).
//! - A map step's output is its items' outputs in order, one task each
//!   (`maps::a_map_runs_one_task_per_item_and_keeps_their_order`).
//! - No acknowledged write is lost when a process dies by SIGKILL, and
//!   what it left behind finishes: a client node mid-submit, an executor
//!   with tasks in flight (each runs exactly once more), the primary's
//!   PostgreSQL (crash recovery); a replica's death serves no stale read
//!   (`crashes::a_client_node_killed_mid_submit_loses_no_acknowledged_run`,
//!   `crashes::an_executor_killed_with_tasks_in_flight_runs_each_exactly_once_more`,
//!   `crashes::the_primary_killed_and_restarted_loses_no_acknowledged_run`,
//!   `crashes::a_replica_killed_and_restarted_while_reads_flow_serves_no_stale_read`).
//! - A buffered task waiting for a slot is renewed, never left to sit out
//!   its lease (`batches::a_pool_of_slow_handlers_starts_every_buffered_task_without_abandoning_any`).
//! - The dashboard loads only files embedded in the binary and writes what
//!   the API returns as text, never markup
//!   (`api::routes::ui::tests::every_file_of_ui_is_embedded_and_the_page_loads_only_embedded_files`,
//!   `ui::the_dashboard_shows_regions_runs_dags_queues_schedules_and_drills`).

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

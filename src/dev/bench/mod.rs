//! `swf bench`: end-to-end load benchmarks over the HTTP API.
//!
//! Against `--api URL`, or, without it, an embedded single-region cluster it
//! starts under a temporary directory (PostgreSQL, and the nodes in this
//! process, as `swf dev` would run them). The default phases
//! ([`phases`]):
//! 1. submit-to-start latency at light load (one submitter): the database's
//!    `created_at` of the run to `started_at` of its first attempt;
//! 2. throughput: N workflows of each shape (1 step; 5-step chain; 5-step
//!    fan-out) submitted by C concurrent submitters; tasks/s from the first
//!    submit to the last completion;
//! 3. read latency: status and lineage reads of completed runs, by
//!    `swf-read-source`.
//!
//! The latency phase runs first, on a quiet cluster. `--burn-down N`
//! ([`burn`]) instead times one executor-only node draining N pre-submitted
//! 1-step workflows; `--soak SECS` ([`soak`]) runs a steady mixed load and
//! checks every run's end; `--remote-region` ([`remote`]) compares a region
//! far from the primary with the primary's own, executing and submitting. Embedded, the JSON also carries the peak RSS of this
//! process, which the node runs in ([`rss`]). Prints JSON (`--json`) or a
//! table.
//!
//! Files: `args.rs` the flags; `run.rs` the dispatch and printing;
//! `phases.rs` the default phases and region reads; `burn.rs` the
//! burn-down; `remote.rs` the remote-region mode; `soak.rs` the soak; `embedded.rs` the embedded cluster; `report.rs` shared
//! helpers (client, shapes, percentiles); `/proc` readings are `telemetry::rss`.

mod args;
mod burn;
mod embedded;
mod phases;
mod remote;
mod report;
mod run;
mod soak;

pub use args::BenchArgs;
pub use run::run;

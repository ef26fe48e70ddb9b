//! The executor role: worker pools that claim tasks from pgmq queues on the
//! primary, run their handlers and report the outcome.
//!
//! Each pool has `size` slots (a semaphore) bounding its running handlers,
//! and one claim loop that claims ahead into a prefetch buffer: the free
//! slots plus what the pool starts in a moment at its measured pace (up to
//! `claim_batch`) in one round trip, sent while buffered tasks start. Idle loops sleep until a NOTIFY on their queue's channel (one shared
//! LISTEN connection per node) or the poll interval. Completions and
//! failures from all pools go through one micro-batcher. A task whose step
//! timeout exceeds the lease has its visibility extended while it runs.
//!
//! Supervision: every task the executor starts belongs to a `JoinSet`. The
//! listener, the claim loops and the finisher join the node's; each claim
//! loop owns a `JoinSet` of its pool's running tasks (aborted with it).
//!
//! Shutdown: stop claiming; each claim loop lets its in-flight tasks finish
//! until the grace deadline (waiting on their completion, not polling), then
//! releases the rest to the queue and lets outcomes already being reported
//! land. `kill` (tests) drops everything without telling the database, like
//! a crashed process.
//!
//! Files: `core.rs` the [`Executor`] (start, status, drain, kill);
//! `settings.rs` its configuration and status types; `pool.rs` a pool's
//! slots, counters and in-flight tasks; `claim.rs` the LISTEN wakeups, the
//! claim loop and a pool's drain; `prefetch.rs` the prefetch buffer;
//! `handoff.rs` tasks a hybrid node's submits claim for its pools;
//! `task.rs` running one task; `lease.rs` lease extension; `finish.rs`
//! completion batching.

mod claim;
mod core;
mod finish;
pub mod handlers;
mod handoff;
mod lease;
mod pool;
mod prefetch;
mod settings;
mod task;

pub use self::core::Executor;
pub use self::settings::{ExecutorSettings, PoolSpec, PoolStatus};

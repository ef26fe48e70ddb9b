//! The only module that issues SQL.
//!
//! A [`Store`] wraps one database (a primary or a replica) with a sqlx pool.
//! Each method is one named operation and, for engine transitions, one round
//! trip: the transitions themselves are PL/pgSQL functions in `migrations/`,
//! whose latest header documents the state machine of runs, steps, attempts
//! and pgmq messages. Database errors are translated into [`StoreError`]
//! here, once: read-only (a replica or a fenced primary), stale epoch,
//! unavailable, conflict, too large, invalid data, not found; and
//! [`ErrorClass`] says what a caller does about each. Every write carries
//! the node's epoch, asserted in SQL, so a database of an older epoch (a
//! stale old primary) refuses it.
//!
//! By concern:
//! - `conn`: the [`Store`], connecting, errors, migrations and schema version.
//! - `engine`: run and task transitions (submit, claim, finish, extend,
//!   release, cancel).
//! - `isolation`: the claim's isolation path (peek, claim one message,
//!   reject one), used only when a set-based claim raises.
//! - `reads`: run documents, the run list, drill checks.
//! - `cluster`: recovery state, epochs, fencing, promotion, replication lag.
//! - `journal`: the drill journal.
//! - `nodes`: heartbeats.
//! - `keys`: the cluster's token key (signing consistency tokens).
//! - `queues`: pgmq queues, their depths, NOTIFY channels.
//! - `retention`: deleting finished runs in bounded batches.
//! - `admin` (feature `dev`): creating databases, reloading configuration.

#[cfg(feature = "dev")]
mod admin;
mod cluster;
mod conn;
mod engine;
mod isolation;
mod journal;
mod keys;
mod nodes;
mod queues;
mod reads;
mod retention;
mod schedules;

pub use cluster::{DbState, WriteProbe};
pub use conn::{ErrorClass, Result, SchemaCompat, Store, StoreError, MIGRATOR};
pub use engine::{
    plain_mq, strip_nul, AttemptRef, ClaimedTask, Claimer, EagerClaim, Finish, FinishResult,
    Leases, NewRun, RunControl, Submitted,
};
pub use isolation::Rejected;
pub use journal::DrillRow;
pub use nodes::NodeRow;
pub use queues::{notify_channel, QueueRow};
pub use reads::{RunDoc, RunSummary};
pub use schedules::ScheduleRow;

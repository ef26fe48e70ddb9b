//! Region-aware routing of reads and writes (DESIGN section 7).
//!
//! Writes go to the primary, found among the regions' databases (not in
//! recovery, highest epoch). Reads go, in order, to: a cache entry at least
//! as new as the request's token; the local database if it is the primary;
//! the local replica if it has replayed past the token and its lag is under
//! the bound; the replica after a bounded wait for the token; the primary.
//!
//! One tracker task per node polls the local database's replay position and
//! samples the primary's WAL position, each query with a deadline, and
//! publishes them on a watch channel. Token waits subscribe to that channel:
//! no per-request polling, and the router never blocks on a replica without
//! a deadline (a replica that stops answering turns unhealthy and reads go
//! to the primary).
//!
//! Files: `plan.rs` the read decision ([`plan_read`], a pure function tested
//! as a table); `core.rs` the [`Router`] and its write path; `discovery.rs`
//! primary discovery and epochs; `tracker.rs` the LSN tracker and primary
//! sampler; `cache.rs` the lineage cache. This file only declares and
//! re-exports.

pub mod cache;
mod core;
mod discovery;
mod plan;
mod tracker;

pub use self::core::{RegionDb, Router};
pub use self::plan::{plan_read, LocalState, ReadPlan, ReadSource};
pub use self::tracker::TRACK_TIMEOUT;

//! Region-aware routing of reads and writes.
//!
//! Writes go to the primary of the current write region; reads go to the
//! cheapest source that is guaranteed to reflect the caller's consistency
//! token. The router also remembers the highest epoch this node has seen,
//! which every write carries so a stale primary refuses it.
//!
//! In a single-region deployment the local database is the primary, so every
//! read is served by it (`swf-read-source: primary`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::Store;
use crate::token::Token;

/// Where a read was served from (the `swf-read-source` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSource {
    Cache,
    Replica,
    Primary,
}

impl ReadSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadSource::Cache => "cache",
            ReadSource::Replica => "replica",
            ReadSource::Primary => "primary",
        }
    }
}

/// Routes one node's database traffic.
pub struct Router {
    primary: Store,
    epoch: AtomicU64,
    region: String,
    write_region: String,
}

impl Router {
    pub fn new(primary: Store, region: &str, write_region: &str) -> Router {
        Router {
            primary,
            epoch: AtomicU64::new(1),
            region: region.to_string(),
            write_region: write_region.to_string(),
        }
    }

    /// The store writes go to.
    pub fn write_store(&self) -> &Store {
        &self.primary
    }

    /// The store a read with `token` goes to, and what that source is.
    pub fn read_store(&self, token: Option<&Token>) -> (&Store, ReadSource) {
        if let Some(t) = token {
            self.observe_epoch(t.epoch);
        }
        (&self.primary, ReadSource::Primary)
    }

    /// Highest epoch seen; writes carry it.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Records an epoch seen in a token or a database.
    pub fn observe_epoch(&self, epoch: u64) {
        self.epoch.fetch_max(epoch, Ordering::AcqRel);
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn write_region(&self) -> &str {
        &self.write_region
    }
}

//! The read decision: where one read goes, given the request's token, a
//! fresh cache entry and what the tracker knows about the local database.
//! [`plan_read`] is a pure function, tested as a table.

use crate::model::token::{Lsn, Token};
use crate::router::cache::CachedDoc;

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

/// What the tracker knows about the local database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalState {
    /// The tracker has heard from the local database recently.
    pub healthy: bool,
    pub is_primary: bool,
    pub epoch: u64,
    /// Replay position (replica) or WAL write position (primary).
    pub lsn: Lsn,
    /// How far behind the primary the replica is, in time (0 on the primary).
    pub lag_ms: u64,
}

/// Where one read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPlan {
    Cache,
    /// The local database (primary or replica, as the source says).
    Local(ReadSource),
    /// Wait (bounded) for the local replica to replay the token, then read it.
    WaitForReplica,
    Primary,
}

/// Decides where a read goes. `cached` is an entry already known to be fresh.
pub fn plan_read(
    token: Option<&Token>,
    cached: Option<&CachedDoc>,
    local: &LocalState,
    max_lag_ms: u64,
) -> ReadPlan {
    if cached.is_some_and(|c| c.satisfies(token)) {
        return ReadPlan::Cache;
    }
    if !local.healthy {
        return ReadPlan::Primary;
    }
    if local.is_primary {
        return match token {
            // A token from another epoch was written on another timeline; the
            // local primary is only trusted if it is at least that new.
            Some(t) if t.epoch > local.epoch => ReadPlan::Primary,
            _ => ReadPlan::Local(ReadSource::Primary),
        };
    }
    if local.lag_ms > max_lag_ms {
        return ReadPlan::Primary;
    }
    match token {
        None => ReadPlan::Local(ReadSource::Replica),
        Some(t) if t.satisfied_by(local.epoch, local.lsn) => ReadPlan::Local(ReadSource::Replica),
        // Replay can still reach a token of the replica's own epoch; one of
        // another epoch never compares by LSN: go to the primary.
        Some(t) if t.same_timeline(local.epoch) => ReadPlan::WaitForReplica,
        Some(_) => ReadPlan::Primary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use std::time::Instant;

    fn doc(epoch: u64, lsn: u64) -> CachedDoc {
        CachedDoc {
            doc: Arc::new(json!({})),
            epoch,
            lsn: Lsn(lsn),
            terminal: true,
            bytes: 2,
            stored_at: Instant::now(),
        }
    }

    #[test]
    fn read_plan_table() {
        let tok = |e, l| {
            Some(Token {
                epoch: e,
                lsn: Lsn(l),
            })
        };
        let replica = |lsn, lag| LocalState {
            healthy: true,
            is_primary: false,
            epoch: 1,
            lsn: Lsn(lsn),
            lag_ms: lag,
        };
        let primary = LocalState {
            healthy: true,
            is_primary: true,
            epoch: 1,
            lsn: Lsn(500),
            lag_ms: 0,
        };
        let down = LocalState::default();
        use ReadPlan::*;
        use ReadSource::{Primary as P, Replica as R};
        // (case, token, cache entry, local, expected) with max lag 1000 ms
        type Case = (
            &'static str,
            Option<Token>,
            Option<CachedDoc>,
            LocalState,
            ReadPlan,
        );
        let cases: Vec<Case> = vec![
            (
                "cache without token",
                None,
                Some(doc(1, 10)),
                replica(0, 0),
                Cache,
            ),
            (
                "cache as new as token",
                tok(1, 10),
                Some(doc(1, 10)),
                replica(0, 0),
                Cache,
            ),
            (
                "cache older than token",
                tok(1, 11),
                Some(doc(1, 10)),
                replica(100, 0),
                Local(R),
            ),
            (
                "cache of older epoch",
                tok(2, 1),
                Some(doc(1, 10)),
                primary,
                Primary,
            ),
            ("local primary", None, None, primary, Local(P)),
            ("local primary, token", tok(1, 900), None, primary, Local(P)),
            (
                "local primary, newer-epoch token",
                tok(2, 1),
                None,
                primary,
                Primary,
            ),
            ("replica, no token", None, None, replica(100, 10), Local(R)),
            (
                "replica lagging, no token",
                None,
                None,
                replica(100, 5000),
                Primary,
            ),
            (
                "replica replayed token",
                tok(1, 100),
                None,
                replica(100, 0),
                Local(R),
            ),
            (
                "replica behind token",
                tok(1, 101),
                None,
                replica(100, 0),
                WaitForReplica,
            ),
            (
                "replica behind token, lagging",
                tok(1, 101),
                None,
                replica(100, 5000),
                Primary,
            ),
            (
                "replica replayed, lagging",
                tok(1, 50),
                None,
                replica(100, 5000),
                Primary,
            ),
            (
                "token of another epoch",
                tok(2, 1),
                None,
                replica(100, 0),
                Primary,
            ),
            (
                "token of an older epoch",
                tok(1, 1),
                None,
                LocalState {
                    epoch: 2,
                    ..replica(100, 0)
                },
                Primary,
            ),
            ("local database down", None, None, down, Primary),
            ("local down, cache hit", None, Some(doc(1, 1)), down, Cache),
        ];
        for (name, token, cached, local, want) in cases {
            assert_eq!(
                plan_read(token.as_ref(), cached.as_ref(), &local, 1000),
                want,
                "{name}"
            );
        }
    }
}

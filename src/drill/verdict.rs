//! The drill's verdict: from the load's attempts, the runs found on the new
//! primary and what the phases observed, the report with its checks (lost,
//! stale, duplicate writes, detection and recovery times) and whether the
//! drill passed. One pure function, tested as a table of cases.

use std::collections::{BTreeMap, HashSet};

use super::load::{self, Attempted, Outcome};
use crate::api::wire::{
    DrillKind, DrillReport, DrillRequest, OldPrimary, PartitionReport, Phase, SlowWrite,
};

/// What the drill observed besides the load's attempts.
pub(super) struct Observed {
    pub from: String,
    pub to: String,
    pub epoch_before: u64,
    pub epoch_after: u64,
    /// What a write at the new epoch met on the old primary.
    pub old_primary: OldPrimary,
    pub nodes_rerouted: usize,
    pub nodes_total: usize,
    /// How long the load had been running when the fault came (no load: None).
    pub fault_offset_ms: Option<u64>,
    /// From the fault to the router's first failed write, if it saw one.
    pub noticed_ms: Option<u64>,
    /// From the fault to every node re-routed.
    pub rerouted_ms: u64,
    pub phases: Vec<Phase>,
    /// A partition drill's measures; `writes_refused` and
    /// `stale_token_reads` are filled in from the attempts.
    pub partition: Option<PartitionReport>,
}

/// The report of a drill. It passes when every node was re-routed, the old
/// primary is fenced, no run is stored twice, no read missed a write that
/// exists, the load recovered, and (a switchover) no acknowledged write was
/// lost. A failover may lose writes: it names them. A partition moves no
/// primary (nothing is fenced) and may lose nothing; its nodes must all
/// agree on the primary again after healing.
pub(super) fn verdict(
    req: &DrillRequest,
    attempts: &[Attempted],
    present: &HashSet<String>,
    duplicates: u64,
    seen: Observed,
) -> DrillReport {
    let (_, lost) = load::classify(attempts, present);
    let summary = load::summarize(attempts);
    let stale_reads = stale_reads(attempts, present);
    let load_noticed = summary
        .first_failure_ms
        .zip(seen.fault_offset_ms)
        .map(|(f, off)| f.saturating_sub(off));
    let detection_ms = match (seen.noticed_ms, load_noticed) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(0),
    };
    // Nodes retry writes while the primary moves, so the load may see no
    // failure at all: a write that waited for the new primary is the
    // unavailability it saw. RTO is the longer of the two.
    let slowest_writes = slowest_writes(attempts);
    let slowest_write = slowest_writes.first().map_or(0, |w| w.ms);
    let rto_ms = if attempts.is_empty() {
        seen.rerouted_ms
    } else {
        summary.rto_ms.max(slowest_write)
    };
    let moved = req.kind != DrillKind::Partition;
    let partition = seen.partition.map(|p| PartitionReport {
        writes_refused: summary.failed,
        stale_token_reads: stale_reads,
        ..p
    });
    let ok = seen.nodes_rerouted == seen.nodes_total
        && (!moved || seen.old_primary.is_fenced())
        && duplicates == 0
        && stale_reads == 0
        && (req.kind == DrillKind::Failover || lost.is_empty())
        && (attempts.is_empty() || summary.recovered);
    DrillReport {
        kind: req.kind,
        from_region: seen.from,
        to_region: seen.to,
        epoch_before: seen.epoch_before,
        epoch_after: seen.epoch_after,
        detection_ms,
        rto_ms,
        acknowledged_writes: summary.acknowledged,
        lost_writes: lost.len() as u64,
        lost_run_ids: lost,
        indeterminate_writes: summary.indeterminate,
        failed_writes: summary.failed,
        duplicate_writes: duplicates,
        stale_reads,
        failures: failures(attempts),
        slowest_writes,
        old_primary_fenced: seen.old_primary.is_fenced(),
        old_primary: seen.old_primary,
        nodes_rerouted: seen.nodes_rerouted,
        nodes_total: seen.nodes_total,
        phases: seen.phases,
        partition,
        manager: None,
        ok,
    }
}

/// Reads that missed a write that exists. A read that misses a lost write is
/// the loss, counted there.
fn stale_reads(attempts: &[Attempted], present: &HashSet<String>) -> u64 {
    attempts
        .iter()
        .filter(|a| a.stale_read == Some(true))
        .filter(|a| match &a.outcome {
            Outcome::Acked { run_id, .. } => present.contains(run_id),
            _ => false,
        })
        .count() as u64
}

/// Failed writes by HTTP status and error code.
fn failures(attempts: &[Attempted]) -> BTreeMap<String, u64> {
    let mut failures = BTreeMap::new();
    for a in attempts {
        if let Outcome::Failed { status, code } = &a.outcome {
            *failures.entry(format!("{status} {code}")).or_default() += 1;
        }
    }
    failures
}

/// The three slowest acknowledged writes, slowest first.
fn slowest_writes(attempts: &[Attempted]) -> Vec<SlowWrite> {
    let mut by_latency: Vec<&Attempted> = attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Acked { .. }))
        .collect();
    by_latency.sort_by_key(|a| std::cmp::Reverse(a.done_at_ms.saturating_sub(a.sent_at_ms)));
    by_latency
        .iter()
        .take(3)
        .map(|a| SlowWrite {
            target: a.target.clone(),
            sent_at_ms: a.sent_at_ms,
            ms: a.done_at_ms.saturating_sub(a.sent_at_ms),
            retries: a.retries,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00000000-0000-0000-0000-00000000000a";
    const B: &str = "00000000-0000-0000-0000-00000000000b";

    fn attempt(n: u64, sent: u64, done: u64, outcome: Outcome) -> Attempted {
        Attempted {
            n,
            target: format!("http://node{}", n % 2),
            idempotency_key: format!("k{n}"),
            sent_at_ms: sent,
            done_at_ms: done,
            outcome,
            stale_read: None,
            retries: 0,
        }
    }

    fn acked(n: u64, run: &str, sent: u64, done: u64) -> Attempted {
        let run_id = run.to_string();
        attempt(
            n,
            sent,
            done,
            Outcome::Acked {
                run_id,
                token: "t".into(),
            },
        )
    }

    fn refused(n: u64, sent: u64, done: u64) -> Attempted {
        let code = "unavailable".to_string();
        attempt(n, sent, done, Outcome::Failed { status: 503, code })
    }

    fn retried(mut a: Attempted, retries: u32) -> Attempted {
        a.retries = retries;
        a
    }

    fn stale(mut a: Attempted) -> Attempted {
        a.stale_read = Some(true);
        a
    }

    /// One drill's observations and the verdict expected of them.
    struct Case {
        name: &'static str,
        kind: DrillKind,
        attempts: Vec<Attempted>,
        present: &'static [&'static str],
        duplicates: u64,
        old_primary: OldPrimary,
        rerouted: (usize, usize),
        fault_offset_ms: Option<u64>,
        noticed_ms: Option<u64>,
        // Expected:
        ok: bool,
        lost: &'static [&'static str],
        stale_reads: u64,
        rto_ms: u64,
        detection_ms: u64,
    }

    /// A clean switchover without load: re-routed 120 ms after the fault,
    /// noticed by the router after 40 ms.
    fn clean(name: &'static str) -> Case {
        Case {
            name,
            kind: DrillKind::Switchover,
            attempts: Vec::new(),
            present: &[],
            duplicates: 0,
            old_primary: OldPrimary::Fenced,
            rerouted: (3, 3),
            fault_offset_ms: None,
            noticed_ms: Some(40),
            ok: true,
            lost: &[],
            stale_reads: 0,
            rto_ms: 120,
            detection_ms: 40,
        }
    }

    /// Two acknowledged writes of A and B (10 ms each), fault at 900 ms.
    fn under_load(name: &'static str, kind: DrillKind, present: &'static [&'static str]) -> Case {
        Case {
            kind,
            attempts: vec![acked(0, A, 0, 10), acked(1, B, 950, 960)],
            present,
            fault_offset_ms: Some(900),
            rto_ms: 10,
            ..clean(name)
        }
    }

    fn cases() -> Vec<Case> {
        vec![
            clean("a switchover without load passes; RTO is the time to re-route"),
            Case {
                // Failures at 1000 (refused) and 1050 (acked at 1600 after
                // retries): unavailable 1000..1600; the load noticed 100 ms
                // after the fault, before the router (300 ms).
                attempts: vec![
                    acked(0, A, 0, 10),
                    refused(1, 1000, 1100),
                    retried(acked(2, B, 1050, 1600), 2),
                ],
                present: &[A, B],
                fault_offset_ms: Some(900),
                noticed_ms: Some(300),
                rto_ms: 600,
                detection_ms: 100,
                ..clean("a switchover under load that recovers loses nothing")
            },
            Case {
                // The slowest write (retried for 2 s) is longer than any gap.
                attempts: vec![retried(acked(0, A, 100, 2100), 3)],
                present: &[A],
                fault_offset_ms: Some(0),
                noticed_ms: None,
                rto_ms: 2000,
                detection_ms: 100,
                ..clean("a write that waited for the new primary is the RTO")
            },
            Case {
                ok: false,
                lost: &[B],
                ..under_load(
                    "a switchover that loses an acknowledged write fails",
                    DrillKind::Switchover,
                    &[A],
                )
            },
            Case {
                lost: &[B],
                ..under_load(
                    "a failover may lose writes, and names them",
                    DrillKind::Failover,
                    &[A],
                )
            },
            Case {
                attempts: vec![stale(acked(0, A, 0, 10))],
                present: &[A],
                ok: false,
                stale_reads: 1,
                rto_ms: 10,
                ..clean("a read that missed an existing write fails")
            },
            Case {
                kind: DrillKind::Failover,
                attempts: vec![stale(acked(0, A, 0, 10))],
                lost: &[A],
                rto_ms: 10,
                ..clean("a read that missed a lost write is the loss, not a stale read")
            },
            Case {
                duplicates: 1,
                ok: false,
                ..clean("a run stored twice fails")
            },
            Case {
                old_primary: OldPrimary::Writable,
                ok: false,
                ..clean("an old primary that still takes writes fails")
            },
            Case {
                old_primary: OldPrimary::Unreachable,
                ok: false,
                ..clean("an old primary that does not answer is not known to be fenced")
            },
            Case {
                old_primary: OldPrimary::Replica,
                ..clean("an old primary that rejoined as a replica is fenced")
            },
            Case {
                old_primary: OldPrimary::StaleEpoch,
                ..clean("an old primary of an older epoch is fenced")
            },
            Case {
                rerouted: (2, 3),
                ok: false,
                ..clean("a node left on the old primary fails")
            },
            Case {
                // Nothing is fenced in a partition: the primary never moved.
                old_primary: OldPrimary::Unreachable,
                ..under_load(
                    "a partition that loses nothing passes",
                    DrillKind::Partition,
                    &[A, B],
                )
            },
            Case {
                old_primary: OldPrimary::Unreachable,
                ok: false,
                lost: &[B],
                ..under_load(
                    "a partition that loses an acknowledged write fails",
                    DrillKind::Partition,
                    &[A],
                )
            },
            Case {
                attempts: vec![stale(acked(0, A, 0, 10))],
                present: &[A],
                old_primary: OldPrimary::Unreachable,
                ok: false,
                stale_reads: 1,
                rto_ms: 10,
                kind: DrillKind::Partition,
                ..clean("a partition that serves a stale token read fails")
            },
            Case {
                old_primary: OldPrimary::Unreachable,
                rerouted: (1, 2),
                ok: false,
                kind: DrillKind::Partition,
                ..clean("a partition after which a node disagrees on the primary fails")
            },
            Case {
                // No acknowledged write after the failure at 1000: the
                // outage lasts until the load's last answer (1500).
                attempts: vec![acked(0, A, 0, 10), refused(1, 1000, 1500)],
                present: &[A],
                fault_offset_ms: Some(900),
                noticed_ms: None,
                ok: false,
                rto_ms: 500,
                detection_ms: 100,
                ..clean("a load that never recovers fails")
            },
        ]
    }

    #[test]
    fn verdicts() {
        for c in cases() {
            let req = DrillRequest {
                kind: c.kind,
                to: "eu".into(),
                region: None,
                secs: None,
                load: 0.0,
                max_lag_ms: 5_000,
            };
            let partition = (c.kind == DrillKind::Partition).then(|| PartitionReport {
                region: "eu".into(),
                secs: 5,
                links_cut: 6,
                writes_refused: 0,
                stale_token_reads: 0,
                converge_ms: 700,
            });
            let present = c.present.iter().map(|s| s.to_string()).collect();
            let seen = Observed {
                from: "us".into(),
                to: "eu".into(),
                epoch_before: 4,
                epoch_after: 5,
                old_primary: c.old_primary,
                nodes_rerouted: c.rerouted.0,
                nodes_total: c.rerouted.1,
                fault_offset_ms: c.fault_offset_ms,
                noticed_ms: c.noticed_ms,
                rerouted_ms: 120,
                phases: vec![Phase {
                    name: "preflight".into(),
                    ms: 3,
                }],
                partition,
            };
            let r = verdict(&req, &c.attempts, &present, c.duplicates, seen);
            let name = c.name;
            assert_eq!(r.ok, c.ok, "{name}");
            assert_eq!(r.lost_run_ids, c.lost, "{name}");
            assert_eq!(r.lost_writes, c.lost.len() as u64, "{name}");
            assert_eq!(r.stale_reads, c.stale_reads, "{name}");
            assert_eq!(r.rto_ms, c.rto_ms, "{name}");
            assert_eq!(r.detection_ms, c.detection_ms, "{name}");
            assert_eq!(r.duplicate_writes, c.duplicates, "{name}");
            assert_eq!((r.nodes_rerouted, r.nodes_total), c.rerouted, "{name}");
            assert_eq!((r.epoch_before, r.epoch_after), (4, 5), "{name}");
            assert_eq!(r.phases.len(), 1, "{name}");
            assert_eq!(r.old_primary, c.old_primary, "{name}");
            assert_eq!(r.old_primary_fenced, c.old_primary.is_fenced(), "{name}");
            if let Some(p) = &r.partition {
                assert_eq!(p.stale_token_reads, c.stale_reads, "{name}");
                assert_eq!(p.writes_refused, r.failed_writes, "{name}");
            }
            assert_eq!(
                r.partition.is_some(),
                c.kind == DrillKind::Partition,
                "{name}"
            );
        }
    }

    #[test]
    fn failures_and_slowest_writes_are_reported() {
        let attempts = vec![
            acked(0, A, 0, 10),
            refused(1, 20, 30),
            refused(2, 40, 50),
            retried(acked(3, B, 60, 400), 1),
            acked(4, A, 500, 520),
            acked(5, B, 600, 605),
        ];
        assert_eq!(
            failures(&attempts),
            BTreeMap::from([("503 unavailable".to_string(), 2)])
        );
        let slow: Vec<(u64, u64, u32)> = slowest_writes(&attempts)
            .iter()
            .map(|w| (w.sent_at_ms, w.ms, w.retries))
            .collect();
        assert_eq!(slow, [(60, 340, 1), (500, 20, 0), (0, 10, 0)]);
    }
}

//! A pool's prefetch buffer: tasks claimed ahead of free slots, so a pool
//! whose handlers are quick never waits for a claim round trip, and claims
//! come in large batches.
//!
//! How far ahead it claims follows the pool's own pace and its distance to
//! the primary: the buffer aims at the tasks the pool starts in a quarter
//! of the visibility margin or in two claim round trips, whichever is
//! longer (both measured; at least `executor.prefetch_min`), capped by
//! [`CLAIMS_IN_FLIGHT`] claims of `executor.claim_batch` (as many may be
//! on their way at once). So a pool far from the primary always has a
//! round trip's worth of work queued locally while its next claim travels.
//! A pool of slow handlers starts few tasks per second, so it claims about
//! only what its free slots take, as before; a pool of quick ones claims
//! hundreds per statement. Claims start slowly, as TCP does: a claim that
//! comes back full to a pool waiting for it doubles the target
//! ([`Prefetch::claimed`]), so a distant pool reaches full batches in a few
//! round trips rather than the seconds its measured pace would take.
//!
//! A buffered task's visibility timeout runs from its claim. One that has
//! waited a quarter of the margin (the horizon) is renewed: the claim loop
//! extends the visibility of every such task in one round trip
//! ([`Prefetch::aging`], [`Prefetch::renewed`]) and their clock starts
//! again, so tasks of slow handlers, which wait for slots that free in
//! waves, start rather than sit out their lease. A task that waited more
//! than half the margin unrenewed (the renewal failed or came late) is not
//! started (its handler could outlive its visibility): it is dropped, and
//! the engine re-delivers it once the visibility ends, recording this
//! attempt abandoned. A renewal that finds an attempt no longer current
//! (cancelled meanwhile) drops it from the buffer.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::store::{AttemptRef, ClaimedTask};

/// Claims of one pool on their way at once: another one goes out whenever
/// the buffer, counting what those on their way will bring, is half empty
/// again or has room for a whole batch. One claim of `executor.claim_batch` tasks per round trip would
/// otherwise cap a pool far from the primary at a batch per round trip.
pub(super) const CLAIMS_IN_FLIGHT: usize = 6;

/// How often the start rate is sampled.
const RATE_WINDOW: Duration = Duration::from_millis(250);

/// A buffered task.
struct Held {
    task: ClaimedTask,
    /// When its claim (or its last renewal) was sent: its visibility runs from here.
    sent: Instant,
    /// When that claim or renewal came back: its wait runs from here.
    arrived: Instant,
    /// A renewal of it is on its way.
    renewing: bool,
}

pub(super) struct Prefetch {
    tasks: VecDeque<Held>,
    /// Most tasks one claim asks for (`executor.claim_batch`).
    max_batch: usize,
    /// The target's floor (`executor.prefetch_min`).
    min: usize,
    /// How long tasks should wait here at most (a quarter of the margin);
    /// longer than twice that, they are dropped.
    horizon: Duration,
    /// Tasks started per second (smoothed) and the current sample.
    rate: f64,
    window_start: Instant,
    window_starts: u64,
    /// The target's floor while claims come back to a pool waiting for
    /// them (a slow start: see [`Prefetch::claimed`]).
    boost: usize,
    /// A claim's round trip (smoothed).
    rtt: Duration,
}

/// A task taken from the buffer to start.
pub(super) struct Start {
    pub(super) task: ClaimedTask,
    /// When its claim (or last renewal) was sent: its lease runs from here.
    pub(super) sent: Instant,
    /// How long it waited in the buffer.
    pub(super) waited: Duration,
}

impl Prefetch {
    pub(super) fn new(max_batch: usize, min: usize, margin: Duration) -> Prefetch {
        Prefetch {
            tasks: VecDeque::new(),
            max_batch: max_batch.max(1),
            min,
            horizon: margin / 4,
            rate: 0.0,
            window_start: Instant::now(),
            window_starts: 0,
            boost: 0,
            rtt: Duration::ZERO,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Buffered tasks that hold a concurrency key's slot.
    pub(super) fn keyed(&self) -> usize {
        self.tasks
            .iter()
            .filter(|h| h.task.concurrency_key.is_some())
            .count()
    }

    /// How many tasks beyond the free slots the buffer aims to hold.
    pub(super) fn target(&self) -> usize {
        let ahead = self.horizon.max(self.rtt * 2);
        ((self.rate * ahead.as_secs_f64()) as usize)
            .max(self.min)
            .max(self.boost)
            .min(self.max_batch * CLAIMS_IN_FLIGHT)
    }

    /// How many tasks to claim now with `free` slots and `asked` tasks
    /// asked for by claims on their way: nothing while the buffer with them
    /// is more than half full and a whole batch would overfill it;
    /// otherwise enough to fill the free slots and the buffer's target, up
    /// to one batch. (A target of several batches keeps all but the last
    /// on their way: half a target would leave a pool far from the primary
    /// with two claims per round trip.)
    pub(super) fn want(&self, free: usize, asked: usize) -> usize {
        let target = self.target();
        let have = self.tasks.len() + asked;
        if have > 0 && have * 2 > target && have + self.max_batch > target {
            return 0;
        }
        (free + target).saturating_sub(have).min(self.max_batch)
    }

    /// Buffers tasks of a claim sent at `sent`, arrived `now`.
    pub(super) fn push(&mut self, tasks: Vec<ClaimedTask>, sent: Instant, now: Instant) {
        let rtt = now.saturating_duration_since(sent);
        self.rtt = if self.rtt.is_zero() {
            rtt
        } else {
            (self.rtt * 3 + rtt) / 4
        };
        self.tasks.extend(tasks.into_iter().map(|task| Held {
            task,
            sent,
            arrived: now,
            renewing: false,
        }));
    }

    /// When the next buffered task not being renewed reaches the horizon
    /// (None: no such task).
    pub(super) fn next_aging_at(&self) -> Option<Instant> {
        self.tasks
            .iter()
            .filter(|h| !h.renewing)
            .map(|h| h.arrived + self.horizon)
            .min()
    }

    /// The tasks that waited the horizon or more and are not being renewed,
    /// now marked as being renewed: the claim loop extends them.
    pub(super) fn aging(&mut self, now: Instant) -> Vec<AttemptRef> {
        let horizon = self.horizon;
        self.tasks
            .iter_mut()
            .filter(|h| !h.renewing && now.saturating_duration_since(h.arrived) >= horizon)
            .map(|h| {
                h.renewing = true;
                h.task.attempt_ref()
            })
            .collect()
    }

    /// The renewal of the tasks [`Prefetch::aging`] marked (one at a time),
    /// sent at `sent`, came back at `now` with the attempts still `current`
    /// (None: it failed). Current ones wait afresh; the others are no longer
    /// this node's to run and leave the buffer (answered).
    pub(super) fn renewed(
        &mut self,
        current: Option<&[AttemptRef]>,
        sent: Instant,
        now: Instant,
    ) -> usize {
        let current: Option<std::collections::HashSet<&AttemptRef>> =
            current.map(|c| c.iter().collect());
        let before = self.tasks.len();
        self.tasks.retain_mut(|h| {
            if !h.renewing {
                return true;
            }
            h.renewing = false;
            match &current {
                None => true,
                Some(c) if c.contains(&h.task.attempt_ref()) => {
                    h.sent = sent;
                    h.arrived = now;
                    true
                }
                Some(_) => false,
            }
        });
        before - self.tasks.len()
    }

    /// The next task to start; tasks that waited too long are handed to
    /// `expired` instead.
    pub(super) fn next(
        &mut self,
        now: Instant,
        mut expired: impl FnMut(ClaimedTask),
    ) -> Option<Start> {
        while let Some(h) = self.tasks.pop_front() {
            // Counted from arrival: a task started as soon as its claim
            // returns is never dropped (as before there was a buffer).
            if now.saturating_duration_since(h.arrived) > self.horizon * 2 {
                expired(h.task);
                continue;
            }
            self.started(now);
            return Some(Start {
                task: h.task,
                sent: h.sent,
                waited: now.saturating_duration_since(h.arrived),
            });
        }
        None
    }

    /// Everything buffered (shutdown: to be released).
    pub(super) fn take_all(&mut self) -> Vec<ClaimedTask> {
        self.tasks.drain(..).map(|h| h.task).collect()
    }

    /// A claim asked for `asked` tasks and got `got`; it came back to a
    /// pool `waiting` for it (nothing buffered, every slot free). Its pace
    /// measured in windows of starts, a pool far from the primary would
    /// take seconds to claim far enough ahead (it starts only what its
    /// claims bring), so claims start slowly, as TCP does: each claim that
    /// comes back full to a waiting pool doubles the target (at least twice
    /// what it brought); one that finds work still buffered or running
    /// halves that floor, and the measured pace takes over.
    pub(super) fn claimed(&mut self, got: usize, asked: usize, waiting: bool) {
        let cap = self.max_batch * CLAIMS_IN_FLIGHT;
        self.boost = if waiting && got == asked {
            (self.boost * 2).max(got * 2).min(cap)
        } else if waiting {
            self.boost
        } else {
            self.boost / 2
        };
    }

    fn started(&mut self, now: Instant) {
        self.window_starts += 1;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= RATE_WINDOW {
            let sample = self.window_starts as f64 / elapsed.as_secs_f64();
            self.rate = 0.5 * self.rate + 0.5 * sample;
            self.window_start = now;
            self.window_starts = 0;
        }
    }

    /// No start for a while: the pace decays, so a pool that went idle
    /// starts again claiming what its slots take.
    pub(super) fn idle(&mut self, now: Instant) {
        if now.saturating_duration_since(self.window_start) >= RATE_WINDOW * 4 {
            self.rate *= 0.5;
            self.window_start = now;
            self.window_starts = 0;
            self.boost = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn task(i: i32) -> ClaimedTask {
        ClaimedTask {
            run_id: Uuid::nil(),
            step_id: format!("s{i}"),
            attempt: 1,
            handler: "noop".into(),
            timeout_ms: 1000,
            input: serde_json::Value::Null,
            concurrency_key: None,
        }
    }

    #[test]
    fn a_slow_pool_claims_only_its_free_slots_and_a_quick_one_claims_ahead() {
        let mut p = Prefetch::new(500, 0, Duration::from_millis(2000));
        assert_eq!(p.want(4, 0), 4, "no pace measured yet: the free slots");
        assert_eq!(p.want(0, 0), 0);
        // A pool starting ~4000 tasks/s aims at 4000 * 0.5 s (under the cap
        // of six batches of 500).
        let t0 = Instant::now();
        for i in 0..4000 {
            p.push(vec![task(i)], t0, t0);
        }
        let mut now = t0;
        for _ in 0..4000 {
            now += Duration::from_micros(250);
            assert!(p.next(now, |_| panic!("none expires")).is_some());
        }
        let target = p.target();
        assert!(
            (1800..=2000).contains(&target),
            "target {target}, rate {}",
            p.rate
        );
        assert_eq!(p.want(10, 0), 500, "one batch at most");
        // Over half the target on its way, but a whole batch still fits
        // in it: another claim (a target of six batches keeps up to six
        // on their way). One that would overfill it waits.
        assert_eq!(p.want(10, 1000), 500);
        assert_eq!(p.want(10, 1600), 0);
        // Over half full, no room for a batch: no claim yet.
        p.push((0..1600).map(task).collect(), now, now);
        assert_eq!(p.want(10, 0), 0);
        // Below half with what is on its way: the rest of the target, one
        // batch at most.
        p.take_all();
        p.push((0..100).map(task).collect(), now, now);
        assert_eq!(p.want(10, 800), 500);
    }

    #[test]
    fn a_task_that_waited_past_half_the_margin_is_not_started() {
        let mut p = Prefetch::new(500, 0, Duration::from_millis(2000));
        let t0 = Instant::now();
        p.push(vec![task(1), task(2)], t0, t0);
        p.push(vec![task(3)], t0, t0 + Duration::from_millis(900));
        let mut dropped = Vec::new();
        let got = p.next(t0 + Duration::from_millis(1001), |t| {
            dropped.push(t.step_id)
        });
        assert_eq!(got.map(|s| s.task.step_id).as_deref(), Some("s3"));
        assert_eq!(dropped, ["s1", "s2"]);
        assert!(p.take_all().is_empty());
    }

    #[test]
    fn tasks_waiting_past_the_horizon_are_renewed_and_start_instead_of_expiring() {
        // Margin 2 s: horizon 500 ms, dropped past 1 s unrenewed.
        let mut p = Prefetch::new(500, 0, Duration::from_millis(2000));
        let t0 = Instant::now();
        p.push(vec![task(1), task(2), task(3)], t0, t0);
        assert_eq!(p.next_aging_at(), Some(t0 + Duration::from_millis(500)));
        assert!(p.aging(t0 + Duration::from_millis(499)).is_empty());
        let at = t0 + Duration::from_millis(600);
        let asked = p.aging(at);
        assert_eq!(asked.len(), 3);
        assert!(p.aging(at).is_empty(), "asked once");
        assert_eq!(p.next_aging_at(), None, "all being renewed");
        // s2 was cancelled meanwhile: the renewal does not return it.
        let current: Vec<AttemptRef> = [&asked[0], &asked[2]].into_iter().cloned().collect();
        let back = at + Duration::from_millis(50);
        assert_eq!(p.renewed(Some(&current), at, back), 1);
        // 1.2 s after the claim, past the drop point of an unrenewed task:
        // both start, with the renewal's send time as their lease's start.
        let later = t0 + Duration::from_millis(1200);
        let got = p.next(later, |t| panic!("{} expired", t.step_id)).unwrap();
        assert_eq!((got.task.step_id.as_str(), got.sent), ("s1", at));
        assert_eq!(
            got.waited,
            later - back,
            "waited since the renewal came back"
        );
        let got = p.next(later, |t| panic!("{} expired", t.step_id)).unwrap();
        assert_eq!(got.task.step_id, "s3");
        // A failed renewal leaves the task as it was: it may be asked again.
        p.push(vec![task(4)], t0, t0);
        assert_eq!(p.aging(at).len(), 1);
        assert_eq!(p.renewed(None, at, back), 0);
        assert_eq!(p.aging(at).len(), 1);
    }

    #[test]
    fn a_pool_far_from_the_primary_buffers_two_round_trips_of_work() {
        // Margin 2 s: a quarter is 500 ms. Claims take 400 ms there and
        // back: the buffer aims at 800 ms of starts instead.
        let mut p = Prefetch::new(5000, 0, Duration::from_millis(2000));
        let t0 = Instant::now();
        let rtt = Duration::from_millis(400);
        for i in 0..1000 {
            p.push(vec![task(i)], t0, t0 + rtt);
        }
        let mut now = t0 + rtt;
        for _ in 0..1000 {
            now += Duration::from_millis(1);
            assert!(p.next(now, |_| panic!("none expires")).is_some());
        }
        // ~1000 starts/s: 800 tasks ahead (the rate is smoothed).
        let t = p.target();
        assert!((700..=900).contains(&t), "target {t}, rate {}", p.rate);
        let mut near = Prefetch::new(5000, 0, Duration::from_millis(2000));
        near.rate = p.rate;
        near.push(vec![task(0)], t0, t0 + Duration::from_millis(2));
        assert!(near.target() * 3 / 2 < t, "near {} far {t}", near.target());
    }

    #[test]
    fn claims_coming_back_to_a_waiting_pool_double_its_target_and_others_halve_it() {
        let mut p = Prefetch::new(500, 0, Duration::from_millis(2000));
        assert_eq!(p.want(32, 0), 32, "no pace yet: the free slots");
        // Each claim comes back full to a pool with every slot free.
        let mut asked = 32;
        for expected in [64, 192, 448, 960, 1920, 3000] {
            p.claimed(asked, asked, true);
            assert_eq!(p.target(), expected);
            asked = p.want(32, 0);
            assert_eq!(asked, (32 + expected).min(500));
        }
        // A short claim (the queues are nearly empty) keeps the floor.
        p.claimed(10, 500, true);
        assert_eq!(p.target(), 3000, "the cap: six batches");
        // Claims finding work still buffered halve it.
        p.claimed(500, 500, false);
        assert_eq!(p.target(), 1500);
        p.claimed(500, 500, false);
        assert_eq!(p.target(), 750);
        // An idle pool forgets it.
        let later = Instant::now() + RATE_WINDOW * 8;
        p.idle(later);
        assert_eq!(p.target(), 0);
    }
}

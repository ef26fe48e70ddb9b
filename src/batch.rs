//! A micro-batcher: concurrent callers' items are gathered into one call.
//!
//! Under light load an item is flushed alone at once (no added latency);
//! under load, items that arrive while earlier batches are in flight are
//! gathered, up to `max_batch`, so N concurrent submits or completions cost
//! about N / max_batch round trips. At most `max_in_flight` batches run at
//! once; the queue in front is bounded.
//!
//! A flush can learn how its batch arrived ([`Arrival`]): whether its items
//! waited behind a batch in flight (callers arrive faster than batches
//! finish) or reached an idle batcher.
//!
//! With one batch in flight, a batcher may also *gather*: a batch smaller
//! than the previous one waits, no longer than the previous batch took (and
//! a cap), for the callers that were in that batch to come back. Callers
//! that each wait for their answer before sending again (N clients, each
//! with one request open) otherwise split into two groups that take turns,
//! each batch holding about N/2 items and paying the call's fixed cost;
//! gathered, they share one batch. A caller alone (the previous batch held
//! one item) never waits. Submits gather for that reason; executors'
//! reports gather so that fewer, larger ones leave the database's CPU to
//! the submits callers wait for.
//!
//! A batch that fails with an error its `split_on` says belongs to one item
//! (not to the path, e.g. a lost connection) is flushed again item by item,
//! so one bad item cannot fail the others it was batched with.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::error;

type Reply<O, E> = oneshot::Sender<Result<O, E>>;

/// Handle to a running batcher. Cloning shares it.
pub struct Batcher<I, O, E> {
    tx: mpsc::Sender<(I, Reply<O, E>)>,
    closing: CancellationToken,
}

impl<I, O, E> Clone for Batcher<I, O, E> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
            closing: self.closing.clone(),
        }
    }
}

/// Why a batched call got no answer.
#[derive(Debug, thiserror::Error)]
#[error("batcher stopped")]
pub struct Stopped;

/// How many batches may be in flight at once: fixed, or shared with the
/// flush so it can follow what it measures (e.g. the round trip). Read
/// before each batch is started.
#[derive(Clone, Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub fn new(n: usize) -> InFlight {
        InFlight(Arc::new(AtomicUsize::new(n.max(1))))
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the limit (at least 1); batches already in flight go on.
    pub fn set(&self, n: usize) {
        self.0.store(n.max(1), Ordering::Relaxed);
    }
}

impl From<usize> for InFlight {
    fn from(n: usize) -> InFlight {
        InFlight::new(n)
    }
}

/// How a batch's items reached the batcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The batch started as its first item arrived: the batcher was idle.
    Idle,
    /// Its items were already queued when a batch in flight finished, or
    /// came back from the batch that just finished while it gathered:
    /// callers arrive faster than batches finish.
    Behind,
}

/// What a batch flush does, and when a failed batch is split.
struct Flusher<F, E> {
    flush: F,
    split_on: fn(&E) -> bool,
}

impl<I, O, E> Batcher<I, O, E>
where
    I: Clone + Send + 'static,
    O: Send + 'static,
    E: Clone + Send + 'static,
{
    /// Starts the batcher's task in `tasks` (the caller supervises it). Its
    /// flushes run in a `JoinSet` the task owns: aborting the task aborts
    /// them. The task ends once every handle is dropped or [`Batcher::close`]
    /// is called, after flushing what was queued and waiting for every
    /// flush.
    ///
    /// `flush` must return one result per item, in order. When a batch of
    /// several fails with an error for which `split_on` is true, each item
    /// is flushed alone and gets its own answer.
    pub fn start<F, Fut>(
        max_batch: usize,
        max_in_flight: impl Into<InFlight>,
        split_on: fn(&E) -> bool,
        flush: F,
        tasks: &mut JoinSet<()>,
    ) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, E>> + Send + 'static,
    {
        Self::start_with_arrival(
            max_batch,
            max_in_flight,
            None,
            split_on,
            move |items, _| flush(items),
            tasks,
        )
    }

    /// [`Batcher::start`] with a flush that is also told how its batch
    /// arrived, and which gathers (see the module's doc) for at most
    /// `gather` when that is set.
    pub fn start_with_arrival<F, Fut>(
        max_batch: usize,
        max_in_flight: impl Into<InFlight>,
        gather: Option<Duration>,
        split_on: fn(&E) -> bool,
        flush: F,
        tasks: &mut JoinSet<()>,
    ) -> Self
    where
        F: Fn(Vec<I>, Arrival) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, E>> + Send + 'static,
    {
        let max_in_flight = max_in_flight.into();
        let (tx, rx) =
            mpsc::channel::<(I, Reply<O, E>)>(max_batch * max_in_flight.get().max(8) * 4);
        let closing = CancellationToken::new();
        let flusher = Arc::new(Flusher { flush, split_on });
        tasks.spawn(dispatch(
            rx,
            flusher,
            max_batch,
            max_in_flight,
            gather,
            closing.clone(),
        ));
        Batcher { tx, closing }
    }

    /// Submits one item and waits for its result.
    pub async fn call(&self, item: I) -> Result<Result<O, E>, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((item, tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Stops taking items (later calls get [`Stopped`]); what is queued is
    /// still flushed, then the batcher's task ends.
    pub fn close(&self) {
        self.closing.cancel();
    }
}

/// The batcher's task: gathers queued items into batches and runs up to
/// `max_in_flight` flushes at once.
async fn dispatch<I, O, E, F, Fut>(
    mut rx: mpsc::Receiver<(I, Reply<O, E>)>,
    flusher: Arc<Flusher<F, E>>,
    max_batch: usize,
    max_in_flight: InFlight,
    gather: Option<Duration>,
    closing: CancellationToken,
) where
    I: Clone + Send + 'static,
    O: Send + 'static,
    E: Clone + Send + 'static,
    F: Fn(Vec<I>, Arrival) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<O>, E>> + Send + 'static,
{
    let mut running = JoinSet::new();
    let mut open = true;
    // The previous batch: its size, and how long its flush took.
    let mut last = (0, Duration::ZERO);
    loop {
        // Wait for a free slot first, so items pile up into bigger batches
        // while all slots are busy.
        let full = running.len() >= max_in_flight.get();
        while running.len() >= max_in_flight.get() {
            reaped(running.join_next().await, &mut last);
        }
        let mut arrival = if full && !rx.is_empty() {
            Arrival::Behind
        } else {
            Arrival::Idle
        };
        let first = tokio::select! {
            r = running.join_next(), if !running.is_empty() => {
                reaped(r, &mut last);
                continue;
            }
            _ = closing.cancelled(), if open => {
                // Senders now fail; the queue still yields what it holds.
                rx.close();
                open = false;
                continue;
            }
            x = rx.recv() => match x {
                Some(x) => x,
                None => break,
            },
        };
        let mut items = vec![first];
        while items.len() < max_batch {
            match rx.try_recv() {
                Ok(x) => items.push(x),
                Err(_) => break,
            }
        }
        if let (Some(cap), true) = (gather, max_in_flight.get() == 1) {
            let (want, took) = (last.0.min(max_batch), last.1.min(cap));
            let deadline = tokio::time::Instant::now() + took;
            while items.len() < want {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    // Callers of the batch that just finished, back already:
                    // they arrive faster than batches finish.
                    Ok(Some(x)) => {
                        items.push(x);
                        arrival = Arrival::Behind;
                    }
                    _ => break,
                }
            }
        }
        last.0 = items.len();
        running.spawn(flush_batch(flusher.clone(), items, arrival));
    }
    while let Some(r) = running.join_next().await {
        reaped(Some(r), &mut last);
    }
}

/// Notes how long a finished flush took. A flush that panicked leaves its
/// callers with [`Stopped`]; say so once.
fn reaped(r: Option<Result<Duration, tokio::task::JoinError>>, last: &mut (usize, Duration)) {
    match r {
        Some(Ok(took)) => last.1 = took,
        Some(Err(e)) if e.is_panic() => {
            error!(error = %e, "a batch flush panicked; its callers get `batcher stopped`");
        }
        _ => {}
    }
}

/// Flushes one batch, answers each item's caller, and says how long that
/// took.
async fn flush_batch<I, O, E, F, Fut>(
    flusher: Arc<Flusher<F, E>>,
    items: Vec<(I, Reply<O, E>)>,
    arrival: Arrival,
) -> Duration
where
    I: Clone + Send + 'static,
    O: Send + 'static,
    E: Clone + Send + 'static,
    F: Fn(Vec<I>, Arrival) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<O>, E>> + Send + 'static,
{
    let started = tokio::time::Instant::now();
    let (inputs, replies): (Vec<I>, Vec<Reply<O, E>>) = items.into_iter().unzip();
    let single = inputs.len() == 1;
    let retry = (!single).then(|| inputs.clone());
    match (flusher.flush)(inputs, arrival).await {
        Ok(outs) => {
            for (reply, out) in replies.into_iter().zip(outs) {
                let _ = reply.send(Ok(out));
            }
        }
        Err(e) if !single && (flusher.split_on)(&e) => {
            for (item, reply) in retry.into_iter().flatten().zip(replies) {
                let out = (flusher.flush)(vec![item], arrival)
                    .await
                    .map(|mut o| o.remove(0));
                let _ = reply.send(out);
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
    started.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn gathers_concurrent_items_and_keeps_order() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let mut tasks = JoinSet::new();
        let b: Batcher<u32, u32, String> = Batcher::start(
            16,
            1,
            |_| false,
            move |xs: Vec<u32>| {
                c.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::task::yield_now().await;
                    Ok(xs.into_iter().map(|x| x * 2).collect())
                }
            },
            &mut tasks,
        );
        let futs: Vec<_> = (0..64)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.call(i).await.unwrap().unwrap() })
            })
            .collect();
        for (i, f) in futs.into_iter().enumerate() {
            assert_eq!(f.await.unwrap(), i as u32 * 2);
        }
        let n = calls.load(Ordering::SeqCst);
        assert!(n < 64, "expected batching, got {n} calls for 64 items");
    }

    #[tokio::test]
    async fn errors_reach_every_item_of_the_batch() {
        let mut tasks = JoinSet::new();
        let b: Batcher<u32, u32, String> = Batcher::start(
            4,
            1,
            |_| false,
            |_xs: Vec<u32>| async { Err("boom".to_string()) },
            &mut tasks,
        );
        assert_eq!(b.call(1).await.unwrap().unwrap_err(), "boom");
    }

    #[tokio::test]
    async fn an_item_error_is_split_out_and_the_others_succeed() {
        // Item 13 is bad: any batch holding it fails with an item error.
        let mut tasks = JoinSet::new();
        let b: Batcher<u32, u32, String> = Batcher::start(
            64,
            1,
            |e: &String| e.starts_with("item"),
            |xs: Vec<u32>| async move {
                tokio::task::yield_now().await;
                if xs.contains(&13) {
                    Err("item 13 is bad".to_string())
                } else {
                    Ok(xs)
                }
            },
            &mut tasks,
        );
        let futs: Vec<_> = (0..32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.call(i).await.unwrap() })
            })
            .collect();
        for (i, f) in futs.into_iter().enumerate() {
            let got = f.await.unwrap();
            if i == 13 {
                assert_eq!(got.unwrap_err(), "item 13 is bad");
            } else {
                assert_eq!(got.unwrap(), i as u32);
            }
        }
    }
}

#[cfg(test)]
mod arrival_tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::Semaphore;

    #[tokio::test]
    async fn a_batch_queued_behind_one_in_flight_is_told_so_and_an_idle_one_is_not() {
        // Each flush records its arrival, says it started, and waits for a
        // permit, so the test decides when a batch in flight finishes.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Semaphore::new(0));
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        let (s, g) = (seen.clone(), gate.clone());
        let b: Batcher<u32, u32, String> = Batcher::start_with_arrival(
            16,
            1,
            None,
            |_| false,
            move |xs: Vec<u32>, arrival| {
                s.lock().unwrap().push((xs.clone(), arrival));
                let (g, tx) = (g.clone(), started_tx.clone());
                async move {
                    let _ = tx.send(());
                    g.acquire().await.unwrap().forget();
                    Ok(xs)
                }
            },
            &mut tasks,
        );
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.call(1).await }
        });
        started.recv().await.unwrap();
        // Two more while the first batch is in flight: they queue behind it.
        let queued: Vec<_> = [2, 3]
            .into_iter()
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.call(i).await })
            })
            .collect();
        while b.tx.capacity() > b.tx.max_capacity() - 2 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(1);
        started.recv().await.unwrap();
        gate.add_permits(1);
        assert_eq!(first.await.unwrap().unwrap().unwrap(), 1);
        for q in queued {
            q.await.unwrap().unwrap().unwrap();
        }
        // Nothing in flight, nothing queued: the next one finds it idle.
        gate.add_permits(1);
        assert_eq!(b.call(4).await.unwrap().unwrap(), 4);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                (vec![1], Arrival::Idle),
                (vec![2, 3], Arrival::Behind),
                (vec![4], Arrival::Idle)
            ]
        );
    }
}

#[cfg(test)]
mod gather_tests {
    use super::*;
    use std::sync::Mutex;

    /// A batcher (one in flight, gathering for at most `cap`) whose flushes
    /// take 10 ms of the test's paused clock each and record their batches.
    type Seen = Arc<Mutex<Vec<(Vec<u32>, Arrival)>>>;

    fn batcher(cap: Duration) -> (Batcher<u32, u32, String>, Seen, JoinSet<()>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut tasks = JoinSet::new();
        let b = Batcher::start_with_arrival(
            16,
            1,
            Some(cap),
            |_| false,
            move |xs: Vec<u32>, arrival| {
                s.lock().unwrap().push((xs.clone(), arrival));
                async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok(xs)
                }
            },
            &mut tasks,
        );
        (b, seen, tasks)
    }

    fn call(b: &Batcher<u32, u32, String>, i: u32) -> tokio::task::JoinHandle<u32> {
        let b = b.clone();
        tokio::spawn(async move { b.call(i).await.unwrap().unwrap() })
    }

    #[tokio::test(start_paused = true)]
    async fn callers_coming_back_one_by_one_share_one_batch_as_large_as_the_last() {
        let (b, seen, _tasks) = batcher(Duration::from_millis(5));
        // Four callers at once: one batch of four.
        let first: Vec<_> = (0..4).map(|i| call(&b, i)).collect();
        for f in first {
            f.await.unwrap();
        }
        // They come back one at a time: the first one waits for the rest.
        let mut again = Vec::new();
        for i in 4..8 {
            again.push(call(&b, i));
            tokio::task::yield_now().await;
        }
        for f in again {
            f.await.unwrap();
        }
        // The second gathered callers of the first: under load.
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (vec![0, 1, 2, 3], Arrival::Idle),
                (vec![4, 5, 6, 7], Arrival::Behind)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_alone_never_waits_and_a_short_batch_waits_at_most_the_cap() {
        let (b, seen, _tasks) = batcher(Duration::from_millis(5));
        // One caller at a time: each goes at once (10 ms: just its flush).
        for i in 0..2 {
            let t = tokio::time::Instant::now();
            assert_eq!(call(&b, i).await.unwrap(), i);
            assert_eq!(t.elapsed(), Duration::from_millis(10));
        }
        let three: Vec<_> = (2..5).map(|i| call(&b, i)).collect();
        for f in three {
            f.await.unwrap();
        }
        // After a batch of three, one that stays alone waits the cap (5 ms,
        // less than the 10 ms the last flush took), then goes.
        let t = tokio::time::Instant::now();
        assert_eq!(call(&b, 5).await.unwrap(), 5);
        assert_eq!(t.elapsed(), Duration::from_millis(15));
        let seen = seen.lock().unwrap().clone();
        let batches: Vec<_> = seen.iter().map(|(b, _)| b.clone()).collect();
        assert_eq!(batches, vec![vec![0], vec![1], vec![2, 3, 4], vec![5]]);
        // Nothing came back while the last one waited: the batcher was idle.
        assert_eq!(seen.last().unwrap().1, Arrival::Idle);
    }
}

#[cfg(test)]
mod shutdown_tests {
    use super::*;

    #[tokio::test]
    async fn close_flushes_what_is_queued_and_the_task_ends() {
        let mut tasks = JoinSet::new();
        let b: Batcher<u32, u32, String> = Batcher::start(
            8,
            1,
            |_| false,
            |xs: Vec<u32>| async move {
                tokio::task::yield_now().await;
                Ok(xs)
            },
            &mut tasks,
        );
        let calls: Vec<_> = (0..16)
            .map(|i| {
                let b = b.clone();
                async move { b.call(i).await }
            })
            .collect();
        let answers = futures::future::join_all(calls);
        let (answers, ()) = tokio::join!(answers, async { b.close() });
        for (i, a) in answers.into_iter().enumerate() {
            // Queued before the close: answered. (Sent after: Stopped.)
            if let Ok(r) = a {
                assert_eq!(r.unwrap(), i as u32);
            }
        }
        assert!(matches!(b.call(99).await, Err(Stopped)));
        // The task ends by itself: nothing to abort.
        assert!(tasks.join_next().await.unwrap().is_ok());
        assert!(tasks.is_empty());
    }

    #[tokio::test]
    async fn dropping_every_handle_ends_the_task() {
        let mut tasks = JoinSet::new();
        let b: Batcher<u32, u32, String> = Batcher::start(
            8,
            2,
            |_| false,
            |xs: Vec<u32>| async move { Ok(xs) },
            &mut tasks,
        );
        assert_eq!(b.call(7).await.unwrap().unwrap(), 7);
        drop(b);
        assert!(tasks.join_next().await.unwrap().is_ok());
    }
}

//! A micro-batcher: concurrent callers' items are gathered into one call.
//!
//! Under light load an item is flushed alone at once (no added latency);
//! under load, items that arrive while earlier batches are in flight are
//! gathered, up to `max_batch`, so N concurrent submits or completions cost
//! about N / max_batch round trips. At most `max_in_flight` batches run at
//! once; the queue in front is bounded.
//!
//! A batch that fails with an error its `split_on` says belongs to one item
//! (not to the path, e.g. a lost connection) is flushed again item by item,
//! so one bad item cannot fail the others it was batched with.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

type Reply<O, E> = oneshot::Sender<Result<O, E>>;

/// Handle to a running batcher. Cloning shares it.
pub struct Batcher<I, O, E> {
    tx: mpsc::Sender<(I, Reply<O, E>)>,
}

impl<I, O, E> Clone for Batcher<I, O, E> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

/// Why a batched call got no answer.
#[derive(Debug, thiserror::Error)]
#[error("batcher stopped")]
pub struct Stopped;

impl<I, O, E> Batcher<I, O, E>
where
    I: Clone + Send + 'static,
    O: Send + 'static,
    E: Clone + Send + 'static,
{
    /// Starts the batcher task. `flush` must return one result per item, in
    /// order. When a batch of several fails with an error for which
    /// `split_on` is true, each item is flushed alone and gets its own answer.
    pub fn spawn<F, Fut>(
        max_batch: usize,
        max_in_flight: usize,
        split_on: fn(&E) -> bool,
        flush: F,
    ) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, E>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<(I, Reply<O, E>)>(max_batch * max_in_flight * 4);
        let flush = Arc::new(flush);
        let slots = Arc::new(Semaphore::new(max_in_flight));
        tokio::spawn(async move {
            loop {
                // Wait for a free slot first, so items pile up into bigger
                // batches while all slots are busy.
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Some(first) = rx.recv().await else {
                    return;
                };
                let mut items = vec![first];
                while items.len() < max_batch {
                    match rx.try_recv() {
                        Ok(x) => items.push(x),
                        Err(_) => break,
                    }
                }
                let flush = flush.clone();
                tokio::spawn(async move {
                    let (inputs, replies): (Vec<I>, Vec<Reply<O, E>>) = items.into_iter().unzip();
                    let single = inputs.len() == 1;
                    let retry = (!single).then(|| inputs.clone());
                    match flush(inputs).await {
                        Ok(outs) => {
                            for (reply, out) in replies.into_iter().zip(outs) {
                                let _ = reply.send(Ok(out));
                            }
                        }
                        Err(e) if !single && split_on(&e) => {
                            for (item, reply) in retry.into_iter().flatten().zip(replies) {
                                let out = flush(vec![item]).await.map(|mut o| o.remove(0));
                                let _ = reply.send(out);
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                    drop(permit);
                });
            }
        });
        Batcher { tx }
    }

    /// Submits one item and waits for its result.
    pub async fn call(&self, item: I) -> Result<Result<O, E>, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((item, tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn gathers_concurrent_items_and_keeps_order() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let b: Batcher<u32, u32, String> = Batcher::spawn(
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
        let b: Batcher<u32, u32, String> = Batcher::spawn(
            4,
            1,
            |_| false,
            |_xs: Vec<u32>| async { Err("boom".to_string()) },
        );
        assert_eq!(b.call(1).await.unwrap().unwrap_err(), "boom");
    }

    #[tokio::test]
    async fn an_item_error_is_split_out_and_the_others_succeed() {
        // Item 13 is bad: any batch holding it fails with an item error.
        let b: Batcher<u32, u32, String> = Batcher::spawn(
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

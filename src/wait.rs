//! Waiting for a condition with a deadline: the one "poll until, or give
//! up" helper behind the drills, the dev tooling and the tests. Nothing in
//! the crate waits on a condition without a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

/// The deadline passed before the condition held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?}")]
pub struct TimedOut(pub Duration);

/// Calls `probe` every `every` until it yields `Some`, or until `within`
/// has passed (then [`TimedOut`]). The probe runs at least once.
pub async fn until<T, F, Fut>(
    within: Duration,
    every: Duration,
    mut probe: F,
) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(TimedOut(within));
        }
        tokio::time::sleep(every).await;
    }
}

/// [`until`] for a plain condition: true once it held within the deadline.
pub async fn until_true(within: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    until(within, every, || std::future::ready(cond().then_some(())))
        .await
        .is_ok()
}

/// The blocking form of [`until_true`], for threads without a runtime.
pub fn until_true_blocking(
    within: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn yields_the_first_value_or_times_out() {
        let mut n = 0;
        let got = until(Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            std::future::ready((n == 3).then_some(n))
        })
        .await;
        assert_eq!(got, Ok(3));
        let never = until(Duration::from_millis(20), Duration::from_millis(5), || {
            std::future::ready(None::<()>)
        })
        .await;
        assert_eq!(never, Err(TimedOut(Duration::from_millis(20))));
        assert!(!until_true_blocking(
            Duration::from_millis(10),
            Duration::from_millis(2),
            || false
        ));
        assert!(until_true(Duration::ZERO, Duration::from_millis(1), || true).await);
    }
}

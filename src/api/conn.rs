//! One HTTP/1.1 connection of the API server and the bounds on its time:
//!
//! - header read: a request head must be complete within
//!   `api.header_read_timeout_ms`, counted from the connection's start, or
//!   for a later request on a keep-alive connection from its first byte;
//! - idle: a keep-alive connection that serves no request and moves no byte
//!   for `api.idle_timeout_ms` is closed.
//!
//! Both are watched here rather than by hyper, whose header timer starts as
//! soon as a connection turns idle and so cannot tell the two apart. The
//! stream records when bytes move ([`Watched`]), the service records which
//! requests are being served, and one watchdog per connection drops the
//! connection (closing its socket) when a bound passes. A request being
//! served is never cut here: `limits.request_timeout_ms` bounds it.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tracing::debug;

/// Bounds on the server's connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections served at once (api.max_connections); past it the
    /// server stops accepting until one closes.
    pub max_connections: usize,
    /// How long a client may take to send a whole request head
    /// (api.header_read_timeout_ms); then it is disconnected.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests
    /// (api.idle_timeout_ms); then it is closed.
    pub idle_timeout: Duration,
}

/// "No request head is being read."
const NO_HEAD: u64 = u64::MAX;

/// What a connection is doing, in milliseconds since it was accepted.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// When a byte was last read or written, or a request last finished.
    last_io: AtomicU64,
    /// When the request head being read began ([`NO_HEAD`]: none is).
    head_since: AtomicU64,
    /// Requests being served.
    serving: AtomicUsize,
    /// Wakes the watchdog when a bound may have come closer: a request
    /// finished (idle from now) or a new head began.
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            // The first request's head is due from the connection's start.
            head_since: AtomicU64::new(0),
            serving: AtomicUsize::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn read(&self) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        // A byte while no request is served starts the next request's head.
        if self.serving.load(Ordering::Relaxed) == 0
            && self
                .head_since
                .compare_exchange(NO_HEAD, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Resolves when the connection has outlived a bound, naming it.
    async fn expired(&self, limits: &ServeLimits) -> &'static str {
        let header_ms = limits.header_read_timeout.as_millis() as u64;
        let idle_ms = limits.idle_timeout.as_millis() as u64;
        loop {
            let bound = if self.serving.load(Ordering::Relaxed) > 0 {
                // Served requests are bounded elsewhere.
                None
            } else {
                Some(match self.head_since.load(Ordering::Relaxed) {
                    NO_HEAD => (
                        self.last_io.load(Ordering::Relaxed) + idle_ms,
                        "idle timeout (api.idle_timeout_ms)",
                    ),
                    since => (
                        since + header_ms,
                        "request head not complete in time (api.header_read_timeout_ms)",
                    ),
                })
            };
            match bound {
                Some((deadline, why)) if self.now_ms() >= deadline => return why,
                // Bytes moving only push the deadline later: look again then.
                Some((deadline, _)) => tokio::select! {
                    _ = tokio::time::sleep_until(self.start + Duration::from_millis(deadline)) => {}
                    _ = self.changed.notified() => {}
                },
                None => self.changed.notified().await,
            }
        }
    }
}

/// Marks one request as being served while it lives.
struct Serving(Arc<Activity>);

impl Serving {
    fn enter(a: &Arc<Activity>) -> Serving {
        a.serving.fetch_add(1, Ordering::Relaxed);
        // Its head is complete.
        a.head_since.store(NO_HEAD, Ordering::Relaxed);
        Serving(a.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // Idle from now unless the answer's bytes keep moving.
        self.0.wrote();
        self.0.serving.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

/// A stream that records in [`Activity`] when bytes move.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves HTTP/1.1 on one connection, watched by the graceful shutdown,
/// until the client closes it or it outlives a bound of `limits`.
pub(crate) async fn serve_conn<S>(
    stream: S,
    app: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
    limits: ServeLimits,
    peer: std::net::SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Watched {
        inner: stream,
        activity: activity.clone(),
    };
    let inner = hyper_util::service::TowerToHyperService::new(app);
    let served = activity.clone();
    let svc = hyper::service::service_fn(move |req| {
        let serving = Serving::enter(&served);
        let answer = hyper::service::Service::call(&inner, req);
        async move {
            let r = answer.await;
            drop(serving);
            r
        }
    });
    // The header timer is ours (above), not hyper's.
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    tokio::select! {
        r = watcher.watch(conn) => if let Err(e) = r {
            debug!(%peer, error = %e, "connection ended with an error");
        },
        why = activity.expired(&limits) => debug!(%peer, "connection closed: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ServeLimits {
        ServeLimits {
            max_connections: 1,
            header_read_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(1000),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_new_connection_is_due_its_head_then_idle_and_served_ones_are_left_alone() {
        let a = Arc::new(Activity::new());
        // New and silent: the header bound.
        let why = a.expired(&limits()).await;
        assert!(why.contains("header_read_timeout"), "{why}");
        assert_eq!(a.now_ms(), 100);
        // A request is served for longer than both bounds: not cut.
        let serving = Serving::enter(&a);
        let cut = tokio::time::timeout(Duration::from_secs(5), a.expired(&limits())).await;
        assert!(cut.is_err(), "a served request is not cut here");
        drop(serving);
        // Then idle: the idle bound, counted from the answer.
        let done = a.now_ms();
        let why = a.expired(&limits()).await;
        assert!(why.contains("idle_timeout"), "{why}");
        assert_eq!(a.now_ms(), done + 1000);
        // A byte of the next request: the header bound again, from that byte.
        a.read();
        let first = a.now_ms();
        let why = a.expired(&limits()).await;
        assert!(why.contains("header_read_timeout"), "{why}");
        assert_eq!(a.now_ms(), first + 100);
    }
}

//! A TCP delay proxy: real WAN latency (and partitions) on loopback links.
//!
//! `swf dev --wan-latency-ms N` puts a [`DelayProxy`] on every cross-region
//! link (node to remote PostgreSQL, PostgreSQL streaming replication, node to
//! remote node). [`DelayProxy::set_blocked`] can also cut a link (a
//! partition); no drill uses it yet, it is there for partition experiments.
//!
//! It adds latency, not a throughput limit: every chunk read from one side is
//! stamped with its read time and written to the other side at (read time +
//! one-way delay), in order. A stream of many small packets therefore gets the
//! delay added once to each packet, not once per packet queued before it. Per
//! direction a reader pushes `(deadline, bytes)` into a bounded channel (at
//! most [`CHANNEL_CHUNKS`] chunks and [`MAX_IN_FLIGHT_BYTES`] bytes, so a slow
//! receiver applies backpressure) and a writer sleeps until each deadline,
//! then writes. An EOF is delayed like data: the write half of the other side
//! is shut down once everything read before it has been written. The
//! connection ends when both directions are done; any error closes both sides.
//!
//! All of a connection's work runs in one task (the four halves are futures
//! joined inside it), and the accept task owns those tasks in a `JoinSet`, so
//! cutting, shutting down or dropping the proxy leaves no task behind.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, trace, warn};

/// Size of the read buffer; a chunk is at most this many bytes.
const READ_BUF: usize = 64 * 1024;
/// Chunks queued per direction before the reader waits for the writer.
pub const CHANNEL_CHUNKS: usize = 1024;
/// Bytes queued per direction before the reader waits for the writer.
pub const MAX_IN_FLIGHT_BYTES: usize = 4 * 1024 * 1024;
/// Pause after an unexpected accept error (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Counters of a [`DelayProxy`], read with [`DelayProxy::stats`].
#[derive(Debug, Clone, Default)]
pub struct ProxyStats {
    /// Connections accepted, including those refused at once while blocked.
    pub accepted: u64,
    /// Connections being served now.
    pub active: u64,
    /// Bytes written to the target (client to target direction).
    pub bytes_to_target: u64,
    /// Bytes written to the client (target to client direction).
    pub bytes_to_client: u64,
}

/// State shared by the handle, the accept task and the connection tasks.
struct Shared {
    name: Arc<str>,
    target: SocketAddr,
    /// Current one-way delay in nanoseconds.
    delay_ns: AtomicU64,
    blocked: AtomicBool,
    /// Bumped to cut every open connection.
    cut: watch::Sender<u64>,
    accepted: AtomicU64,
    active: AtomicU64,
    bytes_to_target: AtomicU64,
    bytes_to_client: AtomicU64,
}

impl Shared {
    /// When data read now is due on the other side; `None` with no delay.
    fn due(&self) -> Option<Instant> {
        match self.delay_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Instant::now() + Duration::from_nanos(ns)),
        }
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A TCP proxy that delays the bytes in each direction by a one-way delay.
///
/// Dropping it aborts its tasks (closing every socket soon after);
/// [`DelayProxy::shutdown`] does the same and waits for it.
pub struct DelayProxy {
    shared: Arc<Shared>,
    local: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    accept_task: Option<JoinHandle<()>>,
}

impl fmt::Debug for DelayProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayProxy")
            .field("name", &self.shared.name)
            .field("local", &self.local)
            .field("target", &self.shared.target)
            .finish_non_exhaustive()
    }
}

impl DelayProxy {
    /// Listens on `listen` (port 0 = pick one) and forwards every accepted connection to `target`,
    /// delaying bytes in each direction by the current one-way delay.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        one_way: Duration,
        name: &str,
    ) -> io::Result<DelayProxy> {
        let listener = TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let (cut, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            name: Arc::from(name),
            target,
            delay_ns: AtomicU64::new(duration_ns(one_way)),
            blocked: AtomicBool::new(false),
            cut,
            accepted: AtomicU64::new(0),
            active: AtomicU64::new(0),
            bytes_to_target: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        debug!(proxy = %name, %local, %target, delay = ?one_way, "delay proxy listening");
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stop_rx));
        Ok(DelayProxy {
            shared,
            local,
            stop: Some(stop_tx),
            accept_task: Some(accept_task),
        })
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sets the one-way delay; it applies to data read after the call.
    pub fn set_delay(&self, one_way: Duration) {
        debug!(proxy = %self.shared.name, delay = ?one_way, "delay proxy: set delay");
        self.shared
            .delay_ns
            .store(duration_ns(one_way), Ordering::Relaxed);
    }

    /// Partition: while blocked, new connections are refused (accepted then closed at once) and existing ones are cut (both sides closed).
    pub fn set_blocked(&self, blocked: bool) {
        debug!(proxy = %self.shared.name, blocked, "delay proxy: set blocked");
        // The flag first, then the cut: the accept task subscribes to `cut`
        // before reading the flag, so no connection slips between the two.
        self.shared.blocked.store(blocked, Ordering::SeqCst);
        if blocked {
            self.shared.cut.send_modify(|generation| *generation += 1);
        }
    }

    /// Connections accepted, active, and bytes forwarded each way.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            accepted: s.accepted.load(Ordering::Relaxed),
            active: s.active.load(Ordering::Relaxed),
            bytes_to_target: s.bytes_to_target.load(Ordering::Relaxed),
            bytes_to_client: s.bytes_to_client.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting and closes all connections; when it returns, the
    /// listening socket and every proxied socket are closed.
    pub async fn shutdown(mut self) {
        debug!(proxy = %self.shared.name, "delay proxy: shutdown");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if let Some(task) = self.accept_task.take() {
            // Dropping the accept future drops its JoinSet, which aborts
            // every connection task.
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            // A send or a dropped handle both stop the proxy.
            _ = &mut stop => break,
            res = listener.accept() => match res {
                Ok((client, peer)) => {
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    let cut = shared.cut.subscribe();
                    if shared.blocked.load(Ordering::SeqCst) {
                        debug!(proxy = %shared.name, %peer, "delay proxy blocked: refusing connection");
                        drop(client);
                        continue;
                    }
                    trace!(proxy = %shared.name, %peer, "delay proxy: accepted");
                    conns.spawn(serve_conn(client, peer, Arc::clone(&shared), cut));
                }
                Err(e) if is_transient_accept_error(&e) => {
                    debug!(proxy = %shared.name, error = %e, "delay proxy: accept failed");
                }
                Err(e) => {
                    warn!(proxy = %shared.name, error = %e, "delay proxy: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(res) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = res {
                    if e.is_panic() {
                        warn!(proxy = %shared.name, error = %e, "delay proxy: connection task panicked");
                    }
                }
            }
        }
    }
    drop(listener);
    conns.shutdown().await;
    debug!(proxy = %shared.name, "delay proxy stopped");
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Counts a connection as active for as long as its task (or future) lives,
/// including when it is aborted.
struct ActiveGuard(Arc<Shared>);

impl ActiveGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(shared)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_conn(
    client: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut cut: watch::Receiver<u64>,
) {
    let _active = ActiveGuard::new(Arc::clone(&shared));
    tokio::select! {
        res = proxy_conn(client, &shared) => match res {
            Ok(()) => trace!(proxy = %shared.name, %peer, "delay proxy: connection closed"),
            Err(e) => debug!(proxy = %shared.name, %peer, error = %e, "delay proxy: connection error"),
        },
        // Either a cut or (impossible while `shared` lives) a dropped sender.
        _ = cut.changed() => debug!(proxy = %shared.name, %peer, "delay proxy: connection cut"),
    }
    // Both sockets are dropped (closed) here.
}

async fn proxy_conn(mut client: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut server = match TcpStream::connect(shared.target).await {
        Ok(s) => s,
        Err(e) => {
            debug!(proxy = %shared.name, target = %shared.target, error = %e,
                "delay proxy: connect to target failed; closing client");
            return Ok(());
        }
    };
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_rd, client_wr) = client.split();
    let (server_rd, server_wr) = server.split();
    tokio::try_join!(
        pump(client_rd, server_wr, shared, &shared.bytes_to_target),
        pump(server_rd, client_wr, shared, &shared.bytes_to_client),
    )?;
    Ok(())
}

/// A chunk of one direction; empty `data` is the EOF.
struct Chunk {
    due: Option<Instant>,
    data: Vec<u8>,
}

/// One direction: reads from `rd`, writes each chunk to `wr` at its deadline,
/// then shuts down `wr` after the delayed EOF.
async fn pump<R, W>(mut rd: R, mut wr: W, shared: &Shared, written: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
    let budget = Semaphore::new(MAX_IN_FLIGHT_BYTES);

    let reader = async {
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let n = rd.read(&mut buf).await?;
            let due = shared.due();
            if n > 0 {
                // n <= READ_BUF, far below u32::MAX and the budget.
                budget
                    .acquire_many(n as u32)
                    .await
                    .map_err(|_| io::Error::other("byte budget closed"))?
                    .forget();
            }
            let chunk = Chunk {
                due,
                data: buf[..n].to_vec(),
            };
            if tx.send(chunk).await.is_err() {
                // The writer is gone, so it failed; its error is reported.
                return Ok(());
            }
            if n == 0 {
                return Ok::<(), io::Error>(());
            }
        }
    };

    let writer = async {
        while let Some(chunk) = rx.recv().await {
            if let Some(due) = chunk.due {
                if due > Instant::now() {
                    tokio::time::sleep_until(due).await;
                }
            }
            if chunk.data.is_empty() {
                wr.shutdown().await?;
                return Ok(());
            }
            wr.write_all(&chunk.data).await?;
            written.fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
            budget.add_permits(chunk.data.len());
        }
        // The reader stopped without an EOF; it failed and reports why.
        Ok::<(), io::Error>(())
    };

    tokio::try_join!(reader, writer)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    const LOCAL: &str = "127.0.0.1:0";
    const WAIT: Duration = Duration::from_secs(10);

    fn any_port() -> SocketAddr {
        LOCAL.parse().unwrap()
    }

    /// An echo server: writes back what it reads, shuts down on EOF.
    async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind(any_port()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let (mut sock, _) = match listener.accept().await {
                    Ok(x) => x,
                    Err(_) => continue,
                };
                sock.set_nodelay(true).unwrap();
                conns.spawn(async move {
                    let (mut rd, mut wr) = sock.split();
                    if tokio::io::copy(&mut rd, &mut wr).await.is_ok() {
                        let _ = wr.shutdown().await;
                    }
                });
            }
        });
        (addr, task)
    }

    async fn within<F: Future>(what: &str, fut: F) -> F::Output {
        tokio::time::timeout(WAIT, fut)
            .await
            .unwrap_or_else(|_| panic!("timed out: {what}"))
    }

    /// Waits for a condition, polling, up to a deadline.
    async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
        let held = crate::wait::until_true(WAIT, Duration::from_millis(2), cond).await;
        assert!(held, "timed out waiting for {what}");
    }

    async fn connect(addr: SocketAddr) -> TcpStream {
        let s = within("connect", TcpStream::connect(addr)).await.unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
        let start = Instant::now();
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        within("echo", s.read_exact(&mut back)).await.unwrap();
        assert_eq!(back, msg);
        start.elapsed()
    }

    /// True when the socket's peer closed or reset it (EOF or error).
    async fn closed(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 64];
        matches!(within("close", s.read(&mut buf)).await, Ok(0) | Err(_))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echo_roundtrip_intact() {
        let (echo, _server) = echo_server().await;
        let proxy = DelayProxy::start(any_port(), echo, Duration::ZERO, "echo")
            .await
            .unwrap();

        // 1 MiB of patterned data, written while reading back.
        let data: Vec<u8> = (0..1024 * 1024u32)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let mut s = connect(proxy.local_addr()).await;
        let (mut rd, mut wr) = s.split();
        let to_send = data.clone();
        let write = async move {
            wr.write_all(&to_send).await.unwrap();
            wr.shutdown().await.unwrap();
        };
        let mut back = Vec::new();
        let read = rd.read_to_end(&mut back);
        let ((), n) = within("1 MiB echo", async { tokio::join!(write, read) }).await;
        assert_eq!(n.unwrap(), data.len());
        assert!(back == data, "echoed bytes differ");

        // Many small writes.
        let mut s = connect(proxy.local_addr()).await;
        let mut expected = Vec::new();
        for i in 0..2000u32 {
            let msg = format!("m{i};");
            s.write_all(msg.as_bytes()).await.unwrap();
            expected.extend_from_slice(msg.as_bytes());
        }
        let mut back = vec![0u8; expected.len()];
        within("small echoes", s.read_exact(&mut back))
            .await
            .unwrap();
        assert_eq!(back, expected);
        drop(s);

        let total = (data.len() + expected.len()) as u64;
        wait_until("stats", || {
            let st = proxy.stats();
            st.active == 0 && st.bytes_to_target == total && st.bytes_to_client == total
        })
        .await;
        assert_eq!(proxy.stats().accepted, 2);
        proxy.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delay_is_latency_not_serialisation() {
        let (echo, _server) = echo_server().await;
        let one_way = Duration::from_millis(50);
        let proxy = DelayProxy::start(any_port(), echo, one_way, "wan")
            .await
            .unwrap();
        let mut s = connect(proxy.local_addr()).await;

        let rtt = round_trip(&mut s, b"ping").await;
        assert!(
            rtt >= 2 * one_way,
            "round trip {rtt:?} shorter than 2x delay"
        );

        // 20 small messages, each its own write (and chunk), pipelined: all
        // are sent before the first echo can come back.
        const PACE: Duration = Duration::from_millis(2);
        let msgs: Vec<Vec<u8>> = (0..20)
            .map(|i| format!("msg-{i:02}|").into_bytes())
            .collect();
        let total_len: usize = msgs.iter().map(Vec::len).sum();
        let start = Instant::now();
        let (mut rd, mut wr) = s.split();
        let write = async {
            for m in &msgs {
                wr.write_all(m).await.unwrap();
                // Pacing (not synchronisation): keeps each message its own
                // chunk at the proxy, as separate packets would be.
                tokio::time::sleep(PACE).await;
            }
        };
        let mut back = vec![0u8; total_len];
        let read = rd.read_exact(&mut back);
        let ((), n) = within("pipelined", async { tokio::join!(write, read) }).await;
        n.unwrap();
        let elapsed = start.elapsed();
        assert_eq!(back, msgs.concat());
        assert!(elapsed >= 2 * one_way, "pipelined took {elapsed:?}");
        assert!(
            elapsed < 20 * 2 * one_way,
            "pipelined took {elapsed:?}: chunks delayed serially"
        );
        // Delaying chunks one after another would take at least 20 one-way
        // delays; concurrent delays take about 2 plus the pacing.
        assert!(
            elapsed < 20 * one_way,
            "pipelined took {elapsed:?}: chunks delayed serially"
        );

        // set_delay applies to later traffic.
        proxy.set_delay(Duration::ZERO);
        let rtt = round_trip(&mut s, b"fast").await;
        assert!(
            rtt < Duration::from_millis(90),
            "round trip {rtt:?} after set_delay(0)"
        );
        proxy.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn half_close_is_forwarded_after_data() {
        let listener = TcpListener::bind(any_port()).await.unwrap();
        let target = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            sock.read_to_end(&mut got).await.unwrap();
            sock.write_all(format!("got {} bytes", got.len()).as_bytes())
                .await
                .unwrap();
            sock.shutdown().await.unwrap();
            got
        });
        let proxy = DelayProxy::start(any_port(), target, Duration::from_millis(20), "half")
            .await
            .unwrap();

        let mut s = connect(proxy.local_addr()).await;
        s.write_all(b"hello, half-closed world").await.unwrap();
        s.shutdown().await.unwrap();
        let mut reply = Vec::new();
        within("reply and EOF", s.read_to_end(&mut reply))
            .await
            .unwrap();
        assert_eq!(reply, b"got 24 bytes");
        let got = within("server", server).await.unwrap();
        assert_eq!(got, b"hello, half-closed world");
        wait_until("connection ends", || proxy.stats().active == 0).await;
        proxy.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocked_cuts_and_refuses_then_restores() {
        let (echo, _server) = echo_server().await;
        let proxy = DelayProxy::start(any_port(), echo, Duration::from_millis(5), "part")
            .await
            .unwrap();
        let mut open = connect(proxy.local_addr()).await;
        round_trip(&mut open, b"before").await;
        assert_eq!(proxy.stats().active, 1);

        proxy.set_blocked(true);
        assert!(closed(&mut open).await, "open connection not cut");
        wait_until("cut connection gone", || proxy.stats().active == 0).await;

        let start = Instant::now();
        // Refused outright would count too; accepted, it must close at once.
        if let Ok(mut s) = TcpStream::connect(proxy.local_addr()).await {
            let _ = s.write_all(b"anyone?").await;
            assert!(closed(&mut s).await, "new connection served while blocked");
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "refusal not prompt"
        );
        assert_eq!(proxy.stats().active, 0);

        proxy.set_blocked(false);
        let mut s = connect(proxy.local_addr()).await;
        round_trip(&mut s, b"after").await;
        proxy.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_target_closes_client_and_keeps_serving() {
        // A bound socket that never listens: connections to it are refused,
        // and no other test can take its port while it is held.
        let reserved = tokio::net::TcpSocket::new_v4().unwrap();
        reserved.bind(any_port()).unwrap();
        let target = reserved.local_addr().unwrap();
        let proxy = DelayProxy::start(any_port(), target, Duration::ZERO, "dead")
            .await
            .unwrap();
        for _ in 0..2 {
            let mut s = connect(proxy.local_addr()).await;
            assert!(closed(&mut s).await);
        }
        assert_eq!(proxy.stats().accepted, 2);
        wait_until("no active", || proxy.stats().active == 0).await;
        proxy.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_closes_listener_and_connections() {
        let (echo, _server) = echo_server().await;
        let proxy = DelayProxy::start(any_port(), echo, Duration::from_millis(5), "stop")
            .await
            .unwrap();
        let addr = proxy.local_addr();
        let mut open = connect(addr).await;
        round_trip(&mut open, b"hi").await;

        within("shutdown", proxy.shutdown()).await;
        assert!(closed(&mut open).await, "open connection survived shutdown");
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_aborts_tasks() {
        let (echo, _server) = echo_server().await;
        let proxy = DelayProxy::start(any_port(), echo, Duration::ZERO, "drop")
            .await
            .unwrap();
        let addr = proxy.local_addr();
        let mut open = connect(addr).await;
        round_trip(&mut open, b"hi").await;
        drop(proxy);
        assert!(closed(&mut open).await, "open connection survived drop");
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "still accepting after drop");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

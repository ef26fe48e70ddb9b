//! The HTTP server task (TLS or plain, graceful on shutdown) and, with TLS,
//! the SIGHUP task that re-reads the certificate files.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, Instrument, Span};

use crate::api::tls::ServerTls;
use crate::api::{self, ApiShared, ApiState, NodeInfo};
use crate::config::Config;
use crate::node::assemble::Assembled;

/// The API's listening socket, before the server runs.
pub(super) struct Bound {
    pub(super) listener: TcpListener,
    pub(super) addr: SocketAddr,
    pub(super) tls: Option<Arc<ServerTls>>,
    /// The URL other nodes and clients use (the bound address with port 0).
    pub(super) public_url: String,
}

/// Loads the server certificate (if any) and binds `api.listen`, or takes
/// `listener`, bound already at that address.
pub(super) async fn bind(
    config: &Config,
    listener: Option<std::net::TcpListener>,
) -> anyhow::Result<Bound> {
    let tls = match crate::api::tls::ServerTlsFiles::from_config(&config.api) {
        Some(files) => Some(Arc::new(ServerTls::load(files)?)),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = match listener {
        Some(l) => {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)?
        }
        None => TcpListener::bind(config.api.listen)
            .await
            .with_context(|| format!("listen on {} (api.listen)", config.api.listen))?,
    };
    let addr = listener.local_addr()?;
    let public_url = if config.api.listen.port() == 0 {
        format!("{scheme}://{addr}")
    } else {
        config.api.public_url.clone()
    };
    Ok(Bound {
        listener,
        addr,
        tls,
        public_url,
    })
}

/// Starts the HTTP server (and the SIGHUP reload with TLS) in `tasks`.
pub(super) fn spawn(
    config: &Config,
    info: Arc<NodeInfo>,
    parts: &Assembled,
    bound: Bound,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
    span: &Span,
) -> anyhow::Result<()> {
    let peer_tls = crate::api::tls::ClientTls::for_peers(&config.api)?;
    let app = api::router(ApiState::new(ApiShared {
        info,
        client: parts.client.clone(),
        executor: parts.executor.clone(),
        router: parts.router.clone(),
        max_body_bytes: config.limits.max_body_bytes,
        max_batch: config.limits.max_batch,
        max_batch_body_bytes: config.limits.max_batch_body_bytes,
        forwarder: crate::api::Forwarder::new(
            Duration::from_millis(config.routing.forward_timeout_ms),
            &peer_tls,
        ),
        heartbeat_ms: config.executor.heartbeat_interval_ms,
        control: parts.control.clone(),
        drill_running: Arc::default(),
        auth: Arc::new(crate::api::auth::Auth::new(
            &config.auth,
            config.limits.per_token_rate_per_s,
        )),
        inflight: Arc::new(tokio::sync::Semaphore::new(
            config.limits.max_concurrent_requests,
        )),
        anonymous: Arc::new(tokio::sync::Semaphore::new(
            config.api.anonymous_concurrency,
        )),
        request_timeout: Duration::from_millis(config.limits.request_timeout_ms),
        peer_tls,
    }));
    let (listener, tls) = (bound.listener, bound.tls);
    if let Some(tls) = tls.clone() {
        // SIGHUP re-reads the certificate files (after a renewal).
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("install the SIGHUP handler")?;
        tasks.spawn(reload_on_hup(hup, tls, shutdown.clone()).instrument(span.clone()));
    }
    let shutdown = shutdown.clone();
    let limits = crate::api::conn::ServeLimits {
        max_connections: config.api.max_connections,
        header_read_timeout: Duration::from_millis(config.api.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(config.api.idle_timeout_ms),
    };
    let serve = crate::api::tls::serve(listener, app, tls, limits, shutdown);
    tasks.spawn(serve.instrument(span.clone()));
    Ok(())
}

async fn reload_on_hup(
    mut hup: tokio::signal::unix::Signal,
    tls: Arc<ServerTls>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = hup.recv() => match tls.reload() {
                Ok(()) => info!("SIGHUP: TLS certificate reloaded"),
                Err(e) => error!(error = %e,
                    "SIGHUP: TLS reload failed; the certificate in use stays"),
            },
            _ = shutdown.cancelled() => return,
        }
    }
}

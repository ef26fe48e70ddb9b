//! TLS (rustls on ring) for the API server and for every HTTP client a node
//! or the CLI opens, plus the throwaway PKI `swf dev --tls` and the tests use.
//!
//! - [`ServerTls`]: the API's certificate, key and optional client CA
//!   (mutual TLS). [`ServerTls::reload`] re-reads the files (on SIGHUP);
//!   connections already open keep their session, new handshakes get the new
//!   certificate. A reload that fails keeps the old configuration.
//! - [`serve`]: the one accept loop, HTTP or HTTPS (hyper http1, over
//!   tokio-rustls for HTTPS) with a graceful shutdown like `axum::serve`'s;
//!   each connection is served by `api::conn`.
//! - [`ClientTls`]: what a client trusts (a CA file; then only that CA) and
//!   the identity it presents when a peer asks for one.
//! - [`DevPki`]: a CA and one certificate for `localhost`/`127.0.0.1`/`::1`
//!   valid for both server and client authentication.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::api::conn::{serve_conn, ServeLimits};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS setting that cannot be used; the message names the key and file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("{key}: cannot read {}: {e}", path.display())))
}

/// Every certificate in a PEM file; at least one.
fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{key}: {} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{key}: {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        TlsError(format!(
            "{key}: {} holds no usable PEM private key: {e}",
            path.display()
        ))
    })
}

fn roots(key: &str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in read_certs(key, path)? {
        store.add(cert).map_err(|e| {
            TlsError(format!(
                "{key}: {} holds a certificate that cannot be a trust anchor: {e}",
                path.display()
            ))
        })?;
    }
    Ok(store)
}

/// The files the API serves TLS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

fn server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs("api.tls_cert", &files.cert)?;
    let key = read_key("api.tls_key", &files.key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS setup: {e}")))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots("api.client_ca", ca)?),
                provider,
            )
            .build()
            .map_err(|e| TlsError(format!("api.client_ca: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        TlsError(format!(
            "api.tls_key: {} does not fit the certificate in {}: {e}",
            files.key.display(),
            files.cert.display()
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl ServerTlsFiles {
    /// The server's TLS files, when the API serves HTTPS (`api.tls_cert` and `api.tls_key`).
    pub fn from_config(api: &crate::config::ApiConfig) -> Option<ServerTlsFiles> {
        Some(ServerTlsFiles {
            cert: api.tls_cert.clone()?,
            key: api.tls_key.clone()?,
            client_ca: api.client_ca.clone(),
        })
    }
}

/// The API's TLS configuration, swappable at run time.
#[derive(Debug)]
pub struct ServerTls {
    files: ServerTlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Reads and checks the files.
    pub fn load(files: ServerTlsFiles) -> Result<ServerTls, TlsError> {
        let config = server_config(&files)?;
        Ok(ServerTls {
            files,
            current: RwLock::new(config),
        })
    }

    /// Re-reads the files; on error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is set) until
/// `shutdown`, then lets open requests finish (idle keep-alive connections
/// close at once). Every connection's task belongs to this server's
/// `JoinSet`, which is drained before it returns; at most
/// `limits.max_connections` are open at once, and each connection is
/// bounded in time as `api::conn` says (header read, keep-alive idle).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<ServerTls>>,
    limits: ServeLimits,
    shutdown: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            p = slots.clone().acquire_owned() => p.expect("the slot semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            // Reap finished connections so the set holds only open ones.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        let app = app.clone();
        let watcher = graceful.watcher();
        let stop = shutdown.clone();
        conns.spawn(async move {
            let _slot = permit;
            let Some(acceptor) = acceptor else {
                return serve_conn(tcp, app, watcher, limits, peer).await;
            };
            let stream = tokio::select! {
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                _ = stop.cancelled() => return,
            };
            serve_conn(stream, app, watcher, limits, peer).await
        });
    }
    drop(listener);
    graceful.shutdown().await;
    while conns.join_next().await.is_some() {}
}

/// How long an HTTP client keeps an idle connection for reuse: below the
/// API server's default idle timeout (`api.idle_timeout_ms`, 60 s).
const IDLE_POOLED: std::time::Duration = std::time::Duration::from_secs(30);

/// What an HTTP client trusts and presents.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// When set, the only trust anchors (no built-in web roots).
    roots: Option<Vec<reqwest::Certificate>>,
    identity: Option<reqwest::Identity>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.roots.is_some())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    /// `ca`: trust only the certificates in this PEM file (instead of the
    /// built-in web roots). `identity`: certificate and key PEM files
    /// presented to servers that ask for a client certificate.
    /// `keys` name the settings in errors, e.g. `("api.peer_ca", "api.tls_cert", "api.tls_key")`.
    pub fn from_files(
        ca: Option<&Path>,
        identity: Option<(&Path, &Path)>,
        keys: (&str, &str, &str),
    ) -> Result<ClientTls, TlsError> {
        let roots = match ca {
            Some(p) => {
                let pem = read(keys.0, p)?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| TlsError(format!("{}: {}: {e}", keys.0, p.display())))?;
                if certs.is_empty() {
                    return Err(TlsError(format!(
                        "{}: {} holds no PEM certificate",
                        keys.0,
                        p.display()
                    )));
                }
                Some(certs)
            }
            None => None,
        };
        let identity = match identity {
            Some((cert, key)) => {
                let mut pem = read(keys.1, cert)?;
                pem.push(b'\n');
                pem.extend(read(keys.2, key)?);
                Some(reqwest::Identity::from_pem(&pem).map_err(|e| {
                    TlsError(format!(
                        "{} / {}: {} and {} do not make a client identity: {e}",
                        keys.1,
                        keys.2,
                        cert.display(),
                        key.display()
                    ))
                })?)
            }
            None => None,
        };
        Ok(ClientTls { roots, identity })
    }

    /// What a node trusts (`api.peer_ca`) and presents (`api.tls_cert`, `api.tls_key`)
    /// when it calls other nodes.
    pub fn for_peers(api: &crate::config::ApiConfig) -> Result<ClientTls, TlsError> {
        let identity = api.tls_cert.as_deref().zip(api.tls_key.as_deref());
        ClientTls::from_files(
            api.peer_ca.as_deref(),
            identity,
            ("api.peer_ca", "api.tls_cert", "api.tls_key"),
        )
    }

    /// A reqwest builder with this trust and identity applied.
    pub fn builder(&self) -> reqwest::ClientBuilder {
        // Idle connections are dropped before a server of ours closes them
        // (`api.idle_timeout_ms`, 60 s by default): a request sent on a
        // connection the server is closing fails unanswered.
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .pool_idle_timeout(IDLE_POOLED);
        if let Some(roots) = &self.roots {
            b = b.tls_built_in_root_certs(false);
            for cert in roots {
                b = b.add_root_certificate(cert.clone());
            }
        }
        if let Some(id) = &self.identity {
            b = b.identity(id.clone());
        }
        b
    }

    /// [`ClientTls::builder`] that also sends `authorization` with every request.
    pub fn builder_with_auth(
        &self,
        authorization: Option<&reqwest::header::HeaderValue>,
    ) -> reqwest::ClientBuilder {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(v) = authorization {
            headers.insert(reqwest::header::AUTHORIZATION, v.clone());
        }
        self.builder().default_headers(headers)
    }
}

/// The `Authorization: Bearer` value for a token, marked sensitive (never logged).
pub fn bearer(token: &str) -> Result<reqwest::header::HeaderValue, TlsError> {
    let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| TlsError("the token holds characters an HTTP header cannot".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// An error and its causes on one line (reqwest's own message omits why a
/// connection failed, e.g. a certificate from an unknown CA).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// How a command is let into an API: its token, what it trusts and
/// what it presents.
#[derive(Debug, clap::Args, Clone, Default)]
pub struct AccessArgs {
    /// API token (sent as `Authorization: Bearer`).
    #[arg(long, env = "SWF_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate to verify the API's certificate against (instead of
    /// the built-in web roots), e.g. `.swf/dev/tls/ca.pem` for `swf dev --tls`.
    #[arg(long, env = "SWF_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for nodes that require one (api.client_ca).
    #[arg(long, env = "SWF_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM key of --client-cert.
    #[arg(long, env = "SWF_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl AccessArgs {
    pub fn client(&self) -> Result<ClientTls, TlsError> {
        ClientTls::from_files(
            self.ca_cert.as_deref(),
            self.client_cert.as_deref().zip(self.client_key.as_deref()),
            ("--ca-cert", "--client-cert", "--client-key"),
        )
    }
}

#[cfg(all(test, feature = "dev"))]
mod tests {
    use super::*;
    use crate::dev::pki::DevPki;

    #[test]
    fn dev_pki_loads_as_server_and_client_config_and_is_reused() {
        let dir = std::env::temp_dir().join(format!("swf-pki-{}", uuid::Uuid::new_v4()));
        let a = DevPki::ensure(&dir, "test CA").unwrap();
        let before = std::fs::read(&a.cert).unwrap();
        let b = DevPki::ensure(&dir, "test CA").unwrap();
        assert_eq!(
            before,
            std::fs::read(&b.cert).unwrap(),
            "reused, not regenerated"
        );
        let files = ServerTlsFiles {
            cert: a.cert.clone(),
            key: a.key.clone(),
            client_ca: Some(a.ca_cert.clone()),
        };
        let tls = ServerTls::load(files).unwrap();
        tls.reload().unwrap();
        ClientTls::from_files(
            Some(&a.ca_cert),
            Some((&a.cert, &a.key)),
            ("ca", "cert", "key"),
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_name_the_key_and_file() {
        let dir = std::env::temp_dir().join(format!("swf-pki-{}", uuid::Uuid::new_v4()));
        let pki = DevPki::ensure(&dir, "test CA").unwrap();
        let missing = dir.join("nope.pem");
        let err = ServerTls::load(ServerTlsFiles {
            cert: missing.clone(),
            key: pki.key.clone(),
            client_ca: None,
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("api.tls_cert") && err.contains("nope.pem"),
            "{err}"
        );
        // A key file given as the certificate: no certificate in it.
        let err = ServerTls::load(ServerTlsFiles {
            cert: pki.key.clone(),
            key: pki.key.clone(),
            client_ca: None,
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        // A key that belongs to another certificate.
        let other = DevPki::ensure(&dir.join("other"), "other CA").unwrap();
        let err = ServerTls::load(ServerTlsFiles {
            cert: pki.cert.clone(),
            key: other.key.clone(),
            client_ca: None,
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not fit"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Serving: bind, accept, TLS (rustls via `kfp-certs`), HTTP/1.1 and HTTP/2 (hyper-util's auto
//! builder), and graceful shutdown on SIGTERM/SIGINT: stop accepting, end watches (they get the
//! end of their stream and re-watch elsewhere), let in-flight requests finish (bounded).
//!
//! Connections are bounded in time: the TLS handshake (10 s), each request's headers (the
//! header-read timeout, which also ends HTTP/1.1 connections idle between requests), and any
//! connection with no request in flight for the idle timeout (HTTP/1.1 and HTTP/2, TLS
//! connections that never send a request included). The verified client certificate chain goes
//! into every request's extensions for the authenticators.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::Service;

use crate::app::{App, AppService};
use crate::auth::PeerCertificates;
use crate::body::Body;
use crate::front_proxy::VerifiedClient;

/// How long in-flight requests get after a shutdown signal.
pub const DRAIN: Duration = Duration::from_secs(20);

/// Marks a request that came in on the plain-HTTP KFP listener (`--kfp-http-listen`): only KFP
/// routes are served there; every other path is 404, so the Kubernetes API never goes out
/// unencrypted.
#[derive(Clone, Copy, Debug)]
pub struct PlainKfpListener;

/// Accepts connections until `shutdown` flips, then drains.
/// `cas` classifies each connection's client certificate at the handshake, and again on a
/// request after either CA bundle changed or the certificate expired ([`ConnectionCertificate`]).
pub async fn run(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    cas: Option<Arc<kfp_certs::ClientCas>>,
    app: Arc<App>,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, Some((TlsAcceptor::from(tls), cas)), app, shutdown).await
}

/// The plain-HTTP listener for in-mesh KFP clients behind a trusted proxy: KFP routes only.
pub async fn run_kfp_plain(listener: TcpListener, app: Arc<App>, shutdown: watch::Receiver<bool>) {
    accept_loop(listener, None, app, shutdown).await
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<(TlsAcceptor, Option<Arc<kfp_certs::ClientCas>>)>,
    app: Arc<App>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some((acceptor, cas)) = acceptor else {
                serve_connection(TokioIo::new(tcp), app, watcher, peer, None, true).await;
                return;
            };
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let certs = tls.get_ref().1.peer_certificates().map(|c| {
                let chain: Vec<_> = c.iter().map(|d| d.clone().into_owned()).collect();
                let verified = cas
                    .as_ref()
                    .and_then(|cas| cas.classify(&chain))
                    .map(|id| VerifiedClient(Arc::new(id)));
                let generation = verified.as_ref().map_or(0, |v| v.0.generation);
                ConnectionCertificate {
                    chain: PeerCertificates(Arc::new(chain)),
                    verified: std::sync::Mutex::new((generation, verified)),
                    cas,
                }
            });
            serve_connection(TokioIo::new(tls), app, watcher, peer, certs, false).await;
        });
    }
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => tracing::warn!("drain timed out"),
    }
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: std::sync::Mutex<tokio::time::Instant>,
}

impl Activity {
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        Some(since.elapsed())
    }
}

/// Counts a request as in flight until its response body is done (a watch stays in flight for
/// as long as it streams).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection's client certificate and what it was verified as. kube-apiserver verifies
/// client certificates per request against the CA bundles in force; here the handshake's
/// classification is kept and redone only when a bundle changed since or the certificate
/// expired, so a CA that leaves a bundle stops counting on open connections too (the
/// aggregator keeps its HTTP/2 connections for long).
struct ConnectionCertificate {
    chain: PeerCertificates,
    /// The bundles' generation it was classified at, and the result.
    verified: std::sync::Mutex<(u64, Option<VerifiedClient>)>,
    cas: Option<Arc<kfp_certs::ClientCas>>,
}

impl ConnectionCertificate {
    fn current(&self) -> Option<VerifiedClient> {
        let cas = self.cas.as_ref()?;
        let mut slot = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let generation = cas.generation();
        let expired = slot
            .1
            .as_ref()
            .is_some_and(|v| v.0.not_after < std::time::SystemTime::now());
        if slot.0 != generation || expired {
            let verified = cas
                .classify(&self.chain.0)
                .map(|id| VerifiedClient(Arc::new(id)));
            *slot = (generation, verified);
        }
        slot.1.clone()
    }
}

async fn serve_connection<I>(
    io: I,
    app: Arc<App>,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
    certs: Option<ConnectionCertificate>,
    plain: bool,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let limits = app.limits.clone();
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        idle_since: std::sync::Mutex::new(tokio::time::Instant::now()),
    });
    let stack = AppService::new(app);
    let act = activity.clone();
    let service =
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let guard = InFlight::new(&act);
            if let Some(c) = &certs {
                req.extensions_mut().insert(c.chain.clone());
                if let Some(v) = c.current() {
                    req.extensions_mut().insert(v);
                }
            }
            if plain {
                req.extensions_mut().insert(PlainKfpListener);
            }
            let mut stack = stack.clone();
            async move {
                let resp = match stack.call(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked {
                    body,
                    _in_flight: guard,
                }))
            }
        });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(250);
    let conn = builder.serve_connection_with_upgrades(io, service);
    let conn = watcher.watch(conn.into_owned());
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    loop {
        let check = tokio::time::sleep(idle / 4);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = check => {
                if activity.idle_for().is_some_and(|d| d >= idle) {
                    tracing::debug!(%peer, "closing an idle connection");
                    return;
                }
            }
        }
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

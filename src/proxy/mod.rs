//! The data path: accept, TLS handshake with client verification, HTTP/1.1 or HTTP/2 with
//! hyper, forward.
//!
//! [`serve`] takes a bound listener and a shutdown token, so tests bind `127.0.0.1:0` and run in
//! parallel. Limits: at most `listener.max_connections` connections are open (beyond that,
//! accepting waits — the kernel backlog holds new peers); a handshake must finish within
//! `listener.handshake_timeout` (a silent peer is dropped then); request heads must arrive within
//! `header_read_timeout`; a connection with no request in flight for `idle_timeout` is closed.
//!
//! A refused client never gets HTTP: the handshake fails with an alert. So that the client can
//! read it (TLS 1.3 clients learn of a refused certificate only after their Finished, usually
//! while already sending a request), the alert is flushed, the write side shut down and the
//! peer's remaining bytes drained briefly before closing; closing with unread data would make
//! the kernel send a reset that overtakes the alert.

pub mod error;
pub mod forward;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::server::Acceptor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{Config, HeadersConfig, ListenerConfig};
use crate::metrics::Metrics;
use crate::net;
use crate::tls::verify::with_rejection_slot;
use crate::tls::{ClientIdentity, PolicySet, Reason};
use forward::{Activity, Connection};
use upstream::Upstream;

/// How long in-flight requests may take to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// After a refused handshake: how long, and how much, to drain from the peer.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// Everything the data path needs, immutable once built.
pub struct Proxy {
    pub policies: PolicySet,
    pub listener: ListenerConfig,
    pub headers: HeadersConfig,
    pub upstream: Upstream,
    pub response_timeout: Duration,
    pub access_log: bool,
    pub drain_timeout: Duration,
    http: auto::Builder<TokioExecutor>,
}

impl Proxy {
    pub fn new(config: &Config, policies: PolicySet) -> Proxy {
        let l = &config.listener;
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(l.header_read_timeout)
            .max_buf_size(l.max_header_bytes)
            .keep_alive(true);
        http.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(l.max_header_bytes).unwrap_or(u32::MAX))
            // RFC 8441: WebSockets over HTTP/2, translated to HTTP/1.1 upgrades upstream.
            .enable_connect_protocol();
        if !l.http2 {
            http = http.http1_only();
        }
        Proxy {
            policies,
            listener: l.clone(),
            headers: config.headers.clone(),
            upstream: Upstream::new(&config.upstream),
            response_timeout: config.upstream.response_timeout,
            access_log: config.log.access_log,
            drain_timeout: DRAIN_TIMEOUT,
            http,
        }
    }
}

/// What the accept loop serves: the current generation of settings — replaced as a whole by a
/// reload, while connections keep the generation they started with — plus the process-wide
/// metrics and readiness.
pub struct Live {
    pub current: ArcSwap<Proxy>,
    pub metrics: Arc<Metrics>,
    /// True while listening and not draining (`/readyz`).
    pub ready: AtomicBool,
}

impl Live {
    pub fn new(proxy: Proxy, metrics: Arc<Metrics>) -> Arc<Live> {
        metrics.set_certificates(&proxy.policies);
        Arc::new(Live {
            current: ArcSwap::from_pointee(proxy),
            metrics,
            ready: AtomicBool::new(false),
        })
    }
}

/// Serves `listener` until `shutdown` is cancelled, then stops accepting, lets connections
/// finish their in-flight requests (up to `drain_timeout`) and returns. `listener.address` and
/// `max_connections` are taken from the generation current at start: they cannot change live.
pub async fn serve(listener: TcpListener, live: Arc<Live>, shutdown: CancellationToken) {
    let first = live.current.load_full();
    let limit = Arc::new(Semaphore::new(first.listener.max_connections));
    let drain_timeout = first.drain_timeout;
    drop(first);
    live.ready.store(true, Ordering::Release);
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("the connection semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning; connections that close
                    // free descriptors.
                    warn!(%error, "accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        let proxy = live.current.load_full();
        if !net::allowed(&proxy.listener.allow_peers, peer.ip()) {
            // Closed before any TLS work: the gate is there to make unwanted peers cheap.
            live.metrics.peer_refused();
            debug!(%peer, "peer not in listener.allow_peers; closed");
            continue;
        }
        tracker.spawn(connection(
            stream,
            peer,
            proxy,
            live.metrics.clone(),
            shutdown.clone(),
            tracker.clone(),
            permit,
        ));
    }
    live.ready.store(false, Ordering::Release);
    drop(listener);
    tracker.close();
    info!(connections = tracker.len(), "shutting down: draining connections");
    if tokio::time::timeout(drain_timeout, tracker.wait()).await.is_err() {
        warn!(
            connections = tracker.len(),
            "drain timeout: closing remaining connections"
        );
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    _permit: OwnedSemaphorePermit,
) {
    let _open = metrics.connection_open();
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    let policies = &proxy.policies;
    let handshake = async move {
        let mut acceptor = LazyConfigAcceptor::new(Acceptor::default(), stream);
        let start = match (&mut acceptor).await {
            Ok(start) => start,
            Err(error) => return Err((error, acceptor.take_io())),
        };
        // The policy is chosen from the ClientHello, before the certificate request, so each
        // host advertises and verifies against its own CAs.
        let (id, policy) = policies.select(start.client_hello().server_name());
        start
            .into_stream(policy.server_config.clone())
            .into_fallible()
            .await
            .map(|tls| (id, tls))
            .map_err(|(error, io)| (error, Some(io)))
    };
    let tls = match tokio::time::timeout(proxy.listener.handshake_timeout, with_rejection_slot(handshake)).await {
        Err(_) => {
            metrics.handshake_failed(Reason::Timeout);
            debug!(%peer, reason = %Reason::Timeout, "handshake failed");
            return;
        }
        Ok((Err((error, io)), recorded)) => {
            let reason = Reason::of_handshake_error(&error, recorded);
            metrics.handshake_failed(reason);
            debug!(%peer, %reason, %error, "handshake failed");
            if let Some(io) = io {
                linger_close(io).await;
            }
            return;
        }
        Ok((Ok(accepted), _)) => accepted,
    };
    let (policy, tls) = tls;

    let (_, session) = tls.get_ref();
    // The verifier is mandatory, so a finished handshake has a verified chain; never forward
    // anything if that invariant were broken.
    let Some(leaf) = session.peer_certificates().and_then(|chain| chain.first()) else {
        warn!(%peer, "handshake finished without a client certificate; closing");
        return;
    };
    let identity = ClientIdentity::from_leaf(leaf);
    let sni = session.server_name().map(str::to_owned);
    let resumed = matches!(session.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    metrics.handshake_ok(started.elapsed().as_secs_f64(), resumed);
    debug!(
        %peer,
        sni = sni.as_deref().unwrap_or(""),
        policy = %proxy.policies.get(policy).name,
        subject = %identity.subject,
        resumed,
        alpn = ?session.alpn_protocol().map(String::from_utf8_lossy),
        handshake_ms = started.elapsed().as_secs_f64() * 1e3,
        "handshake ok"
    );

    let activity = Activity::new();
    let conn = Arc::new(Connection {
        proxy: proxy.clone(),
        peer: peer.ip(),
        peer_header: http::HeaderValue::from_str(&peer.ip().to_string())
            .expect("an IP address is a valid header value"),
        policy,
        sni,
        identity,
        activity: activity.clone(),
        metrics,
        tracker,
    });
    let service = service_fn(move |request| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(forward::handle(request, conn).await) }
    });

    let mut http = pin!(proxy.http.serve_connection_with_upgrades(TokioIo::new(tls), service));
    let idle_timeout = proxy.listener.idle_timeout;
    let mut closing = false;
    loop {
        let idle_at = activity
            .idle_deadline(idle_timeout)
            .unwrap_or_else(|| Instant::now() + idle_timeout);
        tokio::select! {
            result = http.as_mut() => {
                if let Err(error) = result {
                    debug!(%peer, %error, "connection ended with an error");
                }
                break;
            }
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                http.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_at.into()), if !closing => {
                if activity.idle_deadline(idle_timeout).is_some_and(|at| at <= Instant::now()) {
                    debug!(%peer, "idle timeout");
                    closing = true;
                    http.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Closes a connection whose handshake failed so that the peer reads our alert rather than a
/// reset: shut down our write side (after the alert rustls already wrote), then discard what the
/// peer still sends, bounded in time and bytes.
async fn linger_close(mut io: TcpStream) {
    let _ = io.flush().await;
    let _ = io.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

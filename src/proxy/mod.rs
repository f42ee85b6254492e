//! The data path: accept, TLS handshake with client verification, HTTP/1.1 or HTTP/2 with
//! hyper, forward.
//!
//! [`serve`] takes a bound listener and a shutdown token, so tests bind `127.0.0.1:0` and run in
//! parallel. Limits: at most `listener.max_connections` connections are open, and at most
//! `listener.max_handshakes` of them still in the TLS handshake (beyond either, accepting waits —
//! the kernel backlog holds new peers — so unauthenticated peers can never crowd out verified
//! ones); a handshake must finish within `listener.handshake_timeout` (a silent peer is dropped
//! then); request heads and idle connections are bounded as described in [`activity`]; every
//! connection is closed gracefully once `listener.max_connection_age` old or when its client's
//! verified chain expires.
//!
//! A reload publishes a new generation ([`Live::publish`]); every open connection then judges
//! its client's retained chain against the new policy for its SNI, and closes gracefully
//! (HTTP/1.1 after the current response, HTTP/2 with GOAWAY) if that policy refuses it
//! (revoked, CA no longer trusted, allow-list narrowed).
//!
//! A refused client never gets HTTP: the handshake fails with an alert. So that the client can
//! read it (TLS 1.3 clients learn of a refused certificate only after their Finished, usually
//! while already sending a request), the alert is flushed, the write side shut down and the
//! peer's remaining bytes drained briefly before closing; closing with unread data would make
//! the kernel send a reset that overtakes the alert.

mod access_log;
pub mod activity;
pub mod authority;
pub mod error;
pub mod forward;
pub mod headers;
pub mod proxy_protocol;
pub mod tunnel;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{Config, HeadersConfig, ListenerConfig};

/// The body type of every response the proxy sends (and of every upstream request).
pub(crate) type ProxyBody = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;
use crate::metrics::Metrics;
use crate::peers;
use crate::tls::coalesce::Coalesced;
use crate::tls::verify::with_handshake_notes;
use crate::tls::{PolicySet, Reason};
use activity::{Activity, Deadline, Watched};
use forward::Connection;
use headers::HeaderRules;
use upstream::Upstream;
/// After a refused handshake: how long, and how much, to drain from the peer.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// Everything the data path needs, immutable once built.
pub struct Proxy {
    pub policies: PolicySet,
    pub listener: ListenerConfig,
    pub headers: HeadersConfig,
    pub header_rules: HeaderRules,
    /// The top-level `[upstream]`.
    pub upstream: Upstream,
    /// Per `[[hosts]]` table: its own `[hosts.upstream]`, if any.
    pub host_upstreams: Vec<Option<Upstream>>,
    pub access_log: bool,
    pub drain_timeout: Duration,
    /// Auto-detects HTTP/1.1 or HTTP/2 (clients without ALPN).
    http: auto::Builder<TokioExecutor>,
    http1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl Proxy {
    /// Fails only on the upstream's TLS files (`upstream.ca`, client certificate).
    pub fn new(config: &Config, policies: PolicySet) -> Result<Proxy, crate::config::ConfigError> {
        let l = &config.listener;
        let mut http = auto::Builder::new(TokioExecutor::new());
        // hyper's header timer is off: `activity` enforces header_read_timeout and idle_timeout.
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(l.max_header_bytes)
            .keep_alive(true);
        http.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(l.max_header_bytes).unwrap_or(u32::MAX))
            // RFC 8441: WebSockets over HTTP/2, translated to HTTP/1.1 upgrades upstream.
            .enable_connect_protocol();
        // ALPN settles the protocol for almost every connection: serve it directly, without
        // reading a preface to detect it. Only a client without ALPN gets auto-detection.
        let http1 = http.clone().http1_only();
        let h2 = http.clone().http2_only();
        if !l.http2 {
            http = http.http1_only();
        }
        let upstream = Upstream::new(&config.upstream, &config.file)?;
        let host_upstreams = config
            .hosts
            .iter()
            .map(|h| h.upstream.as_ref().map(|u| Upstream::new(u, &config.file)).transpose())
            .collect::<Result<_, _>>()?;
        Ok(Proxy {
            policies,
            listener: l.clone(),
            headers: config.headers.clone(),
            header_rules: HeaderRules::new(&config.headers),
            upstream,
            host_upstreams,
            access_log: config.log.access_log,
            drain_timeout: l.drain_timeout,
            http,
            http1,
            h2,
        })
    }
}

impl Proxy {
    /// The backend of the policy a connection was verified under (one connection only ever
    /// carries requests for its own policy: the others get 421).
    pub(crate) fn upstream_for(&self, policy: crate::tls::PolicyId) -> &Upstream {
        match policy {
            crate::tls::PolicyId::Host(i) => self
                .host_upstreams
                .get(i)
                .and_then(Option::as_ref)
                .unwrap_or(&self.upstream),
            crate::tls::PolicyId::Default => &self.upstream,
        }
    }
}

/// What the accept loop serves: the current generation of settings — replaced as a whole by a
/// reload, while connections keep the generation they started with — plus the process-wide
/// metrics and readiness.
pub(crate) struct Live {
    pub current: ArcSwap<Proxy>,
    pub metrics: Arc<Metrics>,
    /// True while listening and not draining (`/readyz`).
    pub ready: AtomicBool,
    /// What open connections must react to: a new generation (re-judge the client), the drain
    /// starting (close gracefully) and ending (close now). One channel, so a connection task
    /// checks one thing per wake-up instead of one per event.
    events: watch::Sender<Events>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Events {
    generation: u64,
    draining: bool,
    drain_ended: bool,
}

impl Live {
    pub(crate) fn new(proxy: Proxy, metrics: Arc<Metrics>) -> Arc<Live> {
        metrics.set_certificates(&proxy.policies);
        Arc::new(Live {
            current: ArcSwap::from_pointee(proxy),
            metrics,
            ready: AtomicBool::new(false),
            events: watch::Sender::new(Events::default()),
        })
    }

    /// Makes `proxy` the generation new connections get, and has every open connection judge
    /// its client against it.
    pub(crate) fn publish(&self, proxy: Proxy) {
        self.current.store(Arc::new(proxy));
        self.events.send_modify(|e| e.generation += 1);
    }
}

/// What every connection task shares with the accept loop.
#[derive(Clone)]
struct Shared {
    live: Arc<Live>,
    tracker: TaskTracker,
}

/// Serves `listener` until `shutdown` is cancelled, then stops accepting, lets connections
/// finish their in-flight requests (up to `drain_timeout`) and returns. `listener.address` and
/// `max_connections` are taken from the generation current at start: they cannot change live.
pub(crate) async fn serve(listener: TcpListener, live: Arc<Live>, shutdown: CancellationToken) {
    let first = live.current.load_full();
    let connections = Arc::new(Semaphore::new(first.listener.max_connections));
    let handshakes = Arc::new(Semaphore::new(first.listener.max_handshakes));
    drop(first);
    if !shutdown.is_cancelled() {
        live.ready.store(true, Ordering::Release);
    }
    let shared = Shared {
        live: live.clone(),
        tracker: TaskTracker::new(),
    };
    loop {
        let permits = async {
            let connection = connections.clone().acquire_owned().await;
            let handshake = handshakes.clone().acquire_owned().await;
            (
                connection.expect("the connection semaphore is never closed"),
                handshake.expect("the handshake semaphore is never closed"),
            )
        };
        let (permit, handshake_permit) = tokio::select! {
            permits = permits => permits,
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
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Read before the generation itself, so a reload in between can only cause an extra
        // re-check, never a missed one.
        let generation = live.events.borrow().generation;
        let proxy = live.current.load_full();
        let l = &proxy.listener;
        if l.proxy_protocol {
            // The TCP peer is the load balancer: only listed ones may speak for clients.
            if !peers::allowed(&l.proxy_protocol_from, peer.ip()) {
                live.metrics.proxy_protocol_refused();
                debug!(%peer, "peer not in listener.proxy_protocol_from; closed");
                continue;
            }
        } else if !peers::allowed(&l.allow_peers, peer.ip()) {
            // Closed before any TLS work: the gate is there to make unwanted peers cheap.
            live.metrics.peer_refused();
            debug!(%peer, "peer not in listener.allow_peers; closed");
            continue;
        }
        // Boxed: the connection's state machine is ~14 KB (rustls and hyper state inline), and
        // spawning it by value copied it several times per connection.
        shared.tracker.spawn(Box::pin(connection(
            stream,
            peer,
            proxy,
            generation,
            shared.clone(),
            permit,
            handshake_permit,
        )));
    }
    live.ready.store(false, Ordering::Release);
    live.events.send_modify(|e| e.draining = true);
    drop(listener);
    let drain_timeout = live.current.load().drain_timeout;
    let tracker = &shared.tracker;
    tracker.close();
    info!(connections = tracker.len(), "shutting down: draining connections");
    if tokio::time::timeout(drain_timeout, tracker.wait()).await.is_err() {
        warn!(
            connections = tracker.len(),
            "drain timeout: closing remaining connections"
        );
        live.events.send_modify(|e| e.drain_ended = true);
        // Tunnels and connections close at once when the drain ends; give them a moment to.
        let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
    }
}

/// After a failed accept (EMFILE, ENFILE, ENOBUFS), wait this long before the next.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

async fn connection(
    mut stream: TcpStream,
    mut peer: SocketAddr,
    proxy: Arc<Proxy>,
    generation: u64,
    shared: Shared,
    permit: OwnedSemaphorePermit,
    handshake_permit: OwnedSemaphorePermit,
) {
    let metrics = shared.live.metrics.clone();
    let _open = metrics.connection_open();
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    // One deadline for the PROXY header (if any) and the TLS handshake.
    let deadline = tokio::time::Instant::from_std(started + proxy.listener.handshake_timeout);
    if proxy.listener.proxy_protocol {
        match tokio::time::timeout_at(deadline, proxy_protocol::read_header(&mut stream)).await {
            Ok(Ok(source)) => peer = source.unwrap_or(peer),
            Ok(Err(error)) => {
                metrics.proxy_protocol_refused();
                debug!(%peer, %error, "PROXY protocol header refused; closed");
                return;
            }
            Err(_) => {
                metrics.proxy_protocol_refused();
                debug!(%peer, "no PROXY protocol header within handshake_timeout; closed");
                return;
            }
        }
        if !peers::allowed(&proxy.listener.allow_peers, peer.ip()) {
            metrics.peer_refused();
            debug!(%peer, "client (from the PROXY header) not in listener.allow_peers; closed");
            return;
        }
    }
    let policies = &proxy.policies;
    // hybrid-if-sent needs the key shares the client sent, which rustls does not show.
    let shares = match policies.default.variants.classical.is_some() {
        true => tokio::time::timeout_at(deadline, crate::tls::hello::peek_key_shares(&stream))
            .await
            .ok()
            .flatten(),
        false => None,
    };
    let handshake = async move {
        let mut acceptor = LazyConfigAcceptor::new(Acceptor::default(), Coalesced::new(stream));
        let start = match (&mut acceptor).await {
            Ok(start) => start,
            Err(error) => return Err((error, acceptor.take_io(), None)),
        };
        // The policy is chosen from the ClientHello, before the certificate request, so each
        // host advertises and verifies against its own CAs.
        let sni = start.client_hello().server_name().map(str::to_owned);
        let (id, policy) = policies.select(sni.as_deref());
        let groups = start.client_hello().named_groups().unwrap_or_default();
        let server_config = policy.config_for(groups, shares.as_deref()).clone();
        match start.into_stream(server_config).into_fallible().await {
            Ok(tls) => Ok((id, tls, sni)),
            Err((error, io)) => Err((error, Some(io), sni)),
        }
    };
    let handshake = tokio::time::timeout_at(deadline, with_handshake_notes(handshake)).await;
    drop(handshake_permit);
    let (tls, notes) = match handshake {
        Err(_) => {
            metrics.handshake_failed(Reason::Timeout);
            log_refusal(Reason::Timeout, peer, None, None, &"no complete handshake in time");
            return;
        }
        Ok((Err((error, io, sni)), notes)) => {
            let reason = Reason::of_handshake_error(&error, notes.rejection);
            metrics.handshake_failed(reason);
            log_refusal(reason, peer, sni.as_deref(), notes.presented.as_ref(), &error);
            if let Some(io) = io {
                linger_close(io).await;
            }
            return;
        }
        Ok((Ok(accepted), notes)) => (accepted, notes),
    };
    let (policy, tls, sni) = tls;

    let (_, session) = tls.get_ref();
    // The verifier is mandatory, so a finished handshake has a verified chain; never forward
    // anything if that invariant were broken.
    let Some(chain) = session.peer_certificates().filter(|chain| !chain.is_empty()) else {
        warn!(%peer, "handshake finished without a client certificate; closing");
        return;
    };
    let chain: Vec<CertificateDer<'static>> = chain.iter().map(|c| c.clone().into_owned()).collect();
    let identity = proxy.policies.get(policy).verifier.identity(&chain[0]);
    let resumed = matches!(session.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    // Some(true): h2, Some(false): http/1.1, None: no ALPN.
    let alpn_h2 = session.alpn_protocol().map(|p| p == b"h2");
    let h2 = alpn_h2 == Some(true);
    let handshake_done = Instant::now();
    metrics.handshake_ok(started.elapsed().as_secs_f64(), resumed);
    metrics.negotiated(
        match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
            _ => "1.3",
        },
        group_name(session.negotiated_key_exchange_group().map(|g| g.name())),
    );
    debug!(
        %peer,
        sni = sni.as_deref().unwrap_or(""),
        policy = %proxy.policies.get(policy).name,
        subject = %identity.subject,
        resumed,
        alpn = ?session.alpn_protocol().map(String::from_utf8_lossy),
        handshake_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        "handshake ok"
    );

    // The connection ends gracefully at the first of: its maximum age, its client chain's
    // expiry (a resumed session knows it from its ticket).
    let mut close_at = handshake_done + proxy.listener.max_connection_age;
    if let Some(not_after) = notes.chain_not_after {
        let left = not_after.saturating_sub(unix_now()).saturating_add(1);
        close_at = close_at.min(handshake_done + Duration::from_secs(left.min(u64::from(u32::MAX))));
    }

    let activity = Activity::new();
    let sni_for_lifetime = sni.clone();
    let conn = Arc::new(Connection {
        proxy: proxy.clone(),
        peer: peer.ip(),
        peer_header: http::HeaderValue::from_str(&peer.ip().to_string())
            .expect("an IP address is a valid header value"),
        policy,
        sni,
        tls_version: match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
            _ => "1.3",
        },
        resumed,
        identity,
        activity: activity.clone(),
        metrics,
        tracker: shared.tracker.clone(),
        permit: Arc::new(permit),
        lifetime: Arc::new(Lifetime {
            live: shared.live.clone(),
            sni: sni_for_lifetime,
            chain,
            generation,
            close_at,
        }),
    });
    let service = {
        let conn = conn.clone();
        service_fn(move |request| {
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(forward::handle(request, conn).await) }
        })
    };

    let io = TokioIo::new(Watched::new(tls, activity.clone(), !h2));
    let builder = match alpn_h2 {
        Some(true) => &proxy.h2,
        Some(false) => &proxy.http1,
        None => &proxy.http,
    };
    let mut http = pin!(builder.serve_connection_with_upgrades(io, service));
    let listener = &proxy.listener;
    let mut events = shared.live.events.subscribe();
    let mut seen = Events {
        generation,
        ..Events::default()
    };
    // The state at subscription counts as news: a drain may already have begun.
    events.mark_changed();
    let mut watching = true;
    let mut closing: Option<Instant> = None;
    loop {
        // Any change of state (a request starts or ends, a head begins) moves the deadline no
        // earlier than `recheck` from now: waking then at the latest keeps every deadline
        // within one `recheck` of its time without waking the task on each request.
        let recheck = Instant::now() + listener.header_read_timeout.min(listener.idle_timeout);
        let next = activity.deadline(handshake_done, listener.header_read_timeout, listener.idle_timeout, !h2);
        let wake_at = next.map_or(recheck, |(at, _)| at.min(recheck));
        let force_at = closing.unwrap_or(wake_at);
        tokio::select! {
            result = http.as_mut() => {
                if let Err(error) = result {
                    debug!(%peer, %error, "connection ended with an error");
                }
                break;
            }
            changed = events.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                let now = *events.borrow_and_update();
                if now.drain_ended {
                    break;
                }
                if now.draining && closing.is_none() {
                    closing = Some(Instant::now() + proxy.drain_timeout);
                    http.as_mut().graceful_shutdown();
                }
                if now.generation != seen.generation && closing.is_none() {
                    if let Err(reason) = still_trusted(&shared.live, conn.sni.as_deref(), &conn.lifetime.chain) {
                        info!(%peer, %reason, subject = %conn.identity.subject, "reloaded policy refuses this client: closing its connection");
                        closing = Some(Instant::now() + proxy.drain_timeout);
                        http.as_mut().graceful_shutdown();
                    }
                }
                seen = now;
            }
            () = tokio::time::sleep_until(close_at.into()), if closing.is_none() => {
                debug!(%peer, "connection reached max_connection_age or its certificate expired: closing");
                closing = Some(Instant::now() + proxy.drain_timeout);
                http.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(force_at.into()) => {
                if closing.is_some() {
                    debug!(%peer, "graceful close took too long: closing");
                    break;
                }
                match activity.deadline(handshake_done, listener.header_read_timeout, listener.idle_timeout, !h2) {
                    Some((at, Deadline::Head)) if at <= Instant::now() => {
                        // A head that is late is abandoned, as nginx's client_header_timeout does.
                        debug!(%peer, "header_read_timeout: closing");
                        break;
                    }
                    Some((at, Deadline::Idle)) if at <= Instant::now() => {
                        debug!(%peer, "idle timeout");
                        closing = Some(Instant::now() + proxy.drain_timeout);
                        http.as_mut().graceful_shutdown();
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The `group` label of `originguard_tls_negotiated_total`.
fn group_name(group: Option<rustls::NamedGroup>) -> &'static str {
    match group {
        Some(rustls::NamedGroup::X25519) => "X25519",
        Some(rustls::NamedGroup::X25519MLKEM768) => "X25519MLKEM768",
        Some(rustls::NamedGroup::secp256r1) => "secp256r1",
        Some(rustls::NamedGroup::secp384r1) => "secp384r1",
        Some(rustls::NamedGroup::secp521r1) => "secp521r1",
        Some(_) => "other",
        // A resumed TLS 1.2 session without (EC)DHE.
        None => "none",
    }
}

/// Refused handshakes are logged at `warn`, at most one line a second per reason; the next
/// line says how many were left out (`left_out`). With the presented leaf's subject, issuer,
/// SHA-256 and notAfter: the line an operator greps when Cloudflare shows 525/526.
fn log_refusal(
    reason: Reason,
    peer: SocketAddr,
    sni: Option<&str>,
    presented: Option<&CertificateDer<'_>>,
    error: &dyn std::fmt::Display,
) {
    let Some(left_out) = REFUSALS.admit(reason, unix_now()) else {
        debug!(%peer, %reason, %error, "handshake refused");
        return;
    };
    let sni = sni.unwrap_or("");
    match presented.map(crate::tls::identity::Presented::of) {
        Some(cert) => warn!(
            %reason,
            %peer,
            sni,
            subject = %cert.subject,
            issuer = %cert.issuer,
            sha256 = %cert.sha256,
            not_after = %cert.not_after,
            left_out,
            %error,
            "handshake refused"
        ),
        None => warn!(%reason, %peer, sni, left_out, %error, "handshake refused"),
    }
}

/// Per-reason rate limit for [`log_refusal`]: one line per reason per second.
struct RateLimit {
    /// Per reason: the second (Unix + 1; 0 = never) of the last line, and lines left out since.
    second: [AtomicU64; Reason::COUNT],
    left_out: [AtomicU64; Reason::COUNT],
}

static REFUSALS: RateLimit = RateLimit::new();

impl RateLimit {
    const fn new() -> RateLimit {
        RateLimit {
            second: [const { AtomicU64::new(0) }; Reason::COUNT],
            left_out: [const { AtomicU64::new(0) }; Reason::COUNT],
        }
    }

    /// `Some(left out since the last line)` when a line may be written at `now` (Unix seconds).
    fn admit(&self, reason: Reason, now: u64) -> Option<u64> {
        let i = reason.index();
        let now = now + 1;
        let last = self.second[i].load(Ordering::Relaxed);
        if last != now
            && self.second[i]
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.left_out[i].swap(0, Ordering::AcqRel));
        }
        self.left_out[i].fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// What ends a verified connection besides its own traffic — its maximum age or its client
/// chain's expiry, the end of the drain, a reload whose policy refuses the client — shared with
/// the tunnels upgraded from it, so a WebSocket never outlives what closes its connection.
pub(crate) struct Lifetime {
    live: Arc<Live>,
    sni: Option<String>,
    /// The client's chain (leaf first), re-judged on every reload.
    chain: Vec<CertificateDer<'static>>,
    /// The configuration generation the client was verified under.
    generation: u64,
    close_at: Instant,
}

impl Lifetime {
    /// Resolves, with the reason, when a tunnel of this connection must close.
    pub(crate) async fn ended(&self) -> &'static str {
        let mut events = self.live.events.subscribe();
        let mut seen = self.generation;
        events.mark_changed();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(self.close_at.into()) => {
                    return "max_connection_age or the client certificate's expiry";
                }
                changed = events.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                    let now = *events.borrow_and_update();
                    if now.drain_ended {
                        return "the drain ended";
                    }
                    if now.generation != seen {
                        seen = now.generation;
                        if still_trusted(&self.live, self.sni.as_deref(), &self.chain).is_err() {
                            return "the reloaded policy refuses the client";
                        }
                    }
                }
            }
        }
    }
}

/// Whether the current generation's policy for `sni` still accepts `chain` (leaf first).
fn still_trusted(live: &Live, sni: Option<&str>, chain: &[CertificateDer<'_>]) -> Result<(), Reason> {
    let current = live.current.load();
    let (_, policy) = current.policies.select(sni);
    policy
        .verifier
        .verify(&chain[0], &chain[1..], UnixTime::now())
        .map(|_| ())
        .map_err(|(reason, _)| reason)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Closes a connection whose handshake failed so that the peer reads our alert rather than a
/// reset: shut down our write side (after the alert rustls already wrote), then discard what the
/// peer still sends, bounded in time and bytes.
async fn linger_close(mut io: impl AsyncRead + AsyncWrite + Unpin) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_lines_are_limited_per_reason_per_second() {
        let limit = RateLimit::new();
        assert_eq!(limit.admit(Reason::UnknownIssuer, 100), Some(0));
        assert_eq!(limit.admit(Reason::UnknownIssuer, 100), None);
        assert_eq!(limit.admit(Reason::UnknownIssuer, 100), None);
        // Another reason in the same second has its own budget.
        assert_eq!(limit.admit(Reason::Expired, 100), Some(0));
        assert_eq!(limit.admit(Reason::NoCertificate, 100), Some(0));
        // The next second's line says how many were left out.
        assert_eq!(limit.admit(Reason::UnknownIssuer, 101), Some(2));
        assert_eq!(limit.admit(Reason::Expired, 101), Some(0));
        // Second 0 is a second like any other (the table stores second + 1; 0 means never).
        assert_eq!(limit.admit(Reason::Timeout, 0), Some(0));
        assert_eq!(limit.admit(Reason::Timeout, 0), None);
    }
}

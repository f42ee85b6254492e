//! The upstream client: HTTP/1.1 (or h2c with prior knowledge) over TCP or a Unix socket, or
//! HTTPS with ALPN choosing h2 or http/1.1.
//!
//! HTTP/1.1 connections are pooled by `hyper_util`'s legacy client and reused across requests
//! from every inbound connection; a new connection per request (hyper's gateway example) would
//! cost a TCP handshake on the hot path. Every HTTP/1.1 request names the upstream's own
//! authority, so they all share one pool whatever their `Host`.
//!
//! HTTP/2 is one connection per upstream that every request shares (Envoy's shape), each stream
//! with its own `:authority`: the legacy client keys its pool by the request's authority, which
//! on HTTP/2 is the client's host, so it opened one upstream connection per distinct host. The
//! connection is made on first use and replaced when it closes or stops answering PINGs;
//! another opens beside it only while it carries [`MAX_STREAMS`] streams. A request that never
//! left, or a body-less one the upstream refused unprocessed, is sent again: on a newer
//! connection, or on the same one after a `REFUSED_STREAM`.
//! Where ALPN decides, a connection that did not choose h2 turns this upstream to the HTTP/1.1
//! pool for the rest of its generation.
//!
//! HTTPS uses the same rustls and provider as the listener (no second TLS stack), verifying the
//! upstream against `upstream.ca` or the webpki roots.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::client::conn::http2;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};
use tower_service::Service;
use tracing::debug;

use super::ProxyBody;
use crate::config::{ConfigError, UpstreamConfig, UpstreamProtocol, UpstreamTarget, UpstreamTls};
use crate::tls::load;

/// Idle pooled connections are closed after this; backends commonly time out at 60–120 s.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often a request the upstream's HTTP/2 connection did not take is sent again.
const H2_RETRIES: usize = 2;

/// Streams a shared HTTP/2 connection carries at once before another connection is opened
/// beside it: RFC 9113 §6.5.2 recommends servers allow at least 100 (nginx 128, hyper 200, Go
/// 250), and long-lived streams (server-sent events, long polls) must not make every other
/// request queue behind them.
const MAX_STREAMS: usize = 100;

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("HTTP/1.1 exchange failed")]
    Http1(#[source] hyper_util::client::legacy::Error),
    #[error("connecting for HTTP/2 failed")]
    Connect(#[source] BoxError),
    #[error("HTTP/2 exchange failed")]
    Http2(#[source] hyper::Error),
}

impl UpstreamError {
    /// No connection could be made (refused, unreachable, timed out, TLS failed).
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Http1(e) => e.is_connect(),
            UpstreamError::Connect(_) => true,
            UpstreamError::Http2(_) => false,
        }
    }

    /// TLS with an `https://` upstream failed (its certificate refused, say).
    pub(crate) fn is_tls(&self) -> bool {
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            if e.is::<UpstreamTlsError>() {
                return true;
            }
            source = e.source();
        }
        false
    }
}

/// The client for one configured upstream.
#[derive(Clone, Debug)]
pub struct Upstream {
    transport: Transport,
    /// The upstream's own authority: the HTTP/1.1 pool's one key.
    authority: Authority,
    /// `:scheme` on HTTP/2.
    scheme: Scheme,
    response_timeout: Duration,
}

#[derive(Clone, Debug)]
enum Transport {
    /// Pooled HTTP/1.1 connections.
    Http1(Pool),
    /// One shared HTTP/2 connection, prior knowledge.
    H2c(Arc<H2Session>),
    /// `https://` with ALPN offering h2 and http/1.1: the shared connection while the upstream
    /// chooses h2; the pool (offering only http/1.1) for upgrades, which HTTP/2 cannot carry,
    /// and for everything once it chose http/1.1.
    Alpn { h2: Arc<H2Session>, http1: Pool },
}

#[derive(Clone, Debug)]
enum Pool {
    Tcp(Client<FixedTarget, ProxyBody>),
    Tls(Client<TlsTarget, ProxyBody>),
    Unix(Client<UnixConnector, ProxyBody>),
}

impl Pool {
    fn request(&self, request: Request<ProxyBody>) -> ResponseFuture {
        match self {
            Pool::Tcp(client) => client.request(request),
            Pool::Tls(client) => client.request(request),
            Pool::Unix(client) => client.request(request),
        }
    }
}

/// An exchange in flight: straight on the pool's future for HTTP/1.1 (the common path: no
/// state machine of ours around it), boxed for HTTP/2.
pub(crate) enum Exchange<'a> {
    Http1(ResponseFuture),
    H2(Pin<Box<dyn Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + 'a>>),
}

impl Future for Exchange<'_> {
    type Output = Result<Response<UpstreamBody>, UpstreamError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Exchange::Http1(future) => Pin::new(future)
                .poll(cx)
                .map_ok(|response| response.map(|body| UpstreamBody { body, _stream: None }))
                .map_err(UpstreamError::Http1),
            Exchange::H2(future) => future.as_mut().poll(cx),
        }
    }
}

/// The upstream's response body; on HTTP/2 it holds its stream's place on the connection until
/// it is read to the end or dropped.
pub(crate) struct UpstreamBody {
    body: Incoming,
    _stream: Option<StreamSlot>,
}

impl Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// One of a connection's [`MAX_STREAMS`] places, given back on drop.
#[derive(Debug)]
struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    /// A place on the connection whose open streams `count` counts, if it has one free.
    fn take(count: &Arc<AtomicUsize>) -> Option<StreamSlot> {
        if count.fetch_add(1, Ordering::AcqRel) < MAX_STREAMS {
            Some(StreamSlot(count.clone()))
        } else {
            count.fetch_sub(1, Ordering::AcqRel);
            None
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How the shared HTTP/2 connection is made.
#[derive(Clone, Debug)]
enum Connector {
    Tcp(FixedTarget),
    /// ALPN decides: a connection that did not choose h2 sends the upstream to HTTP/1.1.
    Tls(TlsTarget),
    Unix(UnixConnector),
}

/// A shared connection, numbered so that a request that found it going away drops that one
/// only; `streams` counts its open streams.
#[derive(Clone, Debug)]
struct Shared {
    serial: u64,
    sender: http2::SendRequest<ProxyBody>,
    streams: Arc<AtomicUsize>,
}

/// The HTTP/2 connections every request to the upstream shares: one, and another beside it
/// only while every open one carries [`MAX_STREAMS`] streams.
#[derive(Debug)]
struct H2Session {
    connector: Connector,
    builder: http2::Builder<TokioExecutor>,
    /// The connections, while they are open and not going away.
    current: Mutex<Vec<Shared>>,
    /// Connections made, for [`Shared::serial`].
    made: AtomicU64,
    /// Held while connecting, so concurrent first requests share one connection; it keeps the
    /// last attempt's failure for the requests that waited for it.
    connecting: tokio::sync::Mutex<Option<Failure>>,
    /// Connection attempts finished.
    finished: AtomicU64,
    /// ALPN chose http/1.1: every request takes the HTTP/1.1 pool from now on.
    http1_only: AtomicBool,
}

impl H2Session {
    /// `response_timeout`: a connection that stops answering (its peer gone without a FIN or
    /// RST) is found by PING while streams are open, well inside it, and replaced — rather than
    /// taking every request until TCP gives up on it, minutes later.
    ///
    /// A PING goes out every quarter of it (at most every 10 s) and may take a quarter of it to
    /// be answered: an upstream whose event loop is merely busy for a while is not cut off.
    fn new(connector: Connector, response_timeout: Duration) -> Arc<H2Session> {
        let quarter = (response_timeout / 4).max(Duration::from_millis(100));
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(quarter.min(Duration::from_secs(10)))
            .keep_alive_timeout(quarter)
            .keep_alive_while_idle(false);
        Arc::new(H2Session {
            connector,
            builder,
            current: Mutex::new(Vec::new()),
            made: AtomicU64::new(0),
            connecting: tokio::sync::Mutex::new(None),
            finished: AtomicU64::new(0),
            http1_only: AtomicBool::new(false),
        })
    }

    /// An open connection with a free stream, and that stream; closed connections are let go.
    fn open(&self) -> Option<(Shared, StreamSlot)> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.retain(|shared| !shared.sender.is_closed());
        current
            .iter()
            .find_map(|shared| StreamSlot::take(&shared.streams).map(|slot| (shared.clone(), slot)))
    }

    /// A connection to send on and a stream on it, made if no open one has a free stream;
    /// `None`: ALPN chose http/1.1.
    async fn sender(&self) -> Result<Option<(Shared, StreamSlot)>, UpstreamError> {
        if self.http1_only.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if let Some(sender) = self.open() {
            return Ok(Some(sender));
        }
        let finished = self.finished.load(Ordering::Acquire);
        let mut failure = self.connecting.lock().await;
        if let Some(sender) = self.open() {
            return Ok(Some(sender));
        }
        if self.http1_only.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if let Some(failure) = failure
            .as_ref()
            .filter(|_| self.finished.load(Ordering::Acquire) != finished)
        {
            // The attempt this request waited for failed: its error, not another wait in line
            // (a black-holed upstream would otherwise cost each waiter a connect timeout more).
            return Err(failure.error());
        }
        let made = self.connect().await;
        *failure = made.as_ref().err().map(Failure::of);
        self.finished.fetch_add(1, Ordering::AcqRel);
        made
    }

    /// Lets connection `serial` go: it is closing or going away.
    fn forget(&self, serial: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.retain(|shared| shared.serial != serial);
    }

    /// A new connection, stored beside the others, and a stream on it; `None`: ALPN chose
    /// http/1.1.
    async fn connect(&self) -> Result<Option<(Shared, StreamSlot)>, UpstreamError> {
        let sender = match &self.connector {
            Connector::Tcp(tcp) => {
                let io = tcp.clone().call(tcp.target.clone()).await;
                self.handshake(io.map_err(|e| UpstreamError::Connect(e.into()))?)
                    .await?
            }
            Connector::Unix(unix) => {
                let io = unix.clone().call(Uri::default()).await;
                self.handshake(io.map_err(|e| UpstreamError::Connect(e.into()))?)
                    .await?
            }
            Connector::Tls(tls) => {
                let io = tls
                    .clone()
                    .call(tls.tcp.target.clone())
                    .await
                    .map_err(UpstreamError::Connect)?;
                if !io.is_h2() {
                    debug!(target = %tls.tcp.target, "the upstream's ALPN chose http/1.1: HTTP/1.1 from now on");
                    self.http1_only.store(true, Ordering::Relaxed);
                    return Ok(None);
                }
                self.handshake(io).await?
            }
        };
        let shared = Shared {
            serial: self.made.fetch_add(1, Ordering::Relaxed),
            sender,
            streams: Arc::new(AtomicUsize::new(0)),
        };
        let slot = StreamSlot::take(&shared.streams).ok_or_else(|| UpstreamError::Connect("no stream free".into()))?;
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(shared.clone());
        Ok(Some((shared, slot)))
    }

    /// HTTP/2 over a new connection; the connection is driven by a task of its own.
    async fn handshake<T>(&self, io: T) -> Result<http2::SendRequest<ProxyBody>, UpstreamError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) = self.builder.handshake(io).await.map_err(UpstreamError::Http2)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        Ok(sender)
    }

    /// Sends on a shared connection, retrying (at most [`H2_RETRIES`] times) a request the
    /// connection never carried: one that never left (the connection was closing), or — when it
    /// has no body, so that it can be made again — one the upstream refused unprocessed
    /// (streams above a graceful GOAWAY's last stream id, RFC 9113 §6.8, go on a newer
    /// connection; a `REFUSED_STREAM`, §8.7, on the same one). nginx sends a GOAWAY every `keepalive_requests`
    /// (1000 by default), so this happens in steady state. A request whose body has started to
    /// leave is not retried: the body is gone. The price: a copy of each body-less request's
    /// head, kept until its response head arrives.
    async fn send(
        &self,
        (mut shared, mut slot): (Shared, StreamSlot),
        mut request: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut retries = 0;
        loop {
            let again = request.body().is_end_stream().then(|| bodiless_copy(&request));
            let mut error = match shared.sender.try_send_request(request).await {
                Ok(response) => {
                    return Ok(response.map(|body| UpstreamBody {
                        body,
                        _stream: Some(slot),
                    }))
                }
                Err(error) => error,
            };
            let refused;
            (request, refused) = match (error.take_message(), again) {
                // It never left: the connection is closing.
                (Some(request), _) => (request, Refused::Connection),
                (None, Some(again)) => match refused_unprocessed(error.error()) {
                    Some(refused) => (again, refused),
                    None => return Err(UpstreamError::Http2(error.into_error())),
                },
                (None, None) => return Err(UpstreamError::Http2(error.into_error())),
            };
            if retries == H2_RETRIES {
                return Err(UpstreamError::Http2(error.into_error()));
            }
            retries += 1;
            debug!(error = %error.error(), "upstream HTTP/2 connection did not take the request: retrying");
            if refused == Refused::Connection {
                // Closed or going away: no new request may take it.
                self.forget(shared.serial);
                (shared, slot) = match self.sender().await? {
                    Some(taken) => taken,
                    None => return Err(UpstreamError::Http2(error.into_error())),
                };
            }
        }
    }
}

/// A failed connection attempt, as the requests that waited for it report it.
#[derive(Debug)]
struct Failure {
    tls: bool,
    cause: String,
}

impl Failure {
    fn of(error: &UpstreamError) -> Failure {
        Failure {
            tls: error.is_tls(),
            cause: super::error::error_chain(error),
        }
    }

    fn error(&self) -> UpstreamError {
        let error = io::Error::other(format!("the attempt this request waited for failed: {}", self.cause));
        UpstreamError::Connect(match self.tls {
            true => Box::new(UpstreamTlsError(error)),
            false => Box::new(error),
        })
    }
}

/// The request again, for a request without a body (what HTTP/2 sends of it is its head).
fn bodiless_copy(request: &Request<ProxyBody>) -> Request<ProxyBody> {
    let mut copy = Request::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// What refused a stream the upstream did not process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// `REFUSED_STREAM` (RFC 9113 §8.7), e.g. over the upstream's concurrent-stream limit before
    /// its SETTINGS arrived: the connection is fine, and hyper now keeps to the limit.
    Stream,
    /// The connection is closing or going away (a graceful GOAWAY that did not cover the
    /// stream, or came before it).
    Connection,
}

/// Whether, and how, the upstream refused an HTTP/2 stream without processing it.
fn refused_unprocessed(error: &hyper::Error) -> Option<Refused> {
    let h2 = std::error::Error::source(error)?.downcast_ref::<h2::Error>()?;
    match h2.reason()? {
        _ if !h2.is_remote() => None,
        h2::Reason::NO_ERROR if h2.is_go_away() => Some(Refused::Connection),
        h2::Reason::REFUSED_STREAM if h2.is_reset() => Some(Refused::Stream),
        _ => None,
    }
}

impl Upstream {
    /// Builds the client; for `https://`, reads the CA and client certificate files (`file` is
    /// the config, named in errors).
    pub(crate) fn new(config: &UpstreamConfig, file: &Path) -> Result<Upstream, ConfigError> {
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let tcp = |authority: &Authority| {
            let mut http = HttpConnector::new();
            http.set_connect_timeout(Some(config.connect_timeout));
            http.set_nodelay(true);
            let target = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(authority.clone())
                .path_and_query("/")
                .build()
                .expect("scheme, authority and path are all set");
            FixedTarget { http, target }
        };
        let h2c = config.protocol == UpstreamProtocol::H2c;
        let (transport, authority, scheme) = match &config.target {
            UpstreamTarget::Tcp(authority) => {
                let transport = match h2c {
                    true => Transport::H2c(H2Session::new(Connector::Tcp(tcp(authority)), config.response_timeout)),
                    false => Transport::Http1(Pool::Tcp(builder.build(tcp(authority)))),
                };
                (transport, authority.clone(), Scheme::HTTP)
            }
            UpstreamTarget::Https(authority) => {
                let name = server_name(&config.tls, authority, file)?;
                let connector = |alpn: &[&[u8]]| -> Result<TlsTarget, ConfigError> {
                    Ok(TlsTarget {
                        tcp: tcp(authority),
                        tls: client_config(&config.tls, alpn, file)?.into(),
                        name: name.clone(),
                        timeout: config.connect_timeout,
                    })
                };
                let http1 = Pool::Tls(builder.build(connector(&[b"http/1.1"])?));
                let transport = match config.protocol {
                    UpstreamProtocol::Alpn => Transport::Alpn {
                        h2: H2Session::new(
                            Connector::Tls(connector(&[b"h2", b"http/1.1"])?),
                            config.response_timeout,
                        ),
                        http1,
                    },
                    _ => Transport::Http1(http1),
                };
                (transport, authority.clone(), Scheme::HTTPS)
            }
            UpstreamTarget::Unix(path) => {
                let connector = UnixConnector {
                    path: Arc::new(path.clone()),
                    timeout: config.connect_timeout,
                };
                let transport = match h2c {
                    true => Transport::H2c(H2Session::new(Connector::Unix(connector), config.response_timeout)),
                    false => Transport::Http1(Pool::Unix(builder.build(connector))),
                };
                // The authority only keys the pool; Host comes from the client's request.
                (transport, Authority::from_static("localhost"), Scheme::HTTP)
            }
        };
        Ok(Upstream {
            transport,
            authority,
            scheme,
            response_timeout: config.response_timeout,
        })
    }

    /// Time allowed until the response head.
    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Whether an HTTP/1.1 upgrade can reach the upstream: there are HTTP/1.1 connections.
    pub(crate) fn upgrades(&self) -> bool {
        !matches!(self.transport, Transport::H2c(_))
    }

    /// Sends the client's request (`parts` already sanitized, `host` its validated host) and
    /// waits for the response head. `upgrade`: it asks to switch protocols, which needs
    /// HTTP/1.1.
    ///
    /// On HTTP/1.1 the host travels as `Host` and the URI names the upstream (the pool's key);
    /// on HTTP/2 it is `:authority` and there is no `host` header, which strict servers such as
    /// nginx refuse beside `:authority` (RFC 9113 §8.3.1).
    pub(crate) fn send(&self, parts: Parts, body: ProxyBody, host: HeaderValue, upgrade: bool) -> Exchange<'_> {
        match &self.transport {
            Transport::Http1(pool) => Exchange::Http1(self.http1(pool, parts, body, host)),
            Transport::Alpn { http1, .. } if upgrade => Exchange::Http1(self.http1(http1, parts, body, host)),
            // An upgrade to an h2c upstream goes as an ordinary request (hyper drops `Upgrade`).
            Transport::H2c(h2) => Exchange::H2(Box::pin(async move {
                match h2.sender().await? {
                    Some(taken) => self.h2(h2, taken, parts, body, host).await,
                    None => Err(UpstreamError::Connect("an h2c connection turned to HTTP/1.1".into())),
                }
            })),
            Transport::Alpn { h2, http1 } => Exchange::H2(Box::pin(async move {
                match h2.sender().await? {
                    Some(taken) => self.h2(h2, taken, parts, body, host).await,
                    None => Exchange::Http1(self.http1(http1, parts, body, host)).await,
                }
            })),
        }
    }

    fn http1(&self, pool: &Pool, mut parts: Parts, body: ProxyBody, host: HeaderValue) -> ResponseFuture {
        parts.version = Version::HTTP_11;
        parts.uri = uri(Scheme::HTTP, self.authority.clone(), &parts.uri);
        parts.headers.insert(header::HOST, host);
        pool.request(Request::from_parts(parts, body))
    }

    async fn h2(
        &self,
        session: &H2Session,
        taken: (Shared, StreamSlot),
        mut parts: Parts,
        body: ProxyBody,
        host: HeaderValue,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let authority = Authority::try_from(host.as_bytes()).unwrap_or_else(|_| self.authority.clone());
        parts.version = Version::HTTP_2;
        parts.uri = uri(self.scheme.clone(), authority, &parts.uri);
        parts.headers.remove(header::HOST);
        session.send(taken, Request::from_parts(parts, body)).await
    }
}

/// `scheme://authority` and the incoming request's path and query.
fn uri(scheme: Scheme, authority: Authority, incoming: &Uri) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    parts.path_and_query = Some(
        incoming
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).expect("scheme, authority and path are all set")
}

/// The name to send as SNI and verify: `server_name`, or the URL's host.
fn server_name(tls: &UpstreamTls, authority: &Authority, file: &Path) -> Result<ServerName<'static>, ConfigError> {
    let (key, name) = match &tls.server_name {
        Some(name) => ("server_name", name.as_str()),
        None => ("url", authority.host().trim_start_matches('[').trim_end_matches(']')),
    };
    ServerName::try_from(name.to_string()).map_err(|_| {
        ConfigError::new(
            file,
            format!("{}.{key}", tls.key),
            format!("{name:?} is not a DNS name or IP address to verify the upstream's certificate against"),
        )
    })
}

/// The TLS client for an `https://` upstream: its CAs (or the webpki roots), its optional client
/// certificate, the given ALPN protocols. Bad files are config errors, found at startup.
fn client_config(tls: &UpstreamTls, alpn: &[&[u8]], file: &Path) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    let key = |k: &str| format!("{}.{k}", tls.key);
    let mut roots = rustls::RootCertStore::empty();
    if tls.ca.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for (i, path) in tls.ca.iter().enumerate() {
        for ca in load::certificates(path).map_err(|e| ConfigError::new(file, key(&format!("ca[{i}]")), e))? {
            roots
                .add(ca)
                .map_err(|e| ConfigError::new(file, key(&format!("ca[{i}]")), format!("{}: {e}", path.display())))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::server::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(file, key("url"), e))?
        .with_root_certificates(roots);
    let mut config = match &tls.client_certificate {
        None => builder.with_no_client_auth(),
        Some((cert, private_key)) => {
            let chain = load::certificates(cert).map_err(|e| ConfigError::new(file, key("client_certificate"), e))?;
            let private_key =
                load::private_key(private_key).map_err(|e| ConfigError::new(file, key("client_key"), e))?;
            builder.with_client_auth_cert(chain, private_key).map_err(|e| {
                ConfigError::new(file, key("client_key"), format!("does not fit client_certificate: {e}"))
            })?
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Connects every request to the configured TCP upstream, whatever authority its URI names.
#[derive(Clone, Debug)]
pub(crate) struct FixedTarget {
    http: HttpConnector,
    target: Uri,
}

impl Service<Uri> for FixedTarget {
    type Response = <HttpConnector as Service<Uri>>::Response;
    type Error = <HttpConnector as Service<Uri>>::Error;
    type Future = <HttpConnector as Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        self.http.call(self.target.clone())
    }
}

/// Connects every request to one Unix socket path.
#[derive(Clone, Debug)]
pub(crate) struct UnixConnector {
    path: Arc<PathBuf>,
    timeout: Duration,
}

impl Service<Uri> for UnixConnector {
    type Response = TokioIo<UnixStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.path.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, UnixStream::connect(path.as_path())).await {
                Ok(stream) => stream.map(TokioIo::new),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            }
        })
    }
}

/// TLS to the upstream failed (refused certificate, handshake error or timeout): the `tls` kind
/// of `originguard_upstream_errors_total`.
#[derive(Debug, thiserror::Error)]
#[error("TLS with the upstream failed: {0}")]
pub(crate) struct UpstreamTlsError(io::Error);

/// Connects to the configured TCP upstream, then TLS to it.
#[derive(Clone)]
pub(crate) struct TlsTarget {
    tcp: FixedTarget,
    tls: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    /// For the TLS handshake (the TCP connect has its own).
    timeout: Duration,
}

impl fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTarget")
            .field("target", &self.tcp.target)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Service<Uri> for TlsTarget {
    type Response = TlsIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<TlsIo, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tcp = self.tcp.call(uri);
        let tls = self.tls.clone();
        let name = self.name.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let tcp = tcp.await?;
            let stream = match tokio::time::timeout(timeout, tls.connect(name, tcp.into_inner())).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(UpstreamTlsError(e).into()),
                Err(_) => {
                    let e = io::Error::new(io::ErrorKind::TimedOut, "handshake timed out");
                    return Err(UpstreamTlsError(e).into());
                }
            };
            Ok(TlsIo(TokioIo::new(stream)))
        })
    }
}

/// A TLS connection to the upstream.
pub(crate) struct TlsIo(TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

impl TlsIo {
    fn is_h2(&self) -> bool {
        self.0.inner().get_ref().1.alpn_protocol() == Some(b"h2")
    }
}

impl Connection for TlsIo {
    fn connected(&self) -> Connected {
        // The pool offers only http/1.1; HTTP/2 takes the shared connection.
        self.0.inner().get_ref().0.connected()
    }
}

impl hyper::rt::Read for TlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_connect_failure_keeps_its_kind() {
        for tls in [true, false] {
            let failure = Failure {
                tls,
                cause: "handshake timed out".into(),
            };
            let error = failure.error();
            assert!(error.is_connect());
            assert_eq!(error.is_tls(), tls);
            let chain = super::super::error::error_chain(&error);
            assert!(chain.contains("waited for failed: handshake timed out"), "{chain}");
            assert_eq!(Failure::of(&error).tls, tls);
        }
    }
}

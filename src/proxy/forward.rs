//! The per-request service: sanitize, add the verified identity and X-Forwarded-*, forward to
//! the pooled upstream client, stream the response back.
//!
//! Rules (INTERFACE.md, "What the backend receives"):
//! - hop-by-hop headers (RFC 9110 §7.6.1, plus any named in `Connection`) are removed both
//!   ways; `Host` is kept (and set from `:authority` for HTTP/2 requests);
//! - `x-forwarded-client-cert`, `client-cert` and `client-cert-chain` from the client are always
//!   removed — every value, any case — whatever `headers.client_cert` says;
//! - bodies are never buffered: the inbound body is the upstream request body and vice versa.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{debug, info, warn};

use super::activity::{Activity, InFlight};
use super::authority;
use super::error::{rescue, ProxyError};
use super::headers::{
    CLIENT_CERT, KEEP_ALIVE, PROXY_CONNECTION, XFCC, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
};
use super::Proxy;
use crate::metrics::Metrics;
use crate::tls::{ClientIdentity, PolicyId};

/// The response body type of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// What every request on one TLS connection shares.
pub struct Connection {
    pub proxy: Arc<Proxy>,
    pub peer: IpAddr,
    /// `peer` as a header value, formatted once per connection.
    pub peer_header: HeaderValue,
    /// The policy the connection's SNI selected; every request must belong to it.
    pub policy: PolicyId,
    pub sni: Option<String>,
    /// `1.2` or `1.3`, for the access log.
    pub tls_version: &'static str,
    pub resumed: bool,
    pub identity: Arc<ClientIdentity>,
    pub activity: Arc<Activity>,
    pub metrics: Arc<Metrics>,
    /// Upgraded tunnels outlive their HTTP connection task; they are tracked here so the
    /// drain waits for them and `connections_open` counts them.
    pub tracker: tokio_util::task::TaskTracker,
    /// The connection's `max_connections` permit: a tunnel holds it until it closes.
    pub permit: Arc<OwnedSemaphorePermit>,
    /// What ends the connection besides its traffic; tunnels close on it too.
    pub lifetime: Arc<super::Lifetime>,
}

static CF_RAY: HeaderName = HeaderName::from_static("cf-ray");
static CF_CONNECTING_IP: HeaderName = HeaderName::from_static("cf-connecting-ip");
static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");
static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// Handles one request: forwards it, or answers it via [`rescue`].
pub async fn handle(mut request: Request<Incoming>, conn: Arc<Connection>) -> Response<ProxyBody> {
    let mut log = RequestLog {
        started: Instant::now(),
        method: request.method().clone(),
        // Bytes-backed: a clone is a reference count, not a copy.
        uri: request.uri().clone(),
        host: None,
        status: 0,
        upstream: None,
        version: request.version(),
        // Byte counts and correlation headers are for the access log only.
        bytes: conn.proxy.access_log.then(|| Arc::new(ByteCounts::default())),
        correlation: conn.proxy.access_log.then(|| {
            let h = request.headers();
            Box::new([
                h.get(header::USER_AGENT).cloned(),
                h.get(&CF_RAY).cloned(),
                h.get(&CF_CONNECTING_IP).cloned(),
            ])
        }),
        in_flight: conn.activity.begin(),
        conn: conn.clone(),
    };

    // The host is validated for every request, with or without [[hosts]]: a value a backend
    // could read as another host never reaches it (see `authority`).
    let host = match authority::of_request(&request) {
        Ok(host) => host,
        Err(error) => return rescue_logged(ProxyError::BadHost(error), &conn, log),
    };
    let misdirected = misdirected(&conn, host.host);
    let host = match request.headers().get(header::HOST) {
        Some(value) => value.clone(),
        None => HeaderValue::from_str(host.value).expect("a validated host is a valid header value"),
    };
    log.host = Some(host.clone());

    let result = if misdirected {
        Err(ProxyError::Misdirected)
    } else if ambiguous_framing(request.headers(), conn.activity.saw_content_length()) {
        Err(ProxyError::BadFraming)
    } else {
        let tunnel = match tunnel_kind(&request, &conn) {
            Ok(Some(kind)) => Some((kind, hyper::upgrade::on(&mut request))),
            Ok(None) => None,
            Err(error) => return rescue_logged(error, &conn, log),
        };
        let request = request.map(|body| {
            Metered {
                inner: body,
                bytes: log.bytes.clone(),
                inbound: true,
                trailers: Some(conn.proxy.clone()),
                _attached: (),
            }
            .boxed()
        });
        let upstream_started = Instant::now();
        let result = forward(request, host, &conn, tunnel).await;
        log.upstream = Some(upstream_started.elapsed());
        result
    };

    match result {
        Ok(response) => {
            log.status = response.status().as_u16();
            let bytes = log.bytes.clone();
            response.map(|body| {
                Metered {
                    inner: body,
                    bytes,
                    inbound: false,
                    trailers: None,
                    _attached: log,
                }
                .boxed()
            })
        }
        Err(error) => rescue_logged(error, &conn, log),
    }
}

/// Logs why the proxy answers a request itself, and answers it.
fn rescue_logged(error: ProxyError, conn: &Connection, mut log: RequestLog) -> Response<ProxyBody> {
    match &error {
        ProxyError::Misdirected => debug!(
            peer = %conn.peer,
            sni = conn.sni.as_deref().unwrap_or(""),
            host = log.host_str(),
            "request host belongs to another policy than the connection's SNI: 421"
        ),
        ProxyError::BadFraming
        | ProxyError::BadHost(_)
        | ProxyError::BadHeader(_)
        | ProxyError::ClientBody(_)
        | ProxyError::UnsupportedProtocol => {
            debug!(peer = %conn.peer, path = %log.uri.path(), error = %error_chain(&error), "bad request")
        }
        _ => {
            conn.metrics.upstream_error(error.kind());
            warn!(peer = %conn.peer, method = %log.method, path = %log.uri.path(), error = %error_chain(&error), "upstream error");
        }
    }
    let response = rescue(&error);
    log.status = response.status().as_u16();
    if let (Some(bytes), Some(len)) = (&log.bytes, http_body::Body::size_hint(response.body()).exact()) {
        bytes.response.store(len, Ordering::Relaxed);
    }
    response
}

/// How a request asks to leave HTTP: an HTTP/1.1 `Upgrade`, or an HTTP/2 extended CONNECT
/// (RFC 8441) for a WebSocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tunnel {
    Upgrade,
    H2WebSocket,
}

fn tunnel_kind<B>(request: &Request<B>, conn: &Connection) -> Result<Option<Tunnel>, ProxyError> {
    if request.method() == Method::CONNECT {
        let protocol = request.extensions().get::<hyper::ext::Protocol>();
        return match protocol {
            // A plain CONNECT (a forward-proxy tunnel) is not something an origin guard offers.
            None => Err(ProxyError::UnsupportedProtocol),
            Some(p)
                if p.as_str().eq_ignore_ascii_case("websocket")
                    && conn.proxy.upstream_for(conn.policy).version() == Version::HTTP_11 =>
            {
                Ok(Some(Tunnel::H2WebSocket))
            }
            Some(_) => Err(ProxyError::UnsupportedProtocol),
        };
    }
    Ok(is_upgrade(request.headers()).then_some(Tunnel::Upgrade))
}

/// Whether the request names a host under a different policy than the one its connection was
/// verified under (TLS for one host, request for another: Traefik CVE-2019-20894). Checked on
/// every request, since one HTTP/2 connection carries many. `host` is validated, without port.
fn misdirected(conn: &Connection, host: &str) -> bool {
    let policies = &conn.proxy.policies;
    policies.has_hosts() && policies.select_host(host) != conn.policy
}

async fn forward(
    request: Request<ProxyBody>,
    host: HeaderValue,
    conn: &Connection,
    tunnel: Option<(Tunnel, OnUpgrade)>,
) -> Result<Response<Incoming>, ProxyError> {
    let proxy = &conn.proxy;
    let (mut parts, body) = request.into_parts();

    let headers = &mut parts.headers;
    proxy.header_rules.sanitize(headers).map_err(ProxyError::BadHeader)?;
    let upgrade = match tunnel.as_ref().map(|(kind, _)| *kind) {
        Some(Tunnel::Upgrade) => headers.get(header::UPGRADE).cloned(),
        Some(Tunnel::H2WebSocket) => Some(HeaderValue::from_static("websocket")),
        None => None,
    };
    remove_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        // An upgrade (WebSocket) is the one hop-by-hop exchange forwarded as such.
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    let body = match tunnel.as_ref().map(|(kind, _)| *kind) {
        Some(Tunnel::H2WebSocket) => {
            // RFC 8441 -> RFC 6455: the HTTP/1.1 handshake needs a GET with a key; the HTTP/2
            // stream itself carries the WebSocket frames once both sides switched.
            parts.method = Method::GET;
            let mut key = [0u8; 16];
            aws_lc_rs::rand::fill(&mut key).map_err(|_| ProxyError::UnsupportedProtocol)?;
            let key = base64::engine::general_purpose::STANDARD.encode(key);
            headers.insert(
                SEC_WEBSOCKET_KEY.clone(),
                HeaderValue::from_str(&key).expect("base64 is a valid header value"),
            );
            headers
                .entry(SEC_WEBSOCKET_VERSION.clone())
                .or_insert(HeaderValue::from_static("13"));
            http_body_util::Empty::new().map_err(|never| match never {}).boxed()
        }
        _ => body,
    };
    if proxy.headers.x_forwarded {
        append_forwarded_for(headers, &conn.peer_header);
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        if headers.contains_key(header::FORWARDED) {
            append_forwarded(headers, conn.peer, &host);
        }
    }
    if proxy.headers.client_cert.xfcc() {
        headers.insert(XFCC.clone(), conn.identity.xfcc.clone());
    }
    if proxy.headers.client_cert.rfc9440() {
        headers.insert(CLIENT_CERT.clone(), conn.identity.rfc9440.clone());
    }

    let upstream = proxy.upstream_for(conn.policy);
    parts.version = upstream.version();
    parts.uri = upstream.uri_for(&parts.uri, &host);
    if upstream.may_be_h2() {
        // HTTP/2 carries the host in :authority, and a `host` beside it is a duplicate to nginx
        // (400) and malformed to RFC 9113 §8.3.1 if it differs. The URI's authority is the
        // client's host: hyper makes it :authority on HTTP/2, or Host on an HTTP/1.1
        // connection that ALPN chose.
        headers.remove(header::HOST);
    } else {
        headers.insert(header::HOST, host);
    }

    let response_timeout = upstream.response_timeout();
    let upstream = upstream.request(Request::from_parts(parts, body), tunnel.is_some());
    let mut response = match tokio::time::timeout(response_timeout, upstream).await {
        Err(_) => return Err(ProxyError::UpstreamTimeout),
        Ok(Err(e)) => return Err(ProxyError::from_upstream(e)),
        Ok(Ok(response)) => response,
    };

    match tunnel {
        Some((kind, client)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let upstream = hyper::upgrade::on(&mut response);
            let peer = conn.peer;
            let open = conn.metrics.connection_open();
            let permit = conn.permit.clone();
            let idle = proxy.listener.idle_timeout;
            let lifetime = conn.lifetime.clone();
            conn.tracker.spawn(async move {
                let (_open, _permit) = (open, permit);
                match tokio::try_join!(client, upstream) {
                    Ok((client, upstream)) => {
                        let ended =
                            super::tunnel::pipe(TokioIo::new(client), TokioIo::new(upstream), idle, lifetime.ended())
                                .await;
                        debug!(%peer, ?ended, "upgraded connection ended");
                    }
                    Err(error) => debug!(%peer, %error, "upgrade failed"),
                }
            });
            let upgrade = response.headers().get(header::UPGRADE).cloned();
            remove_hop_by_hop(response.headers_mut());
            match kind {
                Tunnel::Upgrade => {
                    if let Some(protocol) = upgrade {
                        response
                            .headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                        response.headers_mut().insert(header::UPGRADE, protocol);
                    }
                }
                Tunnel::H2WebSocket => {
                    // RFC 8441 §5: the HTTP/2 side accepts with 200 and no accept key.
                    *response.status_mut() = StatusCode::OK;
                    response.headers_mut().remove(&SEC_WEBSOCKET_ACCEPT);
                }
            }
        }
        _ => remove_hop_by_hop(response.headers_mut()),
    }
    Ok(response)
}

/// Request smuggling guard (RFC 9112 §6.3): hyper decodes `Transfer-Encoding: chunked` and
/// ignores a Content-Length next to it, but a backend might not; and a coding other than chunked
/// cannot be forwarded faithfully once the proxy has decoded the chunks. Such requests are
/// refused rather than rewritten.
///
/// hyper drops a Content-Length that comes with Transfer-Encoding before the request reaches
/// us, so `saw_content_length` reports what the connection's reader saw in the raw head.
fn ambiguous_framing(headers: &HeaderMap, saw_content_length: bool) -> bool {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    match codings.next() {
        None => false,
        Some(first) => {
            codings.next().is_some()
                || !first.as_bytes().eq_ignore_ascii_case(b"chunked")
                || headers.contains_key(header::CONTENT_LENGTH)
                || saw_content_length
        }
    }
}

/// An HTTP/1.1 request asking to switch protocols (`Connection: upgrade` + `Upgrade`).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes RFC 9110 §7.6.1 connection-specific fields (plus Proxy-Authenticate/-Authorization)
/// and those `Connection` names. `te: trailers` survives (gRPC needs it end to end), other TE
/// values do not; `Trailer` is end-to-end in RFC 9110 and is kept so trailers pass through.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    const HOP_BY_HOP: [&HeaderName; 8] = [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
    ];
    // Most messages carry none of them: one pass over the names present, no hashing.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(&name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// `x-forwarded-for`: the incoming values (all of them, in order) + `, ` + the peer IP.
fn append_forwarded_for(headers: &mut HeaderMap, peer: &HeaderValue) {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR.clone(), peer.clone());
        return;
    }
    let mut value = Vec::new();
    for existing in headers.get_all(&X_FORWARDED_FOR) {
        value.extend_from_slice(existing.as_bytes());
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(peer.as_bytes());
    // Joined valid values stay valid; should that ever fail, the peer alone is still true.
    let value = HeaderValue::from_bytes(&value).unwrap_or_else(|_| peer.clone());
    headers.insert(X_FORWARDED_FOR.clone(), value);
}

/// `forwarded` (RFC 7239), when the client sent one: our element is appended, as for
/// `x-forwarded-for`, so the last element is always the one the proxy vouches for.
fn append_forwarded(headers: &mut HeaderMap, peer: IpAddr, host: &HeaderValue) {
    let mut value = Vec::new();
    for existing in headers.get_all(header::FORWARDED) {
        value.extend_from_slice(existing.as_bytes());
        value.extend_from_slice(b", ");
    }
    let element = match peer {
        IpAddr::V4(v4) => format!("for={v4};proto=https;host=\""),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto=https;host=\""),
    };
    value.extend_from_slice(element.as_bytes());
    // A validated host has no quote or backslash to escape.
    value.extend_from_slice(host.as_bytes());
    value.push(b'"');
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        headers.insert(header::FORWARDED, value);
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// One request's record: counted as in flight while it lives; on drop (when the response body
/// is done or abandoned) it feeds the request metrics and writes the access-log line.
struct RequestLog {
    conn: Arc<Connection>,
    started: Instant,
    method: http::Method,
    uri: http::Uri,
    version: Version,
    host: Option<HeaderValue>,
    /// User-Agent, CF-Ray, CF-Connecting-IP: to correlate with Cloudflare's logs (access log on).
    correlation: Option<Box<[Option<HeaderValue>; 3]>>,
    status: u16,
    upstream: Option<Duration>,
    /// Only when the access log is on.
    bytes: Option<Arc<ByteCounts>>,
    in_flight: InFlight,
}

/// Body bytes in each direction, for the access log.
#[derive(Debug, Default)]
struct ByteCounts {
    request: AtomicU64,
    response: AtomicU64,
}

impl RequestLog {
    fn host_str(&self) -> &str {
        self.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("")
    }

    fn correlation(&self, i: usize) -> &str {
        self.correlation
            .as_ref()
            .and_then(|c| c[i].as_ref())
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Milliseconds, rounded to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let _ = &self.in_flight;
        let elapsed = self.started.elapsed();
        let conn = &self.conn;
        conn.metrics.request_done(self.status, elapsed.as_secs_f64());
        if conn.proxy.access_log {
            info!(
                target: "originguard::access",
                peer = %conn.peer,
                sni = conn.sni.as_deref().unwrap_or(""),
                host = self.host_str(),
                method = %self.method,
                path = %self.uri.path(),
                status = self.status,
                http_version = http_version(self.version),
                tls_version = conn.tls_version,
                resumed = conn.resumed,
                bytes_in = self.bytes.as_ref().map_or(0, |b| b.request.load(Ordering::Relaxed)),
                bytes_out = self.bytes.as_ref().map_or(0, |b| b.response.load(Ordering::Relaxed)),
                duration_ms = ms(elapsed),
                upstream_ms = self.upstream.map_or(0.0, ms),
                user_agent = self.correlation(0),
                subject = %conn.identity.subject,
                sha256 = %conn.identity.sha256,
                cf_ray = self.correlation(1),
                cf_connecting_ip = self.correlation(2),
            );
        }
    }
}

fn http_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        _ => "1.1",
    }
}

/// A body that counts the data bytes it yields into `bytes` (when the access log wants them),
/// and keeps `_attached` alive until it is done or dropped (the request's log, for responses).
struct Metered<B, A> {
    inner: B,
    bytes: Option<Arc<ByteCounts>>,
    /// Counts into `bytes.request` (else `bytes.response`).
    inbound: bool,
    /// For request bodies: whose header rules clean the trailers.
    trailers: Option<Arc<Proxy>>,
    _attached: A,
}

impl<B, A> Body for Metered<B, A>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
    A: Unpin,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &mut polled {
            if let Some(data) = frame.data_ref() {
                if let Some(bytes) = &self.bytes {
                    let counter = if self.inbound { &bytes.request } else { &bytes.response };
                    counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            } else if let (Some(proxy), Some(trailers)) = (&self.trailers, frame.trailers_mut()) {
                proxy.header_rules.sanitize_trailers(trailers);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(header::HOST, HeaderValue::from_static("a"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::HOST], "a");
        assert_eq!(h[header::TE], "trailers");
    }

    #[test]
    fn forwarded_for_appends_the_peer_to_every_incoming_value() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2, 3.3.3.3"));
        append_forwarded_for(&mut h, &HeaderValue::from_static("::1"));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 3.3.3.3, ::1");
    }
}

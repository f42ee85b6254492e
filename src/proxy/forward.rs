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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::sync::OwnedSemaphorePermit;

use super::access_log::{ByteCounts, Metered, RequestLog, CF_CONNECTING_IP, CF_RAY};
use super::activity::Activity;
use super::authority;
use super::error::{self, ProxyError};
use super::headers::{
    ambiguous_framing, append_forwarded, append_forwarded_for, remove_hop_by_hop, CLIENT_CERT, XFCC, X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
};
use super::tunnel::{self, Tunnel};
use super::upstream::UpstreamBody;
use super::{Proxy, ProxyBody};
use crate::metrics::Metrics;
use crate::tls::{ClientIdentity, PolicyId};

/// What every request on one TLS connection shares.
pub(crate) struct Connection {
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

/// Handles one request: forwards it, or answers it via [`error::respond`].
pub(crate) async fn handle(mut request: Request<Incoming>, conn: Arc<Connection>) -> Response<ProxyBody> {
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
        let upstream_http1 = conn.proxy.upstream_for(conn.policy).upgrades();
        let tunnel = match tunnel::kind(&request, upstream_http1) {
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

/// Answers a request the proxy refused or could not forward (see `error::respond`), and
/// records the answer in the request's log.
fn rescue_logged(error: ProxyError, conn: &Connection, mut log: RequestLog) -> Response<ProxyBody> {
    let rescued = error::Rescued {
        peer: conn.peer,
        sni: conn.sni.as_deref().unwrap_or(""),
        host: log.host_str(),
        method: &log.method,
        path: log.uri.path(),
    };
    let response = error::respond(&error, &rescued, &conn.metrics);
    log.status = response.status().as_u16();
    if let (Some(bytes), Some(len)) = (&log.bytes, http_body::Body::size_hint(response.body()).exact()) {
        bytes.response.store(len, Ordering::Relaxed);
    }
    response
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
) -> Result<Response<UpstreamBody>, ProxyError> {
    let proxy = &conn.proxy;
    let (mut parts, body) = request.into_parts();

    proxy
        .header_rules
        .sanitize(&mut parts.headers)
        .map_err(ProxyError::BadHeader)?;
    let body = match tunnel.as_ref() {
        Some((kind, _)) => tunnel::upstream_request(*kind, &mut parts, body)?,
        None => {
            remove_hop_by_hop(&mut parts.headers);
            body
        }
    };
    let headers = &mut parts.headers;
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

    // The upstream puts the host in Host (HTTP/1.1) or :authority (HTTP/2).
    let upstream = proxy.upstream_for(conn.policy);
    let response_timeout = upstream.response_timeout();
    let upstream = upstream.send(parts, body, host, tunnel.is_some());
    let mut response = match tokio::time::timeout(response_timeout, upstream).await {
        Err(_) => return Err(ProxyError::UpstreamTimeout),
        Ok(Err(e)) => return Err(ProxyError::from_upstream(e)),
        Ok(Ok(response)) => response,
    };

    match tunnel {
        Some((kind, client)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            tunnel::accept(kind, client, &mut response, conn);
        }
        _ => remove_hop_by_hop(response.headers_mut()),
    }
    Ok(response)
}

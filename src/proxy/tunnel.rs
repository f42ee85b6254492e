//! Tunnels (WebSocket): which requests ask for one, how the upstream request is made (an HTTP/2
//! WebSocket, RFC 8441, becomes an RFC 6455 HTTP/1.1 upgrade), and the upgraded connection
//! itself: bytes both ways until either side closes, nothing has moved in either direction for
//! `listener.idle_timeout`, or what ends the connection it came from ends it too
//! (`proxy::Lifetime`: maximum age, certificate expiry, the drain's end, a reload that refuses
//! the client).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::future::Future;

use base64::Engine;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use super::error::ProxyError;
use super::forward::Connection;
use super::headers::remove_hop_by_hop;
use super::ProxyBody;

static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");
static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// How a request asks to leave HTTP: an HTTP/1.1 `Upgrade`, or an HTTP/2 extended CONNECT
/// (RFC 8441) for a WebSocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tunnel {
    Upgrade,
    H2WebSocket,
}

/// The tunnel a request asks for, if any. `upstream_http1`: the upstream speaks HTTP/1.1, which
/// an HTTP/2 WebSocket needs (it is translated to an HTTP/1.1 upgrade).
pub(crate) fn kind<B>(request: &Request<B>, upstream_http1: bool) -> Result<Option<Tunnel>, ProxyError> {
    if request.method() == Method::CONNECT {
        let protocol = request.extensions().get::<hyper::ext::Protocol>();
        return match protocol {
            // A plain CONNECT (a forward-proxy tunnel) is not something an origin guard offers.
            None => Err(ProxyError::UnsupportedProtocol),
            Some(p) if p.as_str().eq_ignore_ascii_case("websocket") && upstream_http1 => Ok(Some(Tunnel::H2WebSocket)),
            Some(_) => Err(ProxyError::UnsupportedProtocol),
        };
    }
    Ok(is_upgrade(request.headers()).then_some(Tunnel::Upgrade))
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

/// Makes a tunnel's upstream request from the client's (already sanitized): hop-by-hop headers
/// go, except the upgrade itself — the one hop-by-hop exchange forwarded as such. An HTTP/2
/// WebSocket becomes the RFC 6455 handshake: a GET with a fresh key and no body (the HTTP/2
/// stream carries the frames once both sides switched).
pub(crate) fn upstream_request(
    kind: Tunnel,
    parts: &mut http::request::Parts,
    body: ProxyBody,
) -> Result<ProxyBody, ProxyError> {
    let headers = &mut parts.headers;
    let protocol = match kind {
        Tunnel::Upgrade => headers.get(header::UPGRADE).cloned(),
        Tunnel::H2WebSocket => Some(HeaderValue::from_static("websocket")),
    };
    remove_hop_by_hop(headers);
    if let Some(protocol) = protocol {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    match kind {
        Tunnel::Upgrade => Ok(body),
        Tunnel::H2WebSocket => {
            parts.method = Method::GET;
            let mut key = [0u8; 16];
            aws_lc_rs::rand::fill(&mut key).map_err(|_| ProxyError::Internal("the random number generator failed"))?;
            let key = base64::engine::general_purpose::STANDARD.encode(key);
            headers.insert(
                SEC_WEBSOCKET_KEY.clone(),
                HeaderValue::from_str(&key).expect("base64 is a valid header value"),
            );
            headers
                .entry(SEC_WEBSOCKET_VERSION.clone())
                .or_insert(HeaderValue::from_static("13"));
            Ok(http_body_util::Empty::new().map_err(|never| match never {}).boxed())
        }
    }
}

/// The upstream switched protocols (101): pipes the two upgraded ends together in a task the
/// drain waits for (holding the connection's permit and counted as open), and makes the
/// client's answer — a 101 with the upgrade, or for an HTTP/2 WebSocket a 200 (RFC 8441 §5).
pub(crate) fn accept<B>(kind: Tunnel, client: OnUpgrade, response: &mut Response<B>, conn: &Connection) {
    let upstream = hyper::upgrade::on(&mut *response);
    let peer = conn.peer;
    let open = conn.metrics.connection_open();
    let permit = conn.permit.clone();
    let idle = conn.proxy.listener.idle_timeout;
    let lifetime = conn.lifetime.clone();
    conn.tracker.spawn(async move {
        let (_open, _permit) = (open, permit);
        match tokio::try_join!(client, upstream) {
            Ok((client, upstream)) => {
                let ended = pipe(TokioIo::new(client), TokioIo::new(upstream), idle, lifetime.ended()).await;
                debug!(%peer, ended = %ended, "upgraded connection ended");
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
            *response.status_mut() = StatusCode::OK;
            response.headers_mut().remove(&SEC_WEBSOCKET_ACCEPT);
        }
    }
}

/// How a tunnel ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// One side closed (or failed): bytes copied (client to upstream, upstream to client).
    Closed(io::Result<(u64, u64)>),
    /// No bytes either way for the idle timeout.
    Idle,
    /// The connection's lifetime ended (the reason).
    Stopped(&'static str),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Closed(Ok((up, down))) => write!(f, "closed after {up} bytes up, {down} down"),
            Ended::Closed(Err(error)) => write!(f, "failed: {error}"),
            Ended::Idle => f.write_str("idle timeout"),
            Ended::Stopped(why) => write!(f, "stopped: {why}"),
        }
    }
}

/// Copies between `client` and `upstream` until one of the ends in [`Ended`].
pub(crate) async fn pipe<A, B>(
    client: A,
    upstream: B,
    idle: Duration,
    stop: impl Future<Output = &'static str>,
) -> Ended
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::pin!(stop);
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Touched {
        inner: client,
        epoch,
        last: last.clone(),
    };
    let mut upstream = Touched {
        inner: upstream,
        epoch,
        last: last.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        let idle_at = epoch + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            result = &mut copy => return Ended::Closed(result),
            why = &mut stop => return Ended::Stopped(why),
            () = tokio::time::sleep_until(idle_at.into()) => {
                let idle_at = epoch + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
                if idle_at <= Instant::now() {
                    return Ended::Idle;
                }
            }
        }
    }
}

/// A stream that notes when bytes last moved through it.
struct Touched<T> {
    inner: T,
    epoch: Instant,
    last: Arc<AtomicU64>,
}

impl<T> Touched<T> {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Touched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Touched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

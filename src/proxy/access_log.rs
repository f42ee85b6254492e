//! One request's record: the request metrics and the access-log line (written when the
//! response body is done or abandoned), and the body wrapper that meters bytes both ways.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::Version;
use http_body::{Body, Frame, SizeHint};
use tracing::info;

use super::activity::InFlight;
use super::forward::Connection;
use super::Proxy;

/// Correlation headers Cloudflare adds (access log).
pub(crate) static CF_RAY: HeaderName = HeaderName::from_static("cf-ray");
pub(crate) static CF_CONNECTING_IP: HeaderName = HeaderName::from_static("cf-connecting-ip");

/// One request's record: counted as in flight while it lives; on drop (when the response body
/// is done or abandoned) it feeds the request metrics and writes the access-log line.
pub(crate) struct RequestLog {
    pub(crate) conn: Arc<Connection>,
    pub(crate) started: Instant,
    pub(crate) method: http::Method,
    pub(crate) uri: http::Uri,
    pub(crate) version: Version,
    pub(crate) host: Option<HeaderValue>,
    /// User-Agent, CF-Ray, CF-Connecting-IP: to correlate with Cloudflare's logs (access log on).
    pub(crate) correlation: Option<Box<[Option<HeaderValue>; 3]>>,
    pub(crate) status: u16,
    pub(crate) upstream: Option<Duration>,
    /// Only when the access log is on.
    pub(crate) bytes: Option<Arc<ByteCounts>>,
    pub(crate) in_flight: InFlight,
}

/// Body bytes in each direction, for the access log.
#[derive(Debug, Default)]
pub(crate) struct ByteCounts {
    pub(crate) request: AtomicU64,
    pub(crate) response: AtomicU64,
}

impl RequestLog {
    pub(crate) fn host_str(&self) -> &str {
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
pub(crate) struct Metered<B, A> {
    pub(crate) inner: B,
    pub(crate) bytes: Option<Arc<ByteCounts>>,
    /// Counts into `bytes.request` (else `bytes.response`).
    pub(crate) inbound: bool,
    /// For request bodies: whose header rules clean the trailers.
    pub(crate) trailers: Option<Arc<Proxy>>,
    pub(crate) _attached: A,
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

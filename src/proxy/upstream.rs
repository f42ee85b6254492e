//! The pooled upstream client: HTTP/1.1 (or h2c with prior knowledge) over TCP or a Unix socket.
//!
//! One `hyper_util` legacy client per upstream keeps connections alive and reuses them across
//! requests from every inbound connection; a new connection per request (hyper's gateway
//! example) would cost a TCP handshake on the hot path.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::UnixStream;

use super::forward::ProxyBody;
use crate::config::{UpstreamConfig, UpstreamProtocol, UpstreamTarget};

/// Idle pooled connections are closed after this; backends commonly time out at 60–120 s.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A pooled client for the configured upstream.
#[derive(Clone, Debug)]
pub struct Upstream {
    pool: Pool,
    authority: Authority,
    version: Version,
    response_timeout: Duration,
}

#[derive(Clone, Debug)]
enum Pool {
    Tcp(Client<FixedTarget, ProxyBody>),
    Unix(Client<UnixConnector, ProxyBody>),
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Upstream {
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(config.protocol == UpstreamProtocol::H2c);
        let (pool, authority) = match &config.target {
            UpstreamTarget::Tcp(authority) => {
                let mut http = HttpConnector::new();
                http.set_connect_timeout(Some(config.connect_timeout));
                http.set_nodelay(true);
                let target = Uri::builder()
                    .scheme(Scheme::HTTP)
                    .authority(authority.clone())
                    .path_and_query("/")
                    .build()
                    .expect("scheme, authority and path are all set");
                (
                    Pool::Tcp(builder.build(FixedTarget { http, target })),
                    authority.clone(),
                )
            }
            UpstreamTarget::Unix(path) => {
                let connector = UnixConnector {
                    path: Arc::new(path.clone()),
                    timeout: config.connect_timeout,
                };
                // The authority only keys the pool; Host comes from the client's request.
                (
                    Pool::Unix(builder.build(connector)),
                    Authority::from_static("localhost"),
                )
            }
        };
        let version = match config.protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::H2c => Version::HTTP_2,
        };
        Upstream {
            pool,
            authority,
            version,
            response_timeout: config.response_timeout,
        }
    }

    /// Time allowed until the response head.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The URI the upstream request is sent to: the client's path, and as authority our
    /// upstream's — or, for HTTP/2 (where it becomes `:authority`), the client's `host`. The
    /// connectors ignore the URI's authority: it only keys the pool.
    pub fn uri_for(&self, incoming: &Uri, host: Option<&http::HeaderValue>) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(
            host.and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .unwrap_or_else(|| self.authority.clone()),
        );
        parts.path_and_query = Some(
            incoming
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).expect("scheme, authority and path are all set")
    }

    /// The HTTP version requests must carry for this upstream's connections.
    pub fn version(&self) -> Version {
        self.version
    }

    pub fn request(&self, request: Request<ProxyBody>) -> ResponseFuture {
        match &self.pool {
            Pool::Tcp(client) => client.request(request),
            Pool::Unix(client) => client.request(request),
        }
    }
}

/// Connects every request to the configured TCP upstream, whatever authority its URI names.
#[derive(Clone, Debug)]
pub struct FixedTarget {
    http: HttpConnector,
    target: Uri,
}

impl tower_service::Service<Uri> for FixedTarget {
    type Response = <HttpConnector as tower_service::Service<Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = <HttpConnector as tower_service::Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        self.http.call(self.target.clone())
    }
}

/// Connects every request to one Unix socket path.
#[derive(Clone, Debug)]
pub struct UnixConnector {
    path: Arc<PathBuf>,
    timeout: Duration,
}

impl tower_service::Service<Uri> for UnixConnector {
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

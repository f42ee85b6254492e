//! The pooled upstream client: HTTP/1.1 (or h2c with prior knowledge) over TCP or a Unix socket,
//! or HTTPS with ALPN choosing h2 or http/1.1.
//!
//! One `hyper_util` legacy client per upstream keeps connections alive and reuses them across
//! requests from every inbound connection; a new connection per request (hyper's gateway
//! example) would cost a TCP handshake on the hot path. HTTPS uses the same rustls and provider
//! as the listener (no second TLS stack), verifying the upstream against `upstream.ca` or the
//! webpki roots.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Version};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};

use super::ProxyBody;
use crate::config::{ConfigError, UpstreamConfig, UpstreamProtocol, UpstreamTarget, UpstreamTls};
use crate::tls::load;

/// Idle pooled connections are closed after this; backends commonly time out at 60–120 s.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A pooled client for the configured upstream.
#[derive(Clone, Debug)]
pub struct Upstream {
    pool: Pool,
    /// An `https://` upstream that may pick h2: upgrades (WebSocket) are HTTP/1.1-only, so they
    /// get connections of their own that offer only http/1.1.
    upgrade_pool: Option<Pool>,
    authority: Authority,
    version: Version,
    /// Whether the pool may speak HTTP/2, where the URI's authority becomes `:authority`.
    may_be_h2: bool,
    response_timeout: Duration,
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

impl Upstream {
    /// Builds the client; for `https://`, reads the CA and client certificate files (`file` is
    /// the config, named in errors).
    pub(crate) fn new(config: &UpstreamConfig, file: &Path) -> Result<Upstream, ConfigError> {
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(config.protocol == UpstreamProtocol::H2c);
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
        let mut upgrade_pool = None;
        let (pool, authority) = match &config.target {
            UpstreamTarget::Tcp(authority) => (Pool::Tcp(builder.build(tcp(authority))), authority.clone()),
            UpstreamTarget::Https(authority) => {
                let name = server_name(&config.tls, authority, file)?;
                let alpn: &[&[u8]] = match config.protocol {
                    UpstreamProtocol::Alpn => &[b"h2", b"http/1.1"],
                    _ => &[b"http/1.1"],
                };
                let connector = |alpn: &[&[u8]]| -> Result<TlsTarget, ConfigError> {
                    Ok(TlsTarget {
                        tcp: tcp(authority),
                        tls: client_config(&config.tls, alpn, file)?.into(),
                        name: name.clone(),
                        timeout: config.connect_timeout,
                    })
                };
                if config.protocol == UpstreamProtocol::Alpn {
                    upgrade_pool = Some(Pool::Tls(builder.build(connector(&[b"http/1.1"])?)));
                }
                (Pool::Tls(builder.build(connector(alpn)?)), authority.clone())
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
            UpstreamProtocol::Http1 | UpstreamProtocol::Alpn => Version::HTTP_11,
            UpstreamProtocol::H2c => Version::HTTP_2,
        };
        Ok(Upstream {
            pool,
            upgrade_pool,
            authority,
            version,
            may_be_h2: config.protocol != UpstreamProtocol::Http1,
            response_timeout: config.response_timeout,
        })
    }

    /// Time allowed until the response head.
    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The URI the upstream request is sent to: the client's path, and as authority our
    /// upstream's — or, when the connection may be HTTP/2 (where it becomes `:authority`), the
    /// client's host. The connectors ignore the URI's authority: it only keys the pool.
    pub(crate) fn uri_for(&self, incoming: &Uri, host: &http::HeaderValue) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(
            self.may_be_h2
                .then(|| Authority::try_from(host.as_bytes()).ok())
                .flatten()
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

    /// The HTTP version requests must carry for this upstream's connections: HTTP/2 for h2c,
    /// HTTP/1.1 otherwise (hyper sends it as HTTP/2 where ALPN chose h2).
    pub(crate) fn version(&self) -> Version {
        self.version
    }

    /// Whether a request may travel as HTTP/2 (h2c, or ALPN), its host as the URI's authority.
    pub(crate) fn may_be_h2(&self) -> bool {
        self.may_be_h2
    }

    /// Sends a request; `upgrade`: it asks to switch protocols, which needs HTTP/1.1.
    pub(crate) fn request(&self, request: Request<ProxyBody>, upgrade: bool) -> ResponseFuture {
        match (&self.upgrade_pool, upgrade) {
            (Some(pool), true) => pool.request(request),
            _ => self.pool.request(request),
        }
    }
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
pub(crate) struct UnixConnector {
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

impl tower_service::Service<Uri> for TlsTarget {
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

/// A TLS connection to the upstream that tells the pool when ALPN chose h2.
pub(crate) struct TlsIo(TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

impl Connection for TlsIo {
    fn connected(&self) -> Connected {
        let (tcp, session) = self.0.inner().get_ref();
        let connected = tcp.connected();
        if session.alpn_protocol() == Some(b"h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
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

//! Test harness: rcgen PKIs in temp dirs, a recording backend on 127.0.0.1:0 (or a Unix
//! socket), the proxy on 127.0.0.1:0, and mTLS clients. Everything is loopback and bounded.

#![allow(dead_code)]

pub mod nginx;
pub mod pki;
pub mod process;
pub mod raw;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use originguard::config::Config;
use originguard::tls::PolicySet;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{AlertDescription, ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

pub use pki::{Ca, ClientCert, Leaf};
pub use process::{serve, serve_with, ServeOptions};
pub use raw::{RawBackend, WireRequest};

/// A test config, built table by table: the one way tests write TOML (see [`Fixture::toml`]).
#[derive(Clone, Debug, Default)]
pub struct Toml {
    /// (table, its `key = value` lines), in order.
    tables: Vec<(String, Vec<String>)>,
    /// Verbatim text after the tables (`[[hosts]]` and the like).
    tail: String,
}

impl Toml {
    /// Sets `key = value` in `[table]`, replacing the key if present.
    pub fn set(mut self, table: &str, line: impl Into<String>) -> Toml {
        let line = line.into();
        let key = line.split('=').next().unwrap_or("").trim().to_string();
        let lines = match self.tables.iter().position(|(t, _)| t == table) {
            Some(i) => &mut self.tables[i].1,
            None => {
                self.tables.push((table.to_string(), Vec::new()));
                &mut self.tables.last_mut().expect("just pushed").1
            }
        };
        match lines
            .iter()
            .position(|l| l.split('=').next().unwrap_or("").trim() == key)
        {
            Some(i) => lines[i] = line,
            None => lines.push(line),
        }
        self
    }

    /// Sets every `key = value` line of `text` in `[table]`.
    pub fn lines(self, table: &str, text: &str) -> Toml {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .fold(self, |toml, line| toml.set(table, line))
    }

    /// Removes `key` from `[table]`.
    pub fn remove(mut self, table: &str, key: &str) -> Toml {
        if let Some((_, lines)) = self.tables.iter_mut().find(|(t, _)| t == table) {
            lines.retain(|l| l.split('=').next().unwrap_or("").trim() != key);
        }
        self
    }

    /// Appends verbatim TOML after the tables.
    pub fn append(mut self, text: &str) -> Toml {
        self.tail.push_str(text);
        self.tail.push('\n');
        self
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for (table, lines) in &self.tables {
            out.push_str(&format!("[{table}]\n"));
            for line in lines {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str(&self.tail);
        out
    }

    /// Writes the file and returns its path.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.text()).expect("write config");
        path.to_path_buf()
    }

    /// Parses it as if read from `path`.
    pub fn config(&self, path: &Path) -> Config {
        Config::from_toml(path, &self.text()).unwrap_or_else(|e| panic!("invalid test config: {e}\n{}", self.text()))
    }
}

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What the backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: Version,
    pub headers: HeaderMap,
    /// Request trailers (`/trailers` only, which reads the whole body).
    pub trailers: Option<HeaderMap>,
}

/// A recording backend (HTTP/1.1, or h2c with prior knowledge). Paths: `/echo` streams the
/// request body back; `/slow?ms=N` answers after N ms; `/ws` accepts an HTTP/1.1 upgrade and
/// echoes raw bytes; `/trailers` reads the body and its trailers and answers with a body and
/// `grpc-status: 0` trailers; anything else answers `ok`.
pub struct Backend {
    pub addr: Option<SocketAddr>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2c,
}

impl Backend {
    pub async fn tcp() -> Backend {
        Backend::tcp_with(Protocol::Http1).await
    }

    pub async fn tcp_with(protocol: Protocol) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let listener = Arc::new(listener);
        let mut backend = Backend::spawn(protocol, move || {
            let listener = listener.clone();
            async move { listener.accept().await.map(|(s, _)| s) }
        });
        backend.addr = Some(addr);
        backend
    }

    pub async fn unix(path: &Path) -> Backend {
        Backend::unix_with(path, Protocol::Http1).await
    }

    pub async fn unix_with(path: &Path, protocol: Protocol) -> Backend {
        let listener = Arc::new(UnixListener::bind(path).expect("bind unix backend"));
        Backend::spawn(protocol, move || {
            let listener = listener.clone();
            async move { listener.accept().await.map(|(s, _)| s) }
        })
    }

    fn spawn<A, F, S>(protocol: Protocol, accept: A) -> Backend
    where
        A: Fn() -> F + Send + 'static,
        F: std::future::Future<Output = std::io::Result<S>> + Send,
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, c) = (seen.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok(stream) = accept().await {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                serve_backend_conn(TokioIo::new(stream), s.clone(), protocol);
            }
        });
        Backend {
            addr: None,
            seen,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.expect("tcp backend"))
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    pub fn last(&self) -> Seen {
        self.requests().pop().expect("the backend saw a request")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn serve_backend_conn<I>(io: TokioIo<I>, seen: Arc<Mutex<Vec<Seen>>>, protocol: Protocol)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = service_fn(move |request: Request<Incoming>| {
            let seen = seen.clone();
            async move { Ok::<_, Infallible>(backend_respond(request, seen).await) }
        });
        let _ = match protocol {
            Protocol::Http1 => {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .with_upgrades()
                    .await
            }
            Protocol::H2c => {
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await
            }
        };
    });
}

async fn backend_respond(mut request: Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Response<TestBody> {
    let mut record = Seen {
        method: request.method().to_string(),
        uri: request.uri().to_string(),
        version: request.version(),
        headers: request.headers().clone(),
        trailers: None,
    };
    match request.uri().path() {
        "/echo" => {
            seen.lock().expect("lock").push(record);
            Response::new(request.into_body().map_err(Into::into).boxed())
        }
        "/slow" => {
            seen.lock().expect("lock").push(record);
            let ms = request
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full("slow"))
        }
        "/ws" => {
            seen.lock().expect("lock").push(record);
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(empty())
                .expect("101")
        }
        "/trailers" => {
            let collected = request.into_body().collect().await.expect("request body");
            record.trailers = collected.trailers().cloned();
            seen.lock().expect("lock").push(record);
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let frames: Vec<Result<hyper::body::Frame<Bytes>, Infallible>> = vec![
                Ok(hyper::body::Frame::data(collected.to_bytes())),
                Ok(hyper::body::Frame::trailers(trailers)),
            ];
            Response::new(
                http_body_util::StreamBody::new(futures_util::stream::iter(frames))
                    .map_err(|never| match never {})
                    .boxed(),
            )
        }
        _ => {
            seen.lock().expect("lock").push(record);
            Response::new(full("ok"))
        }
    }
}

pub fn full(text: &'static str) -> TestBody {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A PKI for one test: a server CA + server leaf, and a client CA.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub server_ca: Ca,
    pub client_ca: Ca,
    pub client: ClientCert,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let server_ca = Ca::root("test server CA");
        let server = server_ca.leaf(Leaf::server());
        std::fs::write(dir.path().join("server.pem"), &server.pem).expect("write");
        std::fs::write(dir.path().join("server.key"), &server.key_pem).expect("write");
        let client_ca = Ca::root("test client CA");
        std::fs::write(dir.path().join("client-ca.pem"), &client_ca.pem).expect("write");
        let client = client_ca.leaf(Leaf::client("client-1"));
        Fixture {
            dir,
            server_ca,
            client_ca,
            client,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `contents` to a file in the fixture's directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write");
        path
    }

    /// The base config as a builder: listener on 127.0.0.1:0, the fixture's server cert, the
    /// client CA trusted, the given upstream, access log off, no file watching.
    pub fn toml(&self, upstream_url: &str) -> Toml {
        let d = self.dir.path().display();
        Toml::default()
            .set("listener", "address = \"127.0.0.1:0\"")
            .set("tls", format!("certificate = \"{d}/server.pem\""))
            .set("tls", format!("private_key = \"{d}/server.key\""))
            .set("client_auth", format!("trust = [\"{d}/client-ca.pem\"]"))
            .set("upstream", format!("url = \"{upstream_url}\""))
            .set("log", "access_log = false")
            .set("reload", "watch = false")
    }

    /// The base config, parsed (not written).
    pub fn config(&self, upstream_url: &str) -> Config {
        self.toml(upstream_url).config(&self.path("originguard.toml"))
    }

    /// Writes a config file (admin on 127.0.0.1:0, `client_auth` lines as given, plus `extra`
    /// tables) and loads it, so reloads re-read the same file.
    pub fn write_config(&self, upstream_url: &str, client_auth: &str, extra: &str) -> Config {
        let path = self
            .toml(upstream_url)
            .lines("client_auth", client_auth)
            .set("admin", "address = \"127.0.0.1:0\"")
            .append(extra)
            .write(&self.path("originguard.toml"));
        Config::load(&path).expect("valid test config")
    }

    /// Edits the written config file (`from` -> `to`) and loads it again.
    pub fn set_in_config(&self, from: &str, to: &str) -> Config {
        let path = self.path("originguard.toml");
        let text = std::fs::read_to_string(&path).expect("config written");
        assert!(text.contains(from), "{from:?} not in the config");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
        Config::load(&path).expect("valid test config")
    }

    /// A TLS 1.3-only client presenting the fixture's client certificate, offering `alpn`, with
    /// a session cache of its own (tickets offered on later connections).
    pub fn tls13_client(&self, alpn: &[u8]) -> Arc<ClientConfig> {
        client_config(
            &self.server_ca.der,
            Some(&self.client),
            &[&rustls::version::TLS13],
            &[alpn],
        )
    }

    pub fn client_config(&self, client: Option<&ClientCert>) -> Arc<ClientConfig> {
        client_config(
            &self.server_ca.der,
            client,
            &[&rustls::version::TLS13, &rustls::version::TLS12],
            &[b"http/1.1"],
        )
    }
}

pub fn client_config(
    server_ca: &CertificateDer<'static>,
    client: Option<&ClientCert>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(server_ca.clone()).expect("server CA");
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A running proxy on 127.0.0.1:0, wired exactly as `serve` wires it (admin on 127.0.0.1:0
/// when `config.admin` is set).
pub struct ProxyHandle {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

impl ProxyHandle {
    /// Cancels and waits (bounded) for `serve` to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve did not panic");
    }

    /// GET or POST on the admin listener: (status, body).
    pub async fn admin(&self, method: &str, path: &str) -> (StatusCode, String) {
        let addr = self.admin.expect("admin listener configured");
        let stream = TcpStream::connect(addr).await.expect("admin connect");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("admin http1");
        tokio::spawn(conn);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin")
            .body(empty())
            .expect("request");
        let (status, _, body) = collect(send.send_request(request).await.expect("admin response")).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// The value of one metric sample from `/metrics`, e.g. `originguard_handshakes_total{result="ok"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        let (_, text) = self.admin("GET", "/metrics").await;
        metric_value(&text, sample)
    }
}

/// Finds `sample` (name plus exact label set) in an exposition text; 0 when absent.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .map(|value| value.split_whitespace().next().unwrap_or("0").parse().expect("number"))
        .unwrap_or(0.0)
}

pub async fn spawn_proxy(config: Config) -> ProxyHandle {
    let policies = PolicySet::build(&config).expect("policy");
    let listener = TcpListener::bind(config.listener.address).await.expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let (admin_listener, admin) = match &config.admin {
        Some(a) => {
            let l = TcpListener::bind(a.address).await.expect("bind admin");
            let addr = l.local_addr().expect("admin addr");
            (Some(l), Some(addr))
        }
        None => (None, None),
    };
    let shutdown = CancellationToken::new();
    let proxy = originguard::proxy::Proxy::new(&config, policies).expect("upstream");
    let task = tokio::spawn(originguard::app::run(
        config,
        proxy,
        listener,
        admin_listener,
        shutdown.clone(),
    ));
    // Ready once the accept loop runs.
    ProxyHandle {
        addr,
        admin,
        shutdown,
        task,
    }
}

/// Connects and completes the client side of the handshake (SNI `localhost`).
pub async fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    tls_connect_as(addr, "localhost", config).await
}

/// Connects with SNI `name` (an IP address sends no SNI).
pub async fn tls_connect_as(
    addr: SocketAddr,
    name: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).expect("name");
    tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))?
}

/// The alert the proxy sent, if the connection was refused. For TLS 1.3 the client learns of
/// a refused certificate only when it reads after the handshake, so this writes a request and
/// reads; a returned `None` means the proxy answered over HTTP.
pub async fn refusal(addr: SocketAddr, config: Arc<ClientConfig>) -> Option<AlertDescription> {
    refusal_as(addr, "localhost", config).await
}

/// [`refusal`] with SNI `name`.
pub async fn refusal_as(addr: SocketAddr, name: &str, config: Arc<ClientConfig>) -> Option<AlertDescription> {
    let mut tls = match tls_connect_as(addr, name, config).await {
        Ok(tls) => tls,
        Err(e) => return Some(alert_of(&e)),
    };
    // Host = the SNI, so the request belongs to the connection's policy (no 421).
    let _ = tls
        .write_all(format!("GET / HTTP/1.1\r\nhost: {name}\r\n\r\n").as_bytes())
        .await;
    let mut buf = vec![0u8; 1024];
    match tokio::time::timeout(WAIT, tls.read(&mut buf))
        .await
        .expect("bounded read")
    {
        Ok(0) => panic!("connection closed without an alert"),
        Ok(_) => None,
        Err(e) => Some(alert_of(&e)),
    }
}

fn alert_of(e: &std::io::Error) -> AlertDescription {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(alert)) => *alert,
        _ => panic!("expected a TLS alert, got: {e:?}"),
    }
}

/// An HTTP/1.1 client connection over mTLS.
pub async fn h1(addr: SocketAddr, config: Arc<ClientConfig>) -> hyper::client::conn::http1::SendRequest<TestBody> {
    let tls = tls_connect(addr, config).await.expect("handshake");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    send
}

/// An HTTP/2 client connection over mTLS (ALPN h2).
pub async fn h2(
    fx: &Fixture,
    client: &ClientCert,
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<TestBody> {
    let config = client_config(&fx.server_ca.der, Some(client), &[&rustls::version::TLS13], &[b"h2"]);
    let tls = tls_connect(addr, config).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

/// One `GET /` per host, each with that `Host`, all on one HTTP/1.1 client connection; the
/// response bodies, each checked to be a 200.
pub async fn get_each_host(addr: SocketAddr, config: Arc<ClientConfig>, hosts: &[String]) -> Vec<String> {
    let mut send = h1(addr, config).await;
    let mut bodies = Vec::new();
    for host in hosts {
        let request = Request::get("/").header("host", host).body(empty()).expect("request");
        let (status, _, body) = collect(send.send_request(request).await.expect("response")).await;
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, 200, "{host}: {body}");
        bodies.push(body);
    }
    bodies
}

/// `n` concurrent `GET https://localhost{path}` on one HTTP/2 client connection; each
/// response's status and body, in order.
pub async fn get_concurrently(
    send: &hyper::client::conn::http2::SendRequest<TestBody>,
    path: &str,
    n: usize,
) -> Vec<(StatusCode, Bytes)> {
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let mut send = send.clone();
            let request = Request::get(format!("https://localhost{path}"))
                .body(empty())
                .expect("request");
            tokio::spawn(async move {
                let (status, _, body) = collect(send.send_request(request).await.expect("response")).await;
                (status, body)
            })
        })
        .collect();
    let mut responses = Vec::new();
    for request in requests {
        responses.push(request.await.expect("join"));
    }
    responses
}

/// `config` with the admin listener on a free loopback port (for [`ProxyHandle::metric`]).
pub fn with_admin(mut config: Config) -> Config {
    config.admin = Some(originguard::config::AdminConfig {
        address: "127.0.0.1:0".parse().expect("addr"),
    });
    config
}

/// Sends one request on a fresh HTTP/1.1 connection and collects the response.
pub async fn request(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    request: Request<TestBody>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut send = h1(addr, config).await;
    let response = tokio::time::timeout(WAIT, send.send_request(request))
        .await
        .expect("bounded")
        .expect("response");
    collect(response).await
}

pub async fn collect(response: Response<Incoming>) -> (StatusCode, HeaderMap, Bytes) {
    let status = response.status();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("bounded")
        .expect("body")
        .to_bytes();
    (status, headers, body)
}

/// Reads an HTTP/1.1 response head byte by byte (nothing after it is consumed), bounded by
/// [`WAIT`].
pub async fn read_head(stream: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("bounded")
            .expect("read");
        assert_eq!(
            n,
            1,
            "closed before the response head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Sends an HTTP/1.1 WebSocket upgrade for `/ws` and returns the response head, lower case.
pub async fn websocket_upgrade(stream: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin)) -> String {
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: localhost\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
              sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
        )
        .await
        .expect("write");
    read_head(stream).await.to_ascii_lowercase()
}

/// Writes `message` and asserts the same bytes come back (the test backend echoes a tunnel).
pub async fn assert_echoes(stream: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin), message: &[u8]) {
    stream.write_all(message).await.expect("write");
    let mut buf = vec![0u8; message.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("bounded")
        .expect("echo");
    assert_eq!(buf, message);
}

pub fn get(path: &str) -> Request<TestBody> {
    Request::get(path)
        .header("host", "localhost")
        .body(empty())
        .expect("request")
}

/// One `connection: close` request on a fresh connection with SNI and Host `name`: how the
/// handshake went (full or resumed) once the response arrived, or the alert that refused it.
pub async fn request_once(
    addr: SocketAddr,
    name: &str,
    config: Arc<ClientConfig>,
) -> Result<rustls::HandshakeKind, AlertDescription> {
    let mut tls = match tls_connect_as(addr, name, config).await {
        Ok(tls) => tls,
        Err(e) => return Err(alert_of(&e)),
    };
    let kind = tls.get_ref().1.handshake_kind().expect("handshake done");
    tls.write_all(format!("GET / HTTP/1.1\r\nhost: {name}\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = Vec::new();
    match tokio::time::timeout(WAIT, tls.read_to_end(&mut out))
        .await
        .expect("bounded")
    {
        Ok(_) => {
            let head = String::from_utf8_lossy(&out);
            assert!(head.starts_with("HTTP/1.1 200"), "accepted, but not forwarded: {head}");
            Ok(kind)
        }
        Err(e) => Err(alert_of(&e)),
    }
}

/// Reads until the peer closes or errors; false if it stays open for `wait`.
pub async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read_to_close = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, read_to_close).await.is_ok()
}

/// Writes raw bytes over an mTLS connection and reads until the proxy closes or `WAIT`.
pub async fn raw_exchange(addr: SocketAddr, config: Arc<ClientConfig>, bytes: &[u8]) -> String {
    let mut tls = tls_connect(addr, config).await.expect("handshake");
    tls.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

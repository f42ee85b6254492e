//! The identity and policy promise against hostile clients (issue 10): each test sends the
//! bytes an attacker would and asserts on what the backend received, on the status, and on the
//! metric. Loopback only; every wait bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use rustls::{AlertDescription, ClientConfig, HandshakeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;
use originguard::config::{AllowLists, HostConfig, Underscores, UpstreamProtocol};

/// The fixture's config with the admin listener on 127.0.0.1:0.
/// Writes `bytes` on a fresh mTLS connection (SNI localhost) and returns everything read until
/// the proxy closes (requests carry `connection: close`).
async fn exchange(proxy: &ProxyHandle, fx: &Fixture, bytes: &[u8]) -> String {
    raw_exchange(proxy.addr, fx.client_config(Some(&fx.client)), bytes).await
}

/// One request on a new connection, in the background: its status and how long it took
/// (including any wait for the proxy to accept it).
fn timed_request(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
) -> tokio::task::JoinHandle<(http::StatusCode, Duration)> {
    tokio::spawn(async move {
        let started = Instant::now();
        let (status, _, _) = request(addr, config, get("/")).await;
        (status, started.elapsed())
    })
}

/// A WebSocket tunnel through the proxy to the backend's `/ws` echo (101 already read).
async fn open_tunnel(proxy: &ProxyHandle, fx: &Fixture) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut tunnel = tls_connect(proxy.addr, fx.client_config(Some(&fx.client)))
        .await
        .expect("handshake");
    tunnel
        .write_all(b"GET /ws HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tunnel.read(&mut buf).await.expect("101");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    tunnel
}

// ---------------------------------------------------------------------------------------------
// 1. Identity headers in every spelling, in headers and trailers.

#[tokio::test]
async fn forged_identity_headers_never_reach_the_backend_in_any_spelling() {
    let fx = Fixture::new();
    let backend = RawBackend::start().await;
    let proxy = spawn_proxy(with_admin(fx.config(&backend.url()))).await;
    let forged = "GET /x HTTP/1.1\r\nhost: localhost\r\n\
        X_Forwarded_Client_Cert: Hash=forged1\r\nx-forwarded-client-cert: Hash=forged2\r\n\
        Client_Cert: :Zm9yZ2Vk:\r\nCLIENT-CERT-CHAIN: :Zm9yZ2Vk:\r\nclient_cert_chain: :Zm9yZ2Vk:\r\n\
        X-SSL-Client-S-DN: CN=admin\r\nx_ssl_client_verify: SUCCESS\r\nSsl_Client_Cert: forged3\r\n\
        X_Forwarded_For: 6.6.6.6\r\nX_Forwarded_Host: evil.example\r\nx_forwarded_proto: gopher\r\n\
        Transfer_Encoding: chunked\r\nContent_Length: 99\r\n\
        x_app_id: 7\r\nconnection: close\r\n\r\n";
    let response = exchange(&proxy, &fx, forged.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    let wire = format!("{:?}", request.headers).to_ascii_lowercase();
    for forged in [
        "forged",
        "zm9yz2vk",
        "cn=admin",
        "success",
        "6.6.6.6",
        "evil.example",
        "gopher",
        "transfer_encoding",
        "content_length",
        "x_forwarded",
        "client_cert",
        "x-ssl-client",
        "ssl_client",
    ] {
        assert!(!wire.contains(forged), "{forged} reached the backend: {wire}");
    }
    let xfcc = request.header("x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1, "{wire}");
    assert!(
        xfcc[0].starts_with("Hash=") && xfcc[0].contains("CN=client-1"),
        "{xfcc:?}"
    );
    // Other underscore names pass under the default `with_underscores = "allow"`.
    assert_eq!(request.header("x_app_id"), ["7"]);

    // HTTP/2: the same spellings as lowercase fields.
    let mut send = h2(&fx, &fx.client, proxy.addr).await;
    let request = Request::get("https://localhost/h2")
        .header("x_forwarded_client_cert", "Hash=forged-h2")
        .header("client_cert", ":Zm9yZ2Vk:")
        .header("x-forwarded-tls-client-cert", "forged-traefik")
        .body(empty())
        .expect("request");
    let (status, _, _) = collect(send.send_request(request).await.expect("response")).await;
    assert_eq!(status, 200);
    let wire = format!("{:?}", backend.requests()[1].headers).to_ascii_lowercase();
    assert!(!wire.contains("forged") && !wire.contains("zm9yz2vk"), "{wire}");
    assert_eq!(proxy.metric("originguard_requests_total{code=\"200\"}").await, 2.0);
    proxy.stop().await;
}

#[tokio::test]
async fn forged_identity_trailers_are_removed_and_the_trailer_header_cleaned() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let forged = "POST /trailers HTTP/1.1\r\nhost: localhost\r\n\
        trailer: X_Forwarded_Client_Cert, client-cert, x-app\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
        3\r\nabc\r\n0\r\nX_Forwarded_Client_Cert: Hash=forged\r\nclient-cert: :Zm9yZ2Vk:\r\nx-forwarded-for: 6.6.6.6\r\nx-app: 1\r\n\r\n";
    let response = exchange(&proxy, &fx, forged.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = backend.last();
    assert_eq!(seen.headers["trailer"], "x-app", "{:?}", seen.headers);
    let trailers = seen.trailers.unwrap_or_default();
    let names: Vec<&str> = trailers.keys().map(|n| n.as_str()).collect();
    assert!(
        !names.iter().any(|n| n.contains("client") || n.contains("forwarded")),
        "{names:?}"
    );
    assert_eq!(seen.headers.get_all("x-forwarded-client-cert").iter().count(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn underscore_names_can_be_dropped_or_refused() {
    let fx = Fixture::new();
    let backend = RawBackend::start().await;
    let mut config = with_admin(fx.config(&backend.url()));
    config.headers.with_underscores = Underscores::Drop;
    let proxy = spawn_proxy(config.clone()).await;
    let request = b"GET / HTTP/1.1\r\nhost: localhost\r\nx_app_id: 7\r\nx-app-id: 8\r\nconnection: close\r\n\r\n";
    assert!(exchange(&proxy, &fx, request).await.starts_with("HTTP/1.1 200"));
    assert_eq!(backend.requests()[0].header("x_app_id"), Vec::<&str>::new());
    assert_eq!(backend.requests()[0].header("x-app-id"), ["8"]);
    proxy.stop().await;

    config.headers.with_underscores = Underscores::Reject;
    let proxy = spawn_proxy(config).await;
    let response = exchange(&proxy, &fx, request).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    // A protected spelling is removed, never a reason to refuse.
    let protected = b"GET / HTTP/1.1\r\nhost: localhost\r\nx_forwarded_client_cert: x\r\nconnection: close\r\n\r\n";
    assert!(exchange(&proxy, &fx, protected).await.starts_with("HTTP/1.1 200"));
    assert_eq!(backend.requests().len(), 2, "the refused request reached the backend");
    assert_eq!(proxy.metric("originguard_requests_total{code=\"400\"}").await, 1.0);
    proxy.stop().await;
}

#[tokio::test]
async fn forwarded_gets_the_proxy_element_last_like_x_forwarded_for() {
    let fx = Fixture::new();
    let backend = RawBackend::start().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let request = b"GET / HTTP/1.1\r\nhost: localhost\r\nforwarded: for=6.6.6.6;host=evil\r\nx-forwarded-for: 6.6.6.6\r\nconnection: close\r\n\r\n";
    assert!(exchange(&proxy, &fx, request).await.starts_with("HTTP/1.1 200"));
    let seen = &backend.requests()[0];
    assert_eq!(
        seen.header("forwarded"),
        ["for=6.6.6.6;host=evil, for=127.0.0.1;proto=https;host=\"localhost\""]
    );
    assert_eq!(seen.header("x-forwarded-for"), ["6.6.6.6, 127.0.0.1"]);
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Hosts a backend could read as another host.

#[tokio::test]
async fn hosts_a_backend_could_misread_are_refused_and_the_guard_uses_the_normalised_host() {
    let fx = Fixture::new();
    let backend = RawBackend::start().await;
    let mut config = with_admin(fx.config(&backend.url()));
    // a.example is its own policy; the connection below is verified under the default one.
    config.hosts.push(HostConfig {
        server_names: vec!["a.example".into()],
        certificate: fx.path("server.pem"),
        private_key: fx.path("server.key"),
        client_auth: config.client_auth.clone(),
        upstream: None,
    });
    let proxy = spawn_proxy(config).await;
    let bad = [
        "host: localhost\r\nhost: a.example\r\n",
        "host: a.example\r\nhost: localhost\r\n",
        "host: user@a.example\r\n",
        "host: a.example:443:443\r\n",
        "host: a.example:abc\r\n",
        "host: a.example/foo\r\n",
        "host: a.example..\r\n",
        "host: a.example%2f\r\n",
        "host: \r\n",
        "",
    ];
    for (i, hosts) in bad.iter().enumerate() {
        let request = format!("GET /{i} HTTP/1.1\r\n{hosts}connection: close\r\n\r\n");
        let response = exchange(&proxy, &fx, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{hosts:?}: {response}");
    }
    // An absolute-form target must agree with Host.
    let response = exchange(
        &proxy,
        &fx,
        b"GET http://a.example/ HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    // Case and one trailing dot do not hide the host from the 421 guard.
    let response = exchange(
        &proxy,
        &fx,
        b"GET / HTTP/1.1\r\nhost: A.EXAMPLE.:8443\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 421"), "{response}");
    // HTTP/2: userinfo in :authority, and host differing from :authority.
    let mut send = h2(&fx, &fx.client, proxy.addr).await;
    for request in [
        Request::get("https://user@a.example/").body(empty()),
        Request::get("https://localhost/")
            .header("host", "a.example")
            .body(empty()),
    ] {
        let response = send.send_request(request.expect("request")).await.expect("response");
        assert_eq!(response.status(), 400);
    }
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());
    assert_eq!(
        proxy.metric("originguard_requests_total{code=\"400\"}").await,
        (bad.len() + 3) as f64
    );
    // The plain host still works.
    let ok = exchange(
        &proxy,
        &fx,
        b"GET / HTTP/1.1\r\nhost: Localhost.\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(backend.requests()[0].header("host"), ["Localhost."]);
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Lifetimes: an expired certificate ends resumption and open connections.

fn short_lived(fx: &Fixture, seconds: i64) -> (ClientCert, Instant) {
    let now = time::OffsetDateTime::now_utc();
    let leaf = fx.client_ca.leaf(Leaf {
        not_after: now + time::Duration::seconds(seconds),
        ..Leaf::client("short-lived")
    });
    (leaf, Instant::now() + Duration::from_secs(seconds as u64 + 2))
}

#[tokio::test]
async fn resumption_and_open_connections_end_when_the_client_certificate_expires() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(with_admin(fx.config(&backend.url()))).await;
    let (leaf, expired_at) = short_lived(&fx, 3);
    let tls13 = client_config(
        &fx.server_ca.der,
        Some(&leaf),
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
    );
    let tls12 = client_config(
        &fx.server_ca.der,
        Some(&leaf),
        &[&rustls::version::TLS12],
        &[b"http/1.1"],
    );
    for config in [&tls13, &tls12] {
        assert_eq!(
            request_once(proxy.addr, "localhost", config.clone()).await,
            Ok(HandshakeKind::Full)
        );
        assert_eq!(
            request_once(proxy.addr, "localhost", config.clone()).await,
            Ok(HandshakeKind::Resumed)
        );
    }
    // A kept-alive connection opened while the certificate is valid.
    let mut open = h1(proxy.addr, tls13.clone()).await;
    assert_eq!(open.send_request(get("/")).await.expect("response").status(), 200);

    tokio::time::sleep_until(expired_at.into()).await;
    for config in [&tls13, &tls12] {
        // The client offers its ticket; the proxy refuses it, and the full handshake that
        // follows refuses the certificate.
        assert_eq!(
            request_once(proxy.addr, "localhost", config.clone()).await,
            Err(AlertDescription::CertificateExpired)
        );
    }
    assert!(
        open.send_request(get("/")).await.is_err(),
        "a connection outlived its client certificate"
    );
    assert_eq!(
        proxy.metric("originguard_handshakes_total{result=\"expired\"}").await,
        2.0
    );
    assert_eq!(backend.count(), 5);
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Reloads judge open connections; connections have a maximum age.

#[tokio::test]
async fn reload_that_distrusts_a_client_closes_its_open_connections() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.write_config(&backend.url(), "", "")).await;
    let mut idle = h1(proxy.addr, fx.client_config(Some(&fx.client))).await;
    assert_eq!(idle.send_request(get("/")).await.expect("response").status(), 200);
    let mut busy = h1(proxy.addr, fx.client_config(Some(&fx.client))).await;
    let mut multiplexed = h2(&fx, &fx.client, proxy.addr).await;
    let in_flight = tokio::spawn(async move {
        let response = busy.send_request(get("/slow?ms=1500")).await.expect("slow response");
        let closing = response.headers().get("connection").cloned();
        let (status, _, _) = collect(response).await;
        (status, closing, busy.send_request(get("/")).await.is_err())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The client CA is replaced: its clients are no longer trusted.
    fx.write("client-ca.pem", &Ca::root("replacement CA").pem);
    let (status, body) = proxy.admin("POST", "/reload").await;
    assert_eq!(status, 200, "{body}");

    // The request in flight completes, with `connection: close`, and the connection ends.
    let (status, closing, closed) = in_flight.await.expect("join");
    assert_eq!(status, 200);
    assert_eq!(closing.as_ref().map(|v| v.as_bytes()), Some(&b"close"[..]));
    assert!(closed, "the connection stayed open after its response");
    // The idle HTTP/1.1 connection and the HTTP/2 one (GOAWAY) are closed.
    assert!(idle.send_request(get("/")).await.is_err(), "idle h1 connection kept");
    let h2_after = multiplexed
        .send_request(Request::get("https://localhost/").body(empty()).expect("request"))
        .await;
    assert!(
        h2_after.is_err(),
        "h2 connection kept: {:?}",
        h2_after.map(|r| r.status())
    );
    assert_eq!(backend.count(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn connections_are_closed_at_max_connection_age() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.listener.max_connection_age = Duration::from_millis(700);
    let proxy = spawn_proxy(config).await;
    let mut h1_conn = h1(proxy.addr, fx.client_config(Some(&fx.client))).await;
    let mut h2_conn = h2(&fx, &fx.client, proxy.addr).await;
    assert_eq!(h1_conn.send_request(get("/")).await.expect("h1").status(), 200);
    let h2_get = || Request::get("https://localhost/").body(empty()).expect("request");
    assert_eq!(h2_conn.send_request(h2_get()).await.expect("h2").status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        h1_conn.send_request(get("/")).await.is_err(),
        "h1 connection outlived its age"
    );
    assert!(
        h2_conn.send_request(h2_get()).await.is_err(),
        "h2 connection outlived its age"
    );
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. The admin listener cannot starve the proxy.

#[tokio::test]
async fn a_flooded_admin_port_under_a_low_fd_limit_does_not_stop_the_proxy() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let served = serve_with(
        &fx,
        &backend.url(),
        ServeOptions {
            fd_limit: Some(96),
            ..ServeOptions::default()
        },
    )
    .await;
    let mut flood = Vec::new();
    for _ in 0..200 {
        match TcpStream::connect(served.admin).await {
            Ok(stream) => flood.push(stream),
            Err(_) => break,
        }
    }
    assert!(flood.len() >= 100, "only {} admin connections", flood.len());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config = fx.client_config(Some(&fx.client));
    for _ in 0..10 {
        let (status, _, _) = tokio::time::timeout(WAIT, request(served.addr, config.clone(), get("/")))
            .await
            .expect("the proxy answers while its admin port is flooded");
        assert_eq!(status, 200);
    }
    // Once the flood goes, the admin endpoints answer again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let probe = tokio::time::timeout(Duration::from_secs(2), served.admin("GET", "/healthz")).await;
        if matches!(probe, Ok((status, _)) if status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "admin did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Pending handshakes are bounded apart from verified connections.

#[tokio::test]
async fn pending_handshakes_are_capped_without_crowding_out_verified_connections() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.listener.max_handshakes = 2;
    config.listener.handshake_timeout = Duration::from_millis(1500);
    let proxy = spawn_proxy(config).await;
    let mut verified = h1(proxy.addr, fx.client_config(Some(&fx.client))).await;

    // Two peers that send nine bytes of a ClientHello and stall hold both handshake slots.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
            .await
            .expect("write");
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let newcomer = timed_request(proxy.addr, fx.client_config(Some(&fx.client)));
    // The verified connection is not crowded out.
    for _ in 0..3 {
        assert_eq!(verified.send_request(get("/")).await.expect("verified").status(), 200);
    }
    // The newcomer waits for a slot: the stalled peers time out first.
    let (status, waited) = tokio::time::timeout(WAIT, newcomer)
        .await
        .expect("bounded")
        .expect("join");
    assert_eq!(status, 200);
    assert!(
        waited >= Duration::from_millis(800),
        "handshake slot not waited for: {waited:?}"
    );
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. Tunnels keep their permit and their idle timeout.

#[tokio::test]
async fn websocket_tunnels_hold_a_connection_permit_and_close_when_idle() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.listener.max_connections = 1;
    config.listener.idle_timeout = Duration::from_millis(800);
    let proxy = spawn_proxy(config).await;
    let mut tunnel = open_tunnel(&proxy, &fx).await;
    let mut buf = vec![0u8; 1024];
    tunnel.write_all(b"ping").await.expect("write");
    let n = tunnel.read(&mut buf).await.expect("echo");
    assert_eq!(&buf[..n], b"ping");

    // The tunnel holds the only connection permit: a second client waits.
    let second = timed_request(proxy.addr, fx.client_config(Some(&fx.client)));
    // Without traffic either way the tunnel closes at idle_timeout, freeing the permit.
    let started = Instant::now();
    assert!(closed_within(&mut tunnel, WAIT).await, "idle tunnel kept open");
    assert!(started.elapsed() >= Duration::from_millis(500));
    let (status, waited) = tokio::time::timeout(WAIT, second)
        .await
        .expect("bounded")
        .expect("join");
    assert_eq!(status, 200);
    assert!(
        waited >= Duration::from_millis(400),
        "the tunnel did not hold its permit: {waited:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_tunnel_is_closed_when_the_drain_ends() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.listener.drain_timeout = Duration::from_millis(500);
    let proxy = spawn_proxy(config).await;
    let mut tunnel = open_tunnel(&proxy, &fx).await;
    // Traffic keeps flowing while the drain runs; the drain's end closes the tunnel anyway.
    let stopped = tokio::spawn(proxy.stop());
    for _ in 0..3 {
        tunnel.write_all(b"x").await.expect("write during the drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed_within(&mut tunnel, WAIT).await, "tunnel outlived the drain");
    tokio::time::timeout(WAIT, stopped)
        .await
        .expect("serve returned")
        .expect("no panic");
}

// ---------------------------------------------------------------------------------------------
// 8 and 9. Certificate purpose and allow-lists.

#[tokio::test]
async fn leaves_unfit_for_client_auth_are_refused_as_bad_purpose() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(with_admin(fx.config(&backend.url()))).await;
    let cert_sign_only = fx.client_ca.leaf(Leaf {
        key_usages: Some(vec![KeyUsagePurpose::KeyCertSign]),
        ..Leaf::client("ku")
    });
    let server_auth_only = fx.client_ca.leaf(Leaf {
        ekus: vec![ExtendedKeyUsagePurpose::ServerAuth],
        ..Leaf::client("eku")
    });
    for leaf in [&cert_sign_only, &server_auth_only] {
        assert_eq!(
            refusal(proxy.addr, fx.client_config(Some(leaf))).await,
            Some(AlertDescription::UnsupportedCertificate)
        );
    }
    assert_eq!(
        proxy
            .metric("originguard_handshakes_total{result=\"bad_purpose\"}")
            .await,
        2.0
    );
    assert_eq!(backend.count(), 0);
    proxy.stop().await;
}

/// Presents `chain` but signs CertificateVerify with `key`: what a client holding someone
/// else's certificate (Cloudflare's shared origin-pull certificate is public) can do.
#[derive(Debug)]
struct Presents(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Presents {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_certificate_presented_without_its_private_key_is_refused_as_bad_signature() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(with_admin(fx.config(&backend.url()))).await;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // Same key type as the victim's, so the client offers a scheme the certificate allows.
    let thief_key = provider
        .key_provider
        .load_private_key(fx.client_ca.leaf(Leaf::client("thief")).key())
        .expect("key");
    let stolen = Arc::new(rustls::sign::CertifiedKey::new(fx.client.chain.clone(), thief_key));
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(fx.server_ca.der.clone()).expect("server CA");
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .expect("version")
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(Presents(stolen.clone())));
        assert_eq!(
            refusal(proxy.addr, Arc::new(config)).await,
            Some(AlertDescription::DecryptError),
            "{version:?}"
        );
    }
    assert_eq!(
        proxy
            .metric("originguard_handshakes_total{result=\"bad_signature\"}")
            .await,
        2.0
    );
    // The victim's own client, with its key, still gets in: the certificate itself is fine.
    let (status, _, _) = request(proxy.addr, fx.client_config(Some(&fx.client)), get("/")).await;
    assert_eq!(status, 200);
    assert_eq!(backend.count(), 1, "only the key holder's request reached the backend");
    proxy.stop().await;
}

#[tokio::test]
async fn allow_lists_match_one_cn_exactly_and_never_a_wildcard_certificate() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = with_admin(fx.config(&backend.url()));
    config.client_auth.allow = AllowLists {
        subjects: vec!["CN=origin".into()],
        ..AllowLists::default()
    };
    let proxy = spawn_proxy(config.clone()).await;
    let origin = fx.client_ca.leaf(Leaf::client("origin"));
    let smuggled = fx.client_ca.leaf(Leaf {
        extra_cns: vec!["attacker".into()],
        ..Leaf::client("origin")
    });
    assert_eq!(refusal(proxy.addr, fx.client_config(Some(&origin))).await, None);
    assert_eq!(
        refusal(proxy.addr, fx.client_config(Some(&smuggled))).await,
        Some(AlertDescription::AccessDenied)
    );
    proxy.stop().await;

    config.client_auth.allow = AllowLists {
        dns_names: vec!["*.example.com".into()],
        ..AllowLists::default()
    };
    let proxy = spawn_proxy(config).await;
    let named = fx.client_ca.leaf(Leaf {
        sans: vec!["edge.example.com".into()],
        ..Leaf::client("named")
    });
    let wildcard = fx.client_ca.leaf(Leaf {
        sans: vec!["*.example.com".into()],
        ..Leaf::client("wildcard")
    });
    assert_eq!(refusal(proxy.addr, fx.client_config(Some(&named))).await, None);
    assert_eq!(
        refusal(proxy.addr, fx.client_config(Some(&wildcard))).await,
        Some(AlertDescription::AccessDenied)
    );
    assert_eq!(
        proxy
            .metric("originguard_handshakes_total{result=\"not_allowed\"}")
            .await,
        1.0
    );
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 10. h2c upstream against a strict real HTTP/2 server: Debian's nginx.

/// nginx serving h2c on a Unix socket, answering with what it parsed.
fn nginx_h2c(fx: &Fixture) -> (nginx::Nginx, std::path::PathBuf) {
    nginx_h2c_with(
        fx,
        "",
        "default_type text/plain;\n   return 200 \"host=$host xfcc=$http_x_forwarded_client_cert\\n\";",
    )
}

/// nginx serving h2c on a Unix socket, with `directives` in its server block and `location` as
/// the inside of `location /`.
fn nginx_h2c_with(fx: &Fixture, directives: &str, location: &str) -> (nginx::Nginx, std::path::PathBuf) {
    let dir = fx.path("nginx");
    let socket = dir.join("h2c.sock");
    let server = format!(
        "  listen unix:{} http2;\n  {directives}\n  location / {{\n   {location}\n  }}",
        socket.display()
    );
    let nginx = nginx::Nginx::start(&dir, &server, nginx::Ready::Socket(&socket));
    (nginx, socket)
}

/// nginx's answer naming the host it parsed and its connection's serial number.
const HOST_AND_CONNECTION: &str = "default_type text/plain;\n   return 200 \"host=$host conn=$connection\\n\";";

/// The proxy forwarding as h2c to the Unix socket `socket`, with its admin listener.
async fn h2c_proxy(fx: &Fixture, socket: &std::path::Path) -> ProxyHandle {
    let mut config = with_admin(fx.config(&format!("unix:{}", socket.display())));
    config.upstream.protocol = UpstreamProtocol::H2c;
    spawn_proxy(config).await
}

#[tokio::test]
async fn h2c_upstream_sends_the_client_host_as_authority_to_a_real_nginx() {
    let fx = Fixture::new();
    let (_nginx, socket) = nginx_h2c(&fx);
    let mut config = fx.config(&format!("unix:{}", socket.display()));
    config.upstream.protocol = UpstreamProtocol::H2c;
    let proxy = spawn_proxy(config).await;
    let h1_config: Arc<ClientConfig> = fx.client_config(Some(&fx.client));
    let (status, _, body) = request(proxy.addr, h1_config, get("/")).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("host=localhost xfcc=Hash="), "{body}");
    // And from an HTTP/2 client, whose :authority becomes the upstream :authority.
    let mut send = h2(&fx, &fx.client, proxy.addr).await;
    let response = send
        .send_request(Request::get("https://localhost/h2").body(empty()).expect("request"))
        .await
        .expect("response");
    let (status, _, body) = collect(response).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).starts_with("host=localhost"));
    proxy.stop().await;
}

/// The value of `name=` in a line of `name=value` pairs.
fn field<'a>(body: &'a str, name: &str) -> &'a str {
    body.split_whitespace()
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name}= in {body:?}"))
}

/// HTTP/2 carries every host over one upstream connection, each stream with its own
/// `:authority` (hyper-util's pool, keyed by authority, opened one connection per host), and
/// replaces the connection when nginx closes it (`keepalive_requests 4`: GOAWAY after four).
#[tokio::test]
async fn h2c_upstream_carries_every_host_over_one_connection_and_replaces_it_when_closed() {
    let fx = Fixture::new();
    let (nginx, socket) = nginx_h2c_with(&fx, "keepalive_requests 4;", HOST_AND_CONNECTION);
    let proxy = h2c_proxy(&fx, &socket).await;
    let hosts: Vec<String> = (0..12).map(|i| format!("app-{i}.example")).collect();
    let bodies = get_each_host(proxy.addr, fx.client_config(Some(&fx.client)), &hosts).await;
    let mut connections = Vec::new();
    for (host, body) in hosts.iter().zip(&bodies) {
        assert_eq!(field(body, "host"), host, "{} / {}", body, nginx.error_log());
        connections.push(field(body, "conn").to_string());
    }
    // Four requests per connection, whatever their hosts: 12 hosts, 3 connections in turn.
    let expected: Vec<&String> = connections.iter().step_by(4).flat_map(|c| [c; 4]).collect();
    assert_eq!(connections.iter().collect::<Vec<_>>(), expected);
    connections.dedup();
    assert_eq!(connections.len(), 3, "{connections:?}");
    proxy.stop().await;
}

/// Concurrent requests across an h2c upstream's GOAWAYs (nginx `keepalive_requests 10`, eight
/// client connections at once): streams above a GOAWAY's last stream id were not processed, and
/// are sent again on a new connection instead of becoming 502s (as they did before).
#[tokio::test]
async fn h2c_requests_refused_by_a_goaway_are_sent_again_on_a_new_connection() {
    let fx = Fixture::new();
    let (nginx, socket) = nginx_h2c_with(&fx, "keepalive_requests 10;", HOST_AND_CONNECTION);
    let proxy = h2c_proxy(&fx, &socket).await;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (addr, config) = (proxy.addr, fx.client_config(Some(&fx.client)));
            let hosts = vec!["app.example".to_string(); 25];
            tokio::spawn(async move { get_each_host(addr, config, &hosts).await })
        })
        .collect();
    let mut connections = std::collections::HashSet::new();
    for client in clients {
        for body in client.await.expect("every request got a 200") {
            connections.insert(field(&body, "conn").to_string());
        }
    }
    // 200 requests, 10 per connection: at least 20 connections, each ended by a GOAWAY.
    assert!(connections.len() >= 20, "{} / {}", connections.len(), nginx.error_log());
    assert_eq!(proxy.metric("originguard_requests_total{code=\"200\"}").await, 200.0);
    proxy.stop().await;
}

/// A connection that sent GOAWAY stays open while its last streams finish (nginx
/// `keepalive_requests 1` with a slow first request): a request that comes meanwhile goes on a
/// new connection, not on the going-away one, and both get their 200.
#[tokio::test]
async fn a_request_during_a_goaway_drain_takes_a_new_connection() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let location = format!("proxy_pass {};", backend.url());
    let (nginx, socket) = nginx_h2c_with(&fx, "keepalive_requests 1;", &location);
    let proxy = h2c_proxy(&fx, &socket).await;
    let send = h2(&fx, &fx.client, proxy.addr).await;
    let slow = {
        let send = send.clone();
        tokio::spawn(async move { get_concurrently(&send, "/slow?ms=2000", 1).await })
    };
    // The slow request is upstream (its stream is the connection's last) before the next goes.
    let deadline = std::time::Instant::now() + WAIT;
    while backend.count() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (status, _) in get_concurrently(&send, "/next", 1).await {
        assert_eq!(status, 200, "{}", nginx.error_log());
    }
    for (status, body) in slow.await.expect("join") {
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"slow");
    }
    proxy.stop().await;
}

/// An upstream that allows fewer concurrent streams than a fresh connection assumes before its
/// SETTINGS arrive (nginx `http2_max_concurrent_streams 2`) refuses the extra streams with
/// `REFUSED_STREAM`: unprocessed, so they are sent again — on the same connection, which is
/// healthy — and every request gets its 200.
#[tokio::test]
async fn h2c_streams_refused_over_the_upstreams_stream_limit_are_sent_again() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let location = format!("proxy_pass {};", backend.url());
    let (nginx, socket) = nginx_h2c_with(&fx, "http2_max_concurrent_streams 2;", &location);
    let proxy = h2c_proxy(&fx, &socket).await;
    let send = h2(&fx, &fx.client, proxy.addr).await;
    for (status, _) in get_concurrently(&send, "/slow?ms=200", 10).await {
        assert_eq!(status, 200, "{}", nginx.error_log());
    }
    assert_eq!(backend.count(), 10);
    proxy.stop().await;
}

/// A TCP relay to `target` whose open connections can be cut off silently: bytes stop flowing
/// both ways but the sockets stay open (a peer that vanished without a FIN or RST). Connections
/// made after the cut flow normally.
struct BlackHoleRelay {
    addr: std::net::SocketAddr,
    /// Connections numbered below this are black holes.
    cut: Arc<tokio::sync::watch::Sender<usize>>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl BlackHoleRelay {
    async fn start(target: std::net::SocketAddr) -> BlackHoleRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(tokio::sync::watch::channel(0).0);
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (c, a) = (cut.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let id = a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                tokio::spawn(Self::pump(ir, ow, id, c.subscribe()));
                tokio::spawn(Self::pump(or, iw, id, c.subscribe()));
            }
        });
        BlackHoleRelay { addr, cut, accepted }
    }

    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        id: usize,
        mut cut: tokio::sync::watch::Receiver<usize>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if *cut.borrow_and_update() > id {
                // Hold both sockets open and move nothing, for the rest of the test.
                let _held = (from, to);
                return std::future::pending::<()>().await;
            }
            tokio::select! {
                read = from.read(&mut buf) => match read {
                    Ok(n) if n > 0 && *cut.borrow() <= id => {
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    Ok(n) if n > 0 => {}
                    _ => return,
                },
                _ = cut.changed() => {}
            }
        }
    }

    /// Every connection open now becomes a black hole.
    fn cut_open_connections(&self) {
        let accepted = self.accepted.load(std::sync::atomic::Ordering::SeqCst);
        self.cut.send_replace(accepted);
    }
}

/// A shared HTTP/2 upstream connection whose peer vanishes without a FIN or RST is found dead
/// by PING (sent while streams are open, at a quarter of `response_timeout`) and replaced:
/// without it every later request would take the dead connection and time out, until TCP gave
/// up on it minutes later.
#[tokio::test]
async fn a_silently_dead_h2c_upstream_connection_is_found_by_ping_and_replaced() {
    let fx = Fixture::new();
    let backend = Backend::tcp_with(Protocol::H2c).await;
    let relay = BlackHoleRelay::start(backend.addr.expect("tcp")).await;
    let mut config = fx.config(&format!("http://{}", relay.addr));
    config.upstream.protocol = UpstreamProtocol::H2c;
    config.upstream.response_timeout = Duration::from_secs(4);
    let proxy = spawn_proxy(config).await;
    let client = fx.client_config(Some(&fx.client));
    assert_eq!(request(proxy.addr, client.clone(), get("/before")).await.0, 200);

    relay.cut_open_connections();
    // Caught in the black hole: a 502 once PING finds the connection dead (after ~2 s), or a
    // 504 at the response timeout on a machine so busy that PING came too late — then the next
    // request's PINGs find it. Either way a new connection serves what follows; without PING
    // every request would be a 504.
    let (status, _, _) = request(proxy.addr, client.clone(), get("/lost")).await;
    assert!(status == 502 || status == 504, "{status}");
    let mut after: Vec<u16> = Vec::new();
    while after.last() != Some(&200) && after.len() < 3 {
        after.push(request(proxy.addr, client.clone(), get("/after")).await.0.as_u16());
    }
    assert_eq!(after.last(), Some(&200), "{after:?}");
    assert_eq!(relay.accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    let paths: Vec<String> = backend.requests().iter().map(|s| s.uri.clone()).collect();
    assert!(paths.iter().any(|p| p.ends_with("/after")), "{paths:?}");
    assert!(!paths.iter().any(|p| p.ends_with("/lost")), "{paths:?}");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 11. Framing and timeouts as documented.

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_in_either_order() {
    let fx = Fixture::new();
    let backend = RawBackend::start().await;
    let proxy = spawn_proxy(with_admin(fx.config(&backend.url()))).await;
    for head in [
        "content-length: 5\r\ntransfer-encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        let request = format!("POST / HTTP/1.1\r\nhost: localhost\r\n{head}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: localhost\r\n\r\n");
        let response = exchange(&proxy, &fx, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{head:?}: {response}");
        assert!(!response.contains("HTTP/1.1 200"), "{response}");
    }
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());
    assert_eq!(proxy.metric("originguard_requests_total{code=\"400\"}").await, 2.0);
    proxy.stop().await;
}

#[tokio::test]
async fn header_and_idle_timeouts_apply_where_documented() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.listener.header_read_timeout = Duration::from_millis(400);
    config.listener.idle_timeout = Duration::from_secs(60);
    let proxy = spawn_proxy(config).await;
    let client = fx.client_config(Some(&fx.client));

    // A client that completes the handshake and sends nothing: closed at header_read_timeout,
    // long before idle_timeout.
    let mut silent = tls_connect(proxy.addr, client.clone()).await.expect("handshake");
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "silent client held"
    );

    // An idle kept-alive connection outlives header_read_timeout (idle_timeout applies).
    let mut kept = h1(proxy.addr, client.clone()).await;
    assert_eq!(kept.send_request(get("/")).await.expect("first").status(), 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(kept.send_request(get("/")).await.expect("after idle").status(), 200);

    // Once a later head starts, it must complete within header_read_timeout.
    let mut slow = tls_connect(proxy.addr, client).await.expect("handshake");
    slow.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = slow.read(&mut buf).await.expect("first response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    slow.write_all(b"GET / HTTP/1.1\r\nhost: loc").await.expect("write");
    assert!(closed_within(&mut slow, Duration::from_secs(5)).await, "slow head held");
    assert_eq!(backend.count(), 3);
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 12. Logging never takes the process down.

#[tokio::test]
async fn a_vanished_log_reader_costs_log_lines_not_the_process() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let served = serve_with(
        &fx,
        &backend.url(),
        ServeOptions {
            access_log: true,
            close_stderr: true,
            ..ServeOptions::default()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let config = fx.client_config(Some(&fx.client));
    for _ in 0..20 {
        let (status, _, _) = request(served.addr, config.clone(), get("/")).await;
        assert_eq!(status, 200);
    }
    // Refused handshakes and admin traffic log too.
    let stranger = Ca::root("stranger").leaf(Leaf::client("x"));
    assert!(refusal(served.addr, fx.client_config(Some(&stranger))).await.is_some());
    assert!(served.metric("originguard_log_dropped_total").await >= 20.0);
    let (status, _) = served.admin("GET", "/healthz").await;
    assert_eq!(status, 200);
    served.signal("TERM");
    assert_eq!(served.wait(), Some(0));
}

#[tokio::test]
async fn a_tunnel_closes_when_a_reload_refuses_its_client_or_its_connection_ages_out() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.write_config(&backend.url(), "", "")).await;
    let mut tunnel = open_tunnel(&proxy, &fx).await;
    let mut second = open_tunnel(&proxy, &fx).await;
    // A reload that keeps trusting the client leaves the tunnel alone...
    let (status, _) = proxy.admin("POST", "/reload").await;
    assert_eq!(status, 200);
    tunnel.write_all(b"still").await.expect("write");
    let mut buf = [0u8; 16];
    let n = tunnel.read(&mut buf).await.expect("echo");
    assert_eq!(&buf[..n], b"still");
    // ...one that distrusts it closes it, like any other connection of that client.
    fx.write("client-ca.pem", &Ca::root("replacement CA").pem);
    let (status, _) = proxy.admin("POST", "/reload").await;
    assert_eq!(status, 200);
    assert!(
        closed_within(&mut tunnel, WAIT).await,
        "tunnel outlived the client's revocation"
    );
    assert!(
        closed_within(&mut second, WAIT).await,
        "tunnel outlived the client's revocation"
    );
    proxy.stop().await;

    // max_connection_age bounds tunnels too.
    let fx = Fixture::new();
    let mut config = fx.config(&backend.url());
    config.listener.max_connection_age = Duration::from_millis(700);
    let proxy = spawn_proxy(config).await;
    let mut tunnel = open_tunnel(&proxy, &fx).await;
    assert!(
        closed_within(&mut tunnel, WAIT).await,
        "tunnel outlived max_connection_age"
    );
    proxy.stop().await;
}

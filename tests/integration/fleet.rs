//! Fleet deployment (issue 12): replicas sharing session-ticket keys.

use std::sync::Arc;
use std::time::Duration;

use rustls::HandshakeKind;

use crate::support::*;

#[tokio::test]
async fn replicas_with_one_ticket_key_file_resume_each_others_sessions_until_keys_or_trust_change() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let keys = fx.path("ticket.keys");
    let pki = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
            .args(["pki", "ticket-keys", "--out", keys.to_str().expect("utf-8")])
            .args(args)
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    pki(&[]);
    let mut config = fx.config(&backend.url());
    config.tls.ticket_keys = Some(keys.clone());
    let a = spawn_proxy(config.clone()).await;
    let b = spawn_proxy(config.clone()).await;
    let client = fx.tls13_client(b"http/1.1");

    // A ticket issued by replica A resumes on replica B (and the identity is forwarded again).
    assert_eq!(
        request_once(a.addr, "localhost", client.clone()).await,
        Ok(HandshakeKind::Full)
    );
    assert_eq!(
        request_once(b.addr, "localhost", client.clone()).await,
        Ok(HandshakeKind::Resumed)
    );
    let seen = backend.last();
    assert!(seen.headers["x-forwarded-client-cert"]
        .to_str()
        .expect("ascii")
        .contains("CN=client-1"));

    // A rotation keeps the previous key for decryption...
    pki(&["--keep", "2"]);
    let rotated = spawn_proxy(config.clone()).await;
    let fresh = fx.tls13_client(b"http/1.1");
    assert_eq!(
        request_once(a.addr, "localhost", fresh.clone()).await,
        Ok(HandshakeKind::Full)
    );
    assert_eq!(
        request_once(rotated.addr, "localhost", fresh.clone()).await,
        Ok(HandshakeKind::Resumed)
    );
    // ...until it is rotated out.
    pki(&["--keep", "1"]);
    let rotated_out = spawn_proxy(config.clone()).await;
    let fresh = fx.tls13_client(b"http/1.1");
    assert_eq!(
        request_once(a.addr, "localhost", fresh.clone()).await,
        Ok(HandshakeKind::Full)
    );
    assert_eq!(
        request_once(rotated_out.addr, "localhost", fresh.clone()).await,
        Ok(HandshakeKind::Full)
    );

    // Same keys, changed trust (a CRL added): no ticket of the old trust resumes.
    let current = spawn_proxy(config.clone()).await;
    let fresh = fx.tls13_client(b"http/1.1");
    assert_eq!(
        request_once(current.addr, "localhost", fresh.clone()).await,
        Ok(HandshakeKind::Full)
    );
    let crl = fx.write("client.crl", &fx.client_ca.crl(&[4242]));
    let mut with_crl = config.clone();
    with_crl.client_auth.crl = vec![crl];
    let stricter = spawn_proxy(with_crl).await;
    assert_eq!(
        request_once(stricter.addr, "localhost", fresh.clone()).await,
        Ok(HandshakeKind::Full)
    );
    // Control: the same trust on another replica does resume.
    let twin = spawn_proxy(config).await;
    let control = fx.tls13_client(b"http/1.1");
    assert_eq!(
        request_once(current.addr, "localhost", control.clone()).await,
        Ok(HandshakeKind::Full)
    );
    assert_eq!(
        request_once(twin.addr, "localhost", control).await,
        Ok(HandshakeKind::Resumed)
    );
    for proxy in [a, b, rotated, rotated_out, current, stricter, twin] {
        proxy.stop().await;
    }
}

#[tokio::test]
async fn systemd_hears_ready_reloading_and_stopping_and_shutdown_delay_keeps_serving() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let socket_path = fx.path("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let served = serve_with(
        &fx,
        &backend.url(),
        ServeOptions {
            listener_extra: "shutdown_delay = \"1500ms\"",
            notify_socket: Some(&socket_path),
            ..ServeOptions::default()
        },
    )
    .await;
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    let (status, _) = served.admin("POST", "/reload").await;
    assert_eq!(status, 200);
    assert_eq!(next(), "RELOADING=1");
    assert!(next().starts_with("READY=1\nSTATUS=reloaded"));
    // A failed reload still ends with READY=1, and says why.
    fx.write("client-ca.pem", "not a certificate");
    let (status, _) = served.admin("POST", "/reload").await;
    assert_eq!(status, 500);
    assert_eq!(next(), "RELOADING=1");
    assert!(next().starts_with("READY=1\nSTATUS=reload failed: "));
    fx.write("client-ca.pem", &fx.client_ca.pem);

    // SIGTERM: STOPPING=1 and /readyz 503 at once, yet requests are still served during the delay.
    served.signal("TERM");
    assert_eq!(next(), "STOPPING=1");
    let (status, _) = served.admin("GET", "/readyz").await;
    assert_eq!(status, 503);
    let (status, _, _) = request(served.addr, fx.client_config(Some(&fx.client)), get("/")).await;
    assert_eq!(status, 200, "not serving during listener.shutdown_delay");
    assert_eq!(served.wait(), Some(0));
}

#[tokio::test]
async fn a_host_with_its_own_upstream_is_routed_there_and_falls_back_key_by_key() {
    let fx = Fixture::new();
    let main_app = Backend::tcp().await;
    let api_app = Backend::tcp().await;
    let text = fx
        .toml(&main_app.url())
        .set("upstream", "response_timeout = \"7s\"")
        .append(&format!(
            "[[hosts]]\nserver_names = [\"a.example\"]\n[hosts.upstream]\nurl = \"{}\"\n\
             [[hosts]]\nserver_names = [\"b.example\"]\n",
            api_app.url()
        ))
        .text();
    let config = originguard::config::Config::from_toml(&fx.path("og.toml"), &text).expect("valid");
    let own = config.hosts[0]
        .upstream
        .as_ref()
        .expect("a.example has its own upstream");
    assert_eq!(
        own.response_timeout,
        std::time::Duration::from_secs(7),
        "unset keys come from [upstream]"
    );
    assert!(config.hosts[1].upstream.is_none());
    let proxy = spawn_proxy(config).await;
    let client = fx.client_config(Some(&fx.client));
    assert_eq!(
        request_once(proxy.addr, "a.example", client.clone()).await,
        Ok(HandshakeKind::Full)
    );
    assert_eq!((api_app.count(), main_app.count()), (1, 0));
    assert_eq!(
        request_once(proxy.addr, "b.example", client.clone()).await,
        Ok(HandshakeKind::Full)
    );
    assert_eq!(
        request_once(proxy.addr, "localhost", client).await,
        Ok(HandshakeKind::Full)
    );
    assert_eq!((api_app.count(), main_app.count()), (1, 2));
    proxy.stop().await;
    // A bad key inside [hosts.upstream] names itself.
    let bad = text.replace("[hosts.upstream]\n", "[hosts.upstream]\nprotocol = \"h3\"\n");
    let e = originguard::config::Config::from_toml(&fx.path("og.toml"), &bad).expect_err("invalid");
    assert_eq!(e.key, "hosts[0].upstream.protocol");
}

/// Writes a Kubernetes-style Secret volume version: `dir/..<version>/{server.pem,server.key}`,
/// then points `..data` at it with an atomic rename, as the kubelet does.
fn secret_version(dir: &std::path::Path, version: &str, pem: &str, key: &str) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("server.pem"), pem).expect("write");
    std::fs::write(data.join("server.key"), key).expect("write");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for name in ["server.pem", "server.key"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("symlink");
        }
    }
}

/// The server certificate a new connection is offered.
async fn served_certificate(fx: &Fixture, addr: std::net::SocketAddr) -> rustls::pki_types::CertificateDer<'static> {
    let tls = tls_connect(addr, fx.client_config(Some(&fx.client)))
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("server chain")[0].clone()
}

#[tokio::test]
async fn a_secret_style_symlink_swap_is_served_without_a_signal_and_a_broken_one_is_not() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let secret = fx.path("secret");
    std::fs::create_dir_all(&secret).expect("mkdir");
    let first = fx.server_ca.leaf(Leaf::server());
    secret_version(&secret, "v1", &first.pem, &first.key_pem);
    let path = fx
        .toml(&backend.url())
        .set(
            "tls",
            format!("certificate = \"{}\"", secret.join("server.pem").display()),
        )
        .set(
            "tls",
            format!("private_key = \"{}\"", secret.join("server.key").display()),
        )
        .set("admin", "address = \"127.0.0.1:0\"")
        .set("reload", "watch = true")
        .set("reload", "debounce = \"200ms\"")
        .write(&fx.path("og.toml"));
    let proxy = spawn_proxy(originguard::config::Config::load(&path).expect("valid")).await;
    assert_eq!(served_certificate(&fx, proxy.addr).await, first.chain[0]);

    // cert-manager renews, the kubelet swaps ..data: served within seconds, no signal.
    let second = fx.server_ca.leaf(Leaf::server());
    secret_version(&secret, "v2", &second.pem, &second.key_pem);
    let deadline = std::time::Instant::now() + WAIT;
    while served_certificate(&fx, proxy.addr).await != second.chain[0] {
        assert!(
            std::time::Instant::now() < deadline,
            "the swapped certificate was not served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(proxy.metric("originguard_reloads_total{result=\"ok\"}").await, 1.0);

    // A broken version (a key that does not match) keeps the running one, and is counted.
    let third = fx.server_ca.leaf(Leaf::server());
    secret_version(&secret, "v3", &third.pem, &second.key_pem);
    let deadline = std::time::Instant::now() + WAIT;
    while proxy.metric("originguard_reloads_total{result=\"error\"}").await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the broken change was not tried");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(served_certificate(&fx, proxy.addr).await, second.chain[0]);
    // The next good change is picked up.
    secret_version(&secret, "v4", &third.pem, &third.key_pem);
    let deadline = std::time::Instant::now() + WAIT;
    while served_certificate(&fx, proxy.addr).await != third.chain[0] {
        assert!(
            std::time::Instant::now() < deadline,
            "the fixed certificate was not served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    proxy.stop().await;
}

/// One request over TLS after `preamble` (a PROXY header) on a fresh TCP connection: the status,
/// or `None` when the proxy closed the connection instead.
async fn behind_balancer(fx: &Fixture, addr: std::net::SocketAddr, preamble: &[u8]) -> Option<u16> {
    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(preamble).await.expect("write header");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(fx.client_config(Some(&fx.client))).connect(name, tcp),
    )
    .await
    .expect("bounded")
    .ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.ok()?;
    tokio::spawn(conn);
    let response = tokio::time::timeout(WAIT, send.send_request(get("/")))
        .await
        .expect("bounded")
        .ok()?;
    Some(response.status().as_u16())
}

#[tokio::test]
async fn proxy_protocol_sets_the_peer_from_allowed_balancers_only() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = with_admin(fx.config(&backend.url()));
    config.listener.proxy_protocol = true;
    config.listener.proxy_protocol_from = vec![originguard::peers::IpNet::parse("127.0.0.0/8").expect("net")];
    config.listener.allow_peers = vec![
        originguard::peers::IpNet::parse("198.51.100.0/24").expect("net"),
        originguard::peers::IpNet::parse("2001:db8::/32").expect("net"),
    ];
    let proxy = spawn_proxy(config.clone()).await;

    // v1 from an allowed client behind the balancer.
    let v1 = b"PROXY TCP4 198.51.100.7 203.0.113.1 51000 443\r\n";
    assert_eq!(behind_balancer(&fx, proxy.addr, v1).await, Some(200));
    assert_eq!(backend.last().headers["x-forwarded-for"], "198.51.100.7");
    // v2, IPv6.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x21, 0, 36]);
    v2.extend_from_slice(&"2001:db8::7".parse::<std::net::Ipv6Addr>().expect("v6").octets());
    v2.extend_from_slice(&"2001:db8::1".parse::<std::net::Ipv6Addr>().expect("v6").octets());
    v2.extend_from_slice(&[0xc7, 0x38, 0x01, 0xbb]);
    assert_eq!(behind_balancer(&fx, proxy.addr, &v2).await, Some(200));
    assert_eq!(backend.last().headers["x-forwarded-for"], "2001:db8::7");
    // A client outside allow_peers (by its PROXY source), no header, a malformed one: closed.
    let outsider = b"PROXY TCP4 192.0.2.1 203.0.113.1 51000 443\r\n";
    assert_eq!(behind_balancer(&fx, proxy.addr, outsider).await, None);
    assert_eq!(behind_balancer(&fx, proxy.addr, b"").await, None);
    assert_eq!(
        behind_balancer(&fx, proxy.addr, b"PROXY TCP4 nonsense here\r\n").await,
        None
    );
    assert_eq!(backend.count(), 2);
    assert_eq!(proxy.metric("originguard_proxy_protocol_refused_total").await, 2.0);
    assert_eq!(proxy.metric("originguard_peers_refused_total").await, 1.0);
    proxy.stop().await;

    // Only listed balancers may send the header at all.
    config.listener.proxy_protocol_from = vec![originguard::peers::IpNet::parse("10.0.0.0/8").expect("net")];
    let proxy = spawn_proxy(config).await;
    assert_eq!(behind_balancer(&fx, proxy.addr, v1).await, None);
    assert_eq!(proxy.metric("originguard_proxy_protocol_refused_total").await, 1.0);
    assert_eq!(backend.count(), 2);
    proxy.stop().await;
}

/// nginx serving TLS (the fixture's server certificate, h2 and http/1.1 by ALPN) and requiring
/// a client certificate from the fixture's client CA; it answers with what it saw.
fn nginx_tls(fx: &Fixture) -> (nginx::Nginx, std::net::SocketAddr) {
    nginx_tls_with(fx, " http2")
}

/// [`nginx_tls`] with `listen` options (`" http2"`, or `""` for http/1.1 only); the answer also
/// names nginx's connection serial number.
fn nginx_tls_with(fx: &Fixture, listen: &str) -> (nginx::Nginx, std::net::SocketAddr) {
    let d = fx.dir.path().display();
    let addr = nginx::free_port();
    let server = format!(
        "  listen {addr} ssl{listen};\n  ssl_certificate {d}/server.pem;\n  ssl_certificate_key {d}/server.key;\n\
         ssl_client_certificate {d}/client-ca.pem;\n  ssl_verify_client on;\n\
         location / {{\n   default_type text/plain;\n\
         return 200 \"proto=$server_protocol host=$host client=$ssl_client_s_dn xfcc=$http_x_forwarded_client_cert conn=$connection\\n\";\n  }}"
    );
    let nginx = nginx::Nginx::start(&fx.path("nginx-tls"), &server, nginx::Ready::Tcp(addr));
    (nginx, addr)
}

/// The fixture's config forwarding to `https://localhost:PORT`, verified against `ca` and
/// presenting the fixture's client certificate (written to `upstream-client.{pem,key}`).
fn https_upstream(fx: &Fixture, addr: std::net::SocketAddr, ca: &std::path::Path) -> originguard::config::Config {
    let cert = fx.write("upstream-client.pem", &fx.client.pem);
    let key = fx.write("upstream-client.key", &fx.client.key_pem);
    let mut config = with_admin(fx.config(&format!("https://localhost:{}", addr.port())));
    config.upstream.tls.ca = vec![ca.to_path_buf()];
    config.upstream.tls.client_certificate = Some((cert, key));
    config
}

#[tokio::test]
async fn an_https_upstream_is_verified_and_alpn_chooses_h2_against_a_real_nginx() {
    let fx = Fixture::new();
    let (nginx, addr) = nginx_tls(&fx);
    let server_ca = fx.write("upstream-ca.pem", &fx.server_ca.pem);
    let config = https_upstream(&fx, addr, &server_ca);
    assert_eq!(config.upstream.protocol, originguard::config::UpstreamProtocol::Alpn);
    let proxy = spawn_proxy(config.clone()).await;
    let client = fx.client_config(Some(&fx.client));
    for path in ["/one", "/two"] {
        let (status, _, body) = request(proxy.addr, client.clone(), get(path)).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "{body} / {}", nginx.error_log());
        // ALPN chose h2; nginx saw the client's host, our client certificate, and the identity.
        assert!(
            body.starts_with("proto=HTTP/2.0 host=localhost client=CN=client-1"),
            "{body}"
        );
        assert!(body.contains("xfcc=Hash="), "{body}");
    }
    proxy.stop().await;

    // protocol = "http1" offers only http/1.1.
    let mut http1 = config;
    http1.upstream.protocol = originguard::config::UpstreamProtocol::Http1;
    let proxy = spawn_proxy(http1).await;
    let (status, _, body) = request(proxy.addr, client, get("/")).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("proto=HTTP/1.1 host=localhost"), "{body}");
    proxy.stop().await;
}

/// Many hosts on one client connection reach an HTTPS upstream over one upstream connection,
/// whichever protocol ALPN chose: h2 (one shared connection, `:authority` per stream) or
/// http/1.1 (one pool, `Host` per request).
#[tokio::test]
async fn an_https_upstream_carries_every_host_over_one_connection_with_h2_or_http1() {
    let fx = Fixture::new();
    let hosts: Vec<String> = (0..10).map(|i| format!("app-{i}.example")).collect();
    for (listen, proto) in [(" http2", "HTTP/2.0"), ("", "HTTP/1.1")] {
        let (nginx, addr) = nginx_tls_with(&fx, listen);
        let proxy = spawn_proxy(https_upstream(
            &fx,
            addr,
            &fx.write("upstream-ca.pem", &fx.server_ca.pem),
        ))
        .await;
        let bodies = get_each_host(proxy.addr, fx.client_config(Some(&fx.client)), &hosts).await;
        let mut connections: Vec<&str> = Vec::new();
        for (host, body) in hosts.iter().zip(&bodies) {
            assert!(
                body.starts_with(&format!("proto={proto} host={host} ")),
                "{body} / {}",
                nginx.error_log()
            );
            connections.push(body.trim_end().rsplit("conn=").next().expect("conn"));
        }
        connections.dedup();
        assert_eq!(connections.len(), 1, "{proto}: {connections:?}");
        proxy.stop().await;
    }
}

/// Requests waiting for the same HTTP/2 connection attempt share its failure: against an upstream
/// that accepts TCP and never answers TLS, eight concurrent requests each get a 502 after one
/// handshake timeout (1 s), instead of queueing one timeout after another into 504s (4 s).
#[tokio::test]
async fn requests_waiting_for_a_failed_h2_connection_attempt_share_its_502() {
    let fx = Fixture::new();
    // Accepts and counts TCP connections, and never answers a ClientHello.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = attempts.clone();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    let mut config = https_upstream(&fx, addr, &fx.write("upstream-ca.pem", &fx.server_ca.pem));
    config.upstream.connect_timeout = Duration::from_secs(1);
    config.upstream.response_timeout = Duration::from_secs(4);
    let proxy = spawn_proxy(config).await;
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let client = fx.client_config(Some(&fx.client));
            tokio::spawn(async move { request(proxy.addr, client, get("/")).await.0 })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.expect("join"), 502);
    }
    assert_eq!(
        proxy.metric("originguard_upstream_errors_total{kind=\"tls\"}").await,
        8.0
    );
    // One attempt for all eight (two if a request came only after the first had failed).
    let attempts = attempts.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2).contains(&attempts), "{attempts} connection attempts");
    proxy.stop().await;
    silent.abort();
}

/// A WebSocket through an HTTPS upstream that speaks h2: the upgrade takes a connection that
/// offered only http/1.1 (HTTP/2 has no Upgrade), and the tunnel carries bytes both ways —
/// through Debian's nginx terminating TLS (client certificate required) and proxying to the
/// test backend.
#[tokio::test]
async fn a_websocket_reaches_the_app_through_an_https_upstream_that_speaks_h2() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let d = fx.dir.path().display();
    let addr = nginx::free_port();
    let server = format!(
        "  listen {addr} ssl http2;\n  ssl_certificate {d}/server.pem;\n  ssl_certificate_key {d}/server.key;\n\
         ssl_client_certificate {d}/client-ca.pem;\n  ssl_verify_client on;\n\
         location / {{\n   proxy_pass {};\n   proxy_http_version 1.1;\n\
         proxy_set_header Upgrade $http_upgrade;\n   proxy_set_header Connection \"upgrade\";\n\
         proxy_set_header X-Seen-Protocol $server_protocol;\n  }}",
        backend.url()
    );
    let nginx = nginx::Nginx::start(&fx.path("nginx-ws"), &server, nginx::Ready::Tcp(addr));
    let proxy = spawn_proxy(https_upstream(
        &fx,
        addr,
        &fx.write("upstream-ca.pem", &fx.server_ca.pem),
    ))
    .await;

    // An ordinary request first: ALPN picks h2 with this nginx.
    let client = fx.client_config(Some(&fx.client));
    let (status, _, _) = request(proxy.addr, client.clone(), get("/plain")).await;
    assert_eq!(status, 200, "{}", nginx.error_log());
    assert_eq!(backend.last().headers["x-seen-protocol"], "HTTP/2.0");

    let mut tls = tls_connect(proxy.addr, client).await.expect("handshake");
    let head = websocket_upgrade(&mut tls).await;
    assert!(head.starts_with("http/1.1 101"), "{head} / {}", nginx.error_log());
    let seen = backend.last();
    assert_eq!(seen.headers["x-seen-protocol"], "HTTP/1.1", "the upgrade went over h2");
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert!(seen.headers.contains_key("x-forwarded-client-cert"));
    for message in [&b"hello"[..], b"through two TLS hops"] {
        assert_echoes(&mut tls, message).await;
    }
    drop(tls);
    proxy.stop().await;
}

#[tokio::test]
async fn an_https_upstream_with_a_certificate_from_another_ca_gets_502_and_a_tls_error() {
    let fx = Fixture::new();
    let (_nginx, addr) = nginx_tls(&fx);
    // The client CA did not issue nginx's certificate.
    let wrong = fx.path("client-ca.pem");
    let proxy = spawn_proxy(https_upstream(&fx, addr, &wrong)).await;
    let client = fx.client_config(Some(&fx.client));
    let (status, _, body) = request(proxy.addr, client.clone(), get("/")).await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        proxy.metric("originguard_upstream_errors_total{kind=\"tls\"}").await,
        1.0
    );
    proxy.stop().await;

    // The right CA, the wrong name: verified against server_name, not just the chain.
    let mut config = https_upstream(&fx, addr, &fx.write("upstream-ca.pem", &fx.server_ca.pem));
    config.upstream.tls.server_name = Some("not-the-upstream.example".into());
    let proxy = spawn_proxy(config).await;
    let (status, _, _) = request(proxy.addr, client.clone(), get("/")).await;
    assert_eq!(status, 502);
    assert_eq!(
        proxy.metric("originguard_upstream_errors_total{kind=\"tls\"}").await,
        1.0
    );
    proxy.stop().await;

    // No client certificate: nginx refuses the request (400), it reaches no app.
    let mut config = https_upstream(&fx, addr, &fx.path("upstream-ca.pem"));
    config.upstream.tls.client_certificate = None;
    let proxy = spawn_proxy(config).await;
    let (status, _, _) = request(proxy.addr, client, get("/")).await;
    assert_eq!(
        status, 400,
        "nginx answers 400 to a request without the required certificate"
    );
    proxy.stop().await;
}

#[test]
fn https_upstream_files_are_checked_at_startup_and_name_their_key() {
    let fx = Fixture::new();
    let mut config = fx.config("https://localhost:1");
    config.upstream.tls.ca = vec![fx.path("missing-ca.pem")];
    let policies = originguard::tls::PolicySet::build(&config).expect("policies");
    let e = originguard::proxy::Proxy::new(&config, policies)
        .err()
        .expect("missing CA file");
    assert_eq!(e.key, "upstream.ca[0]");
    assert!(e.message.contains("missing-ca.pem"), "{}", e.message);

    let mut config = fx.config("https://localhost:1");
    let key_only = fx.write("other.key", &fx.client_ca.leaf(Leaf::client("other")).key_pem);
    config.upstream.tls.client_certificate = Some((fx.write("c.pem", &fx.client.pem), key_only));
    let policies = originguard::tls::PolicySet::build(&config).expect("policies");
    let e = originguard::proxy::Proxy::new(&config, policies)
        .err()
        .expect("key does not match");
    assert_eq!(e.key, "upstream.client_key");
}

#[tokio::test]
async fn a_reload_that_breaks_the_https_upstream_keeps_the_running_one() {
    let fx = Fixture::new();
    let (_nginx, addr) = nginx_tls(&fx);
    let ca = fx.write("upstream-ca.pem", &fx.server_ca.pem);
    let cert = fx.write("upstream-client.pem", &fx.client.pem);
    let key = fx.write("upstream-client.key", &fx.client.key_pem);
    let upstream = format!(
        "ca = [\"{}\"]\nclient_certificate = \"{}\"\nclient_key = \"{}\"",
        ca.display(),
        cert.display(),
        key.display()
    );
    let path = fx
        .toml(&format!("https://localhost:{}", addr.port()))
        .lines("upstream", &upstream)
        .set("admin", "address = \"127.0.0.1:0\"")
        .write(&fx.path("originguard.toml"));
    let proxy = spawn_proxy(originguard::config::Config::load(&path).expect("valid")).await;
    let client = fx.client_config(Some(&fx.client));
    assert_eq!(request(proxy.addr, client.clone(), get("/")).await.0, 200);

    // The CA file now holds garbage: the reload fails, names the key, and nothing changes.
    fx.write("upstream-ca.pem", "not a certificate");
    let (status, body) = proxy.admin("POST", "/reload").await;
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("upstream.ca[0]"), "{body}");
    assert_eq!(proxy.metric("originguard_reloads_total{result=\"error\"}").await, 1.0);
    assert_eq!(request(proxy.addr, client, get("/")).await.0, 200);
    proxy.stop().await;
}

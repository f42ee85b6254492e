//! Operating it: metrics, admin endpoints, reload under traffic, access log, upgrades, h2c and
//! trailers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::BodyExt;
use rustls::AlertDescription;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Polls a metric until it reaches `at_least` (the server counts just after the client has seen
/// the outcome), bounded by `WAIT`.
async fn wait_metric(proxy: &ProxyHandle, sample: &str, at_least: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let value = proxy.metric(sample).await;
        if value >= at_least || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_metric_name_is_exported() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.write_config(&backend.url(), "", "")).await;
    let (status, _) = proxy.admin("GET", "/healthz").await;
    assert_eq!(status, 200);
    request(proxy.addr, fx.client_config(Some(&fx.client)), get("/")).await;
    wait_metric(&proxy, "originguard_requests_total{code=\"200\"}", 1.0).await;
    let (status, text) = proxy.admin("GET", "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "originguard_handshakes_total{result=\"ok\"}",
        "originguard_handshakes_total{result=\"unknown_issuer\"}",
        "originguard_handshake_duration_seconds_bucket",
        "originguard_tls_resumed_total",
        "originguard_connections_open",
        "originguard_requests_total{code=\"200\"}",
        "originguard_request_duration_seconds_bucket",
        "originguard_upstream_errors_total{kind=\"connect\"}",
        "originguard_reloads_total{result=\"ok\"}",
        "originguard_reloads_total{result=\"error\"}",
        "originguard_certificate_not_after_seconds{role=\"server\",subject=\"CN=localhost\",sha256=\"",
        "originguard_certificate_not_after_seconds{role=\"client_ca\",subject=\"CN=test client CA\",sha256=\"",
        "originguard_peers_refused_total",
        "originguard_build_info{version=\"",
        "originguard_verify_cache_total{result=\"hit\"}",
        "originguard_verify_cache_total{result=\"miss\"}",
        "originguard_tls_negotiated_total{version=\"1.3\",group=\"",
        "originguard_log_dropped_total",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert_eq!(metric_value(&text, "originguard_handshakes_total{result=\"ok\"}"), 1.0);
    let not_after: f64 = text
        .lines()
        .find(|l| l.starts_with("originguard_certificate_not_after_seconds{role=\"server\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("server expiry gauge");
    let in_days = (not_after - OffsetDateTime::now_utc().unix_timestamp() as f64) / 86400.0;
    assert!(
        (89.0..=91.0).contains(&in_days),
        "server cert expiry gauge off: {in_days} days"
    );
    let (status, _) = proxy.admin("GET", "/nope").await;
    assert_eq!(status, 404);
    proxy.stop().await;
}

#[tokio::test]
async fn handshake_failures_are_counted_by_reason() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let revoked = fx.client_ca.leaf(Leaf {
        serial: Some(99),
        ..Leaf::client("revoked")
    });
    let crl = fx.write("crl.pem", &fx.client_ca.crl(&[99]));
    let ca_a = Ca::root("customer A CA");
    let ca_a_file = fx.write("ca-a.pem", &ca_a.pem);
    let extra = format!(
        "[[hosts]]\nserver_names = [\"a.example\"]\n[hosts.client_auth]\ntrust = [\"{}\"]\ncrl = []\nallow_subjects = [\"CN=only-this\"]\n",
        ca_a_file.display()
    );
    let mut config = fx.write_config(&backend.url(), &format!("crl = [\"{}\"]", crl.display()), &extra);
    config.listener.handshake_timeout = Duration::from_millis(300);
    let proxy = spawn_proxy(config).await;
    let now = OffsetDateTime::now_utc();
    let expired = fx.client_ca.leaf(Leaf {
        not_before: now - time::Duration::days(3),
        not_after: now - time::Duration::days(1),
        ..Leaf::client("expired")
    });
    let deep = fx.client_ca.intermediate("i").leaf(Leaf::client("deep"));
    let stranger = Ca::root("stranger").leaf(Leaf::client("x"));
    let not_allowed = ca_a.leaf(Leaf::client("someone-else"));

    let cases: Vec<(&str, Option<&ClientCert>, &str)> = vec![
        ("no_certificate", None, "localhost"),
        ("unknown_issuer", Some(&stranger), "localhost"),
        ("bad_depth", Some(&deep), "localhost"),
        ("expired", Some(&expired), "localhost"),
        ("revoked", Some(&revoked), "localhost"),
        ("not_allowed", Some(&not_allowed), "a.example"),
    ];
    for (reason, client, name) in cases {
        let alert = refusal_as(proxy.addr, name, fx.client_config(client)).await;
        assert!(alert.is_some(), "{reason}: accepted");
        let sample = format!("originguard_handshakes_total{{result=\"{reason}\"}}");
        assert_eq!(wait_metric(&proxy, &sample, 1.0).await, 1.0, "{reason}");
    }
    // A silent TCP peer: timeout.
    let silent = TcpStream::connect(proxy.addr).await.expect("connect");
    assert_eq!(
        wait_metric(&proxy, "originguard_handshakes_total{result=\"timeout\"}", 1.0).await,
        1.0
    );
    drop(silent);
    assert_eq!(proxy.metric("originguard_handshakes_total{result=\"ok\"}").await, 0.0);
    assert_eq!(backend.count(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn readyz_answers_503_while_draining() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.write_config(&backend.url(), "", "")).await;
    let (status, _) = proxy.admin("GET", "/readyz").await;
    assert_eq!(status, 200);
    let in_flight = tokio::spawn(request(
        proxy.addr,
        fx.client_config(Some(&fx.client)),
        get("/slow?ms=1500"),
    ));
    let deadline = tokio::time::Instant::now() + WAIT;
    while backend.count() == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.shutdown.cancel();
    let (status, _) = proxy.admin("GET", "/readyz").await;
    assert_eq!(status, 503, "ready while draining");
    let (status, _) = proxy.admin("GET", "/healthz").await;
    assert_eq!(status, 200);
    let (status, _, _) = in_flight.await.expect("join");
    assert_eq!(status, 200);
    tokio::time::timeout(WAIT, proxy.task)
        .await
        .expect("stops")
        .expect("no panic");
}

#[tokio::test]
async fn reload_rotates_server_certificate_and_client_ca_without_dropping_connections() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.write_config(&backend.url(), "", "")).await;
    let old_client = &fx.client;

    // Connections opened before the reload: HTTP/1.1 keep-alive and HTTP/2.
    let mut h1_conn = h1(proxy.addr, fx.client_config(Some(old_client))).await;
    let h2_conn = h2(&fx, old_client, proxy.addr).await;
    let send_h1 = |send: &mut hyper::client::conn::http1::SendRequest<TestBody>| send.send_request(get("/"));
    assert_eq!(send_h1(&mut h1_conn).await.expect("h1").status(), 200);

    // Rotate: new server key/cert (same server CA), a new client CA trusted beside the old one
    // (the rotation recipe; dropping the old CA closes its clients' connections, see
    // hardening::reload_that_distrusts_a_client_closes_its_open_connections).
    let new_server = fx.server_ca.leaf(Leaf::server());
    fx.write("server.pem", &new_server.pem);
    fx.write("server.key", &new_server.key_pem);
    let new_ca = Ca::root("next client CA");
    fx.write("client-ca.pem", &format!("{}{}", fx.client_ca.pem, new_ca.pem));
    let (status, body) = proxy.admin("POST", "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(proxy.metric("originguard_reloads_total{result=\"ok\"}").await, 1.0);

    // Old connections keep working.
    assert_eq!(send_h1(&mut h1_conn).await.expect("h1 after reload").status(), 200);
    let mut h2_send = h2_conn.clone();
    let response = h2_send
        .send_request(Request::get("https://localhost/").body(empty()).expect("request"))
        .await
        .expect("h2 after reload");
    assert_eq!(response.status(), 200);

    // New connections: both clients accepted, with the new server cert.
    assert_eq!(refusal(proxy.addr, fx.client_config(Some(old_client))).await, None);
    let new_client = new_ca.leaf(Leaf::client("new"));
    let tls = tls_connect(proxy.addr, fx.client_config(Some(&new_client)))
        .await
        .expect("new client");
    let presented = tls.get_ref().1.peer_certificates().expect("server chain")[0].clone();
    assert_eq!(presented, new_server.chain[0], "the new server certificate is served");
    drop(tls);
    assert_eq!(refusal(proxy.addr, fx.client_config(Some(&new_client))).await, None);
    proxy.stop().await;
}

#[tokio::test]
async fn a_broken_file_on_reload_keeps_the_old_state_and_is_counted() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.write_config(&backend.url(), "", "")).await;
    fx.write(
        "client-ca.pem",
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    );
    let (status, body) = proxy.admin("POST", "/reload").await;
    assert_eq!(status, 500);
    assert!(
        body.contains("client_auth.trust[0]") && body.contains("client-ca.pem"),
        "{body}"
    );
    assert_eq!(proxy.metric("originguard_reloads_total{result=\"error\"}").await, 1.0);
    assert_eq!(proxy.metric("originguard_reloads_total{result=\"ok\"}").await, 0.0);
    // The running policy still admits the old client.
    assert_eq!(refusal(proxy.addr, fx.client_config(Some(&fx.client))).await, None);
    // A setting that cannot change live is reported, the rest applied.
    fx.write("client-ca.pem", &fx.client_ca.pem);
    fx.set_in_config("address = \"127.0.0.1:0\"\n[tls]", "address = \"127.0.0.1:1\"\n[tls]");
    let (status, body) = proxy.admin("POST", "/reload").await;
    assert_eq!(status, 200);
    assert!(body.contains("not applied until restart: listener.address"), "{body}");
    assert_eq!(
        refusal(proxy.addr, fx.client_config(Some(&fx.client))).await,
        None,
        "still on the old address"
    );
    // A syntax error in the config file itself: same.
    fx.write("originguard.toml", "[listener\n");
    let (status, _) = proxy.admin("POST", "/reload").await;
    assert_eq!(status, 500);
    assert_eq!(refusal(proxy.addr, fx.client_config(Some(&fx.client))).await, None);
    proxy.stop().await;
}

#[tokio::test]
async fn twenty_reloads_under_concurrent_requests_lose_nothing() {
    let fx = Arc::new(Fixture::new());
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.write_config(&backend.url(), "", "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (fx, stop, ok, failed) = (fx.clone(), stop.clone(), ok.clone(), failed.clone());
        let addr = proxy.addr;
        clients.push(tokio::spawn(async move {
            let config = fx.client_config(Some(&fx.client));
            // Bounded: at most 2,000 requests per client.
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let outcome = async {
                    let mut send = h1(addr, config.clone()).await;
                    for _ in 0..3 {
                        let response = send.send_request(get("/")).await.ok()?;
                        response.into_body().collect().await.ok()?;
                    }
                    Some(())
                };
                match tokio::time::timeout(WAIT, outcome).await {
                    Ok(Some(())) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for _ in 0..20 {
        let (status, body) = proxy.admin("POST", "/reload").await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client task");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed during reloads");
    assert!(ok.load(Ordering::Relaxed) >= 8, "clients made progress");
    assert_eq!(proxy.metric("originguard_reloads_total{result=\"ok\"}").await, 20.0);
    proxy.stop().await;
}

/// Whether one request's handshake resumed (sessions resume with a shared client config).
async fn connect_once(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<bool, AlertDescription> {
    request_once(addr, "localhost", config)
        .await
        .map(|kind| kind == rustls::HandshakeKind::Resumed)
}

#[tokio::test]
async fn after_a_reload_that_revokes_or_untrusts_a_client_its_saved_session_no_longer_resumes() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let client = fx.client_ca.leaf(Leaf {
        serial: Some(4711),
        ..Leaf::client("soon-revoked")
    });
    let proxy = spawn_proxy(fx.write_config(&backend.url(), "", "")).await;
    let config = client_config(
        &fx.server_ca.der,
        Some(&client),
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
    );
    assert_eq!(connect_once(proxy.addr, config.clone()).await, Ok(false));
    assert_eq!(
        connect_once(proxy.addr, config.clone()).await,
        Ok(true),
        "tickets work before the reload"
    );

    let crl = fx.write("crl.pem", &fx.client_ca.crl(&[4711]));
    fx.write_config(&backend.url(), &format!("crl = [\"{}\"]", crl.display()), "");
    let (status, body) = proxy.admin("POST", "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        connect_once(proxy.addr, config.clone()).await,
        Err(AlertDescription::CertificateRevoked)
    );

    // Untrusting: a fresh client resumes, then its CA leaves the trust store.
    let other = fx.client_ca.leaf(Leaf::client("soon-untrusted"));
    let config = client_config(
        &fx.server_ca.der,
        Some(&other),
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
    );
    assert_eq!(connect_once(proxy.addr, config.clone()).await, Ok(false));
    assert_eq!(connect_once(proxy.addr, config.clone()).await, Ok(true));
    let next = Ca::root("next CA");
    fx.write("client-ca.pem", &next.pem);
    fx.write_config(&backend.url(), "", "");
    let (status, body) = proxy.admin("POST", "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(connect_once(proxy.addr, config).await, Err(AlertDescription::UnknownCA));
    proxy.stop().await;
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.write_config(&backend.url(), "", "")).await;
    let mut tls = tls_connect(proxy.addr, fx.client_config(Some(&fx.client)))
        .await
        .expect("handshake");
    let head = websocket_upgrade(&mut tls).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    let seen = backend.last();
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert!(seen.headers.contains_key("x-forwarded-client-cert"));
    for message in [&b"hello"[..], b"through the proxy"] {
        assert_echoes(&mut tls, message).await;
    }
    // The tunnel is a connection: counted, and waited for by the drain.
    assert_eq!(proxy.metric("originguard_connections_open").await, 1.0);
    proxy.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!proxy.task.is_finished(), "the drain did not wait for the open tunnel");
    assert_echoes(&mut tls, b"still there").await;
    drop(tls);
    tokio::time::timeout(WAIT, proxy.task)
        .await
        .expect("drained")
        .expect("no panic");
}

#[tokio::test]
async fn h2c_upstream_multiplexes_concurrent_streams_over_tcp_and_unix() {
    let fx = Fixture::new();
    for unix in [false, true] {
        let socket = fx.path(if unix { "h2c.sock" } else { "unused" });
        let backend = match unix {
            true => Backend::unix_with(&socket, Protocol::H2c).await,
            false => Backend::tcp_with(Protocol::H2c).await,
        };
        let url = match unix {
            true => format!("unix:{}", socket.display()),
            false => backend.url(),
        };
        let mut config = fx.config(&url);
        config.upstream.protocol = originguard::config::UpstreamProtocol::H2c;
        let proxy = spawn_proxy(config).await;
        let send = h2(&fx, &fx.client, proxy.addr).await;
        for (status, body) in get_concurrently(&send, "/slow?ms=200", 10).await {
            assert_eq!(status, 200);
            assert_eq!(&body[..], b"slow");
        }
        assert_eq!(backend.count(), 10);
        assert!(backend.requests().iter().all(|s| s.version == http::Version::HTTP_2));
        assert_eq!(
            backend.connections.load(Ordering::SeqCst),
            1,
            "streams were not multiplexed (unix: {unix})"
        );
        proxy.stop().await;
    }
}

/// Long-lived streams do not make every other request queue behind them: a shared h2c
/// connection carries at most 100 streams, and a second connection opens beside it only then
/// (101 streams: two connections). Streams are given back when their responses end: a second
/// wave of 101 fits on the same two connections.
#[tokio::test]
async fn h2c_upstream_opens_a_second_connection_only_when_the_first_carries_100_streams() {
    let fx = Fixture::new();
    let backend = Backend::tcp_with(Protocol::H2c).await;
    let mut config = fx.config(&backend.url());
    config.upstream.protocol = originguard::config::UpstreamProtocol::H2c;
    let proxy = spawn_proxy(config).await;
    let send = h2(&fx, &fx.client, proxy.addr).await;
    for wave in 1..=2 {
        for (status, _) in get_concurrently(&send, "/slow?ms=3000", 101).await {
            assert_eq!(status, 200);
        }
        assert_eq!(
            backend.connections.load(Ordering::SeqCst),
            2,
            "wave {wave}: 101 streams, 100 per connection"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn trailers_pass_through_both_ways() {
    let fx = Fixture::new();
    let backend = Backend::tcp_with(Protocol::H2c).await;
    let mut config = fx.config(&backend.url());
    config.upstream.protocol = originguard::config::UpstreamProtocol::H2c;
    let proxy = spawn_proxy(config).await;
    let mut send = h2(&fx, &fx.client, proxy.addr).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("abc123"));
    let frames: Vec<Result<hyper::body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> = vec![
        Ok(hyper::body::Frame::data(Bytes::from_static(b"payload"))),
        Ok(hyper::body::Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed();
    let request = Request::post("https://localhost/trailers")
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(body)
        .expect("request");
    let response = send.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.expect("body");
    let response_trailers = collected.trailers().cloned().expect("response trailers");
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"payload"));
    assert_eq!(response_trailers["grpc-status"], "0");
    let seen = backend.last();
    assert_eq!(seen.trailers.expect("request trailers")["x-checksum"], "abc123");
    assert_eq!(seen.headers["te"], "trailers");
    proxy.stop().await;
}

/// An RFC 8441 WebSocket request: extended CONNECT with `:protocol = websocket`.
fn h2_websocket(path: &str) -> Request<TestBody> {
    let mut request = Request::connect(format!("https://localhost{path}"))
        .version(http::Version::HTTP_2)
        .header("sec-websocket-version", "13")
        .body(empty())
        .expect("request");
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    request
}

/// An HTTP/2 WebSocket becomes an HTTP/1.1 upgrade upstream, which an h2c upstream cannot
/// carry: 501, and nothing reaches the backend.
#[tokio::test]
async fn websocket_over_http2_to_an_h2c_upstream_is_501() {
    let fx = Fixture::new();
    let backend = Backend::tcp_with(Protocol::H2c).await;
    let mut config = fx.config(&backend.url());
    config.upstream.protocol = originguard::config::UpstreamProtocol::H2c;
    let proxy = spawn_proxy(config).await;
    let mut send = h2(&fx, &fx.client, proxy.addr).await;
    let response = send.send_request(h2_websocket("/ws")).await.expect("response");
    assert_eq!(response.status(), 501);
    assert_eq!(backend.count(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn websocket_over_http2_extended_connect_reaches_an_http1_backend() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let mut send = h2(&fx, &fx.client, proxy.addr).await;
    let response = send.send_request(h2_websocket("/ws")).await.expect("response");
    assert_eq!(response.status(), 200, "RFC 8441 accepts with 200");
    assert!(response.headers().get("sec-websocket-accept").is_none());
    let seen = backend.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/ws");
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(seen.headers["sec-websocket-version"], "13");
    assert_eq!(seen.headers["sec-websocket-key"].len(), 24, "a fresh base64 key");
    assert!(seen.headers.contains_key("x-forwarded-client-cert"));
    let mut tunnel = hyper_util::rt::TokioIo::new(hyper::upgrade::on(response).await.expect("upgraded"));
    for message in [&b"over h2"[..], b"and back"] {
        assert_echoes(&mut tunnel, message).await;
    }
    // A plain CONNECT is not a forward proxy's tunnel here.
    let plain = Request::connect("https://localhost/").body(empty()).expect("request");
    let response = send.send_request(plain).await.expect("response");
    assert_eq!(response.status(), 501);
    // An open tunnel is in-flight work: close it (END_STREAM) before draining.
    tunnel.shutdown().await.expect("close the tunnel");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, tunnel.read_to_end(&mut rest)).await;
    drop((tunnel, send));
    proxy.stop().await;
}

//! Hostile traffic and faults: floods, non-TLS bytes, churn, request smuggling, backend
//! failures, drain and reload under load. Every loop is bounded in count and time; loopback only.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// 1-3: floods, non-TLS traffic, churn.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_and_trickling_peers_does_not_starve_legitimate_clients() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let served = serve(&fx, &backend.url(), "handshake_timeout = \"1s\"").await;
    let baseline = served.fds();

    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(served.addr).await.expect("connect"));
    }
    let mut tricklers = Vec::new();
    for i in 0..100u8 {
        let addr = served.addr;
        tricklers.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return;
            };
            // A TLS record header, then garbage, one byte every 100 ms (bounded: 40 bytes).
            let mut bytes = vec![0x16, 0x03, 0x01, 0x02, 0x00];
            bytes.extend((0..35).map(|j| i.wrapping_mul(31).wrapping_add(j)));
            for b in bytes {
                if s.write_all(&[b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    // Legitimate requests keep working meanwhile.
    let config = fx.client_config(Some(&fx.client));
    for _ in 0..20 {
        let (status, _, _) = request(served.addr, config.clone(), get("/")).await;
        assert_eq!(status, 200);
    }
    // The silent ones are closed at handshake_timeout.
    let started = Instant::now();
    for s in &mut silent {
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "a silent peer stayed open");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    for t in tricklers {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    drop(silent);
    assert!(served.metric("originguard_handshakes_total{result=\"timeout\"}").await >= 200.0);
    // Descriptors return to the baseline (a few pooled upstream connections may stay).
    let deadline = Instant::now() + WAIT;
    while served.fds() > baseline + 4 {
        assert!(Instant::now() < deadline, "fds {} vs baseline {baseline}", served.fds());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served.metric("originguard_connections_open").await, 0.0);
}

#[tokio::test]
async fn traffic_that_is_not_tls_is_closed_promptly_and_counted() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.listener.handshake_timeout = Duration::from_secs(20);
    config.admin = Some(originguard::config::AdminConfig {
        address: "127.0.0.1:0".parse().expect("addr"),
    });
    let proxy = spawn_proxy(config).await;
    let sslv2_hello = [0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10];
    let sslv3_hello = [0x16, 0x03, 0x00, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00];
    let random: Vec<u8> = (0..512u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("plain HTTP", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        ("SSLv2 hello", sslv2_hello.to_vec()),
        ("SSLv3 hello", sslv3_hello.to_vec()),
        ("random bytes", random),
    ];
    for (what, bytes) in &inputs {
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        s.write_all(bytes).await.expect("write");
        let started = Instant::now();
        let mut buf = vec![0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue, // an alert, then EOF
                Err(_) => panic!("{what}: still open after 5 s"),
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: not closed promptly"
        );
    }
    let counted = proxy
        .metric("originguard_handshakes_total{result=\"protocol_error\"}")
        .await
        + proxy.metric("originguard_handshakes_total{result=\"other\"}").await;
    assert_eq!(counted, inputs.len() as f64);
    assert_eq!(backend.count(), 0);
    // Still serving.
    let (status, _, _) = request(proxy.addr, fx.client_config(Some(&fx.client)), get("/")).await;
    assert_eq!(status, 200);
    proxy.stop().await;
}

/// 20,000 sequential handshakes (half accepted, half refused) in 4 parallel lanes.
/// Tolerances: fds back to the baseline (+4 for pooled upstream connections); RSS within
/// +25 % + 8 MiB of the warmed-up baseline; no connection left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_20000_handshakes_leaks_no_memory_descriptors_or_tasks() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let served = serve(&fx, &backend.url(), "").await;
    fx.write("server-ca.pem", &fx.server_ca.pem);
    fx.write("good.pem", &fx.client.pem);
    fx.write("good.key", &fx.client.key_pem);
    let stranger = Ca::root("stranger").leaf(Leaf::client("x"));
    fx.write("bad.pem", &stranger.pem);
    fx.write("bad.key", &stranger.key_pem);
    let run = |cert: &str, key: &str, n: u64| originguard::tools::loadgen::Options {
        server_name: Some("localhost".into()),
        connections: 4,
        stop: originguard::tools::loadgen::Stop::Connections(n),
        ..originguard::tools::loadgen::Options::new(served.addr.to_string(), fx.path(cert), fx.path(key))
    };
    // Warm up allocator, pools and caches before taking the baseline.
    originguard::tools::loadgen::run(run("good.pem", "good.key", 500))
        .await
        .expect("warm-up");
    originguard::tools::loadgen::run(run("bad.pem", "bad.key", 500))
        .await
        .expect("warm-up");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds_before, rss_before) = (served.fds(), served.rss_kib());

    let mut ok = 0;
    let mut refused = 0;
    for _ in 0..5 {
        let good = originguard::tools::loadgen::run(run("good.pem", "good.key", 2000))
            .await
            .expect("run");
        let bad = originguard::tools::loadgen::run(run("bad.pem", "bad.key", 2000))
            .await
            .expect("run");
        ok += good.successes;
        refused += bad.failures.get("alert_unknown_ca").copied().unwrap_or(0);
    }
    assert_eq!((ok, refused), (10_000, 10_000));

    let deadline = Instant::now() + WAIT;
    while served.metric("originguard_connections_open").await > 0.0 || served.fds() > fds_before + 4 {
        assert!(
            Instant::now() < deadline,
            "connections or fds left behind: fds {} vs {fds_before}",
            served.fds()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_after = served.rss_kib();
    eprintln!(
        "churn: fds {fds_before} -> {}, RSS {rss_before} KiB -> {rss_after} KiB",
        served.fds()
    );
    assert!(
        rss_after <= rss_before + rss_before / 4 + 8 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

// ---------------------------------------------------------------------------------------------
// 4: request smuggling and header abuse. A raw backend records every request it parses, the way
// a simple strict HTTP/1.1 server would; the proxy must either refuse a request or forward it in
// a form that parses to exactly what the proxy itself saw.

/// Sends raw bytes over mTLS and returns every response status line the proxy sent.
async fn raw_statuses(addr: SocketAddr, fx: &Fixture, bytes: &[u8]) -> Vec<String> {
    let reply = raw_exchange(addr, fx.client_config(Some(&fx.client)), bytes).await;
    reply
        .split("\r\n")
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .map(str::to_string)
        .collect()
}

/// Every request the backend parsed came from the proxy's own serialization: exactly one
/// identity header, unambiguous framing.
fn assert_clean(requests: &[WireRequest]) {
    for r in requests {
        assert_eq!(r.header("x-forwarded-client-cert").len(), 1, "{r:?}");
        let te = r.header("transfer-encoding");
        let cl = r.header("content-length");
        assert!(te.is_empty() || cl.is_empty(), "both TE and CL forwarded: {r:?}");
        assert!(cl.len() <= 1, "duplicate Content-Length forwarded: {r:?}");
    }
}

#[tokio::test]
async fn http1_framing_attacks_are_refused_or_normalized() {
    let fx = Fixture::new();
    let backend = RawBackend::start().await;
    let proxy = spawn_proxy(fx.config(&format!("http://{}", backend.addr))).await;
    let cases: Vec<(&str, &[u8])> = vec![
        (
            "CL and TE together, smuggled request after a zero chunk",
            b"POST /a HTTP/1.1\r\nhost: localhost\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: localhost\r\n\r\n",
        ),
        (
            "duplicate conflicting Content-Length",
            b"POST /b HTTP/1.1\r\nhost: localhost\r\ncontent-length: 3\r\ncontent-length: 30\r\n\r\nabc",
        ),
        ("obs-fold", b"GET /c HTTP/1.1\r\nhost: localhost\r\nx-folded: a\r\n  b\r\n\r\n"),
        (
            "invalid chunk size",
            b"POST /d HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding the backend would read differently",
            b"POST /e HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "space before colon",
            b"GET /f HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding : chunked\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let before = backend.requests().len();
        let statuses = raw_statuses(proxy.addr, &fx, bytes).await;
        let forwarded = &backend.requests()[before..];
        assert_clean(forwarded);
        assert!(
            forwarded.iter().all(|r| !r.line.contains("/smuggled")),
            "{what}: the backend saw a request the proxy did not forward as such: {forwarded:?}"
        );
        // Whatever was answered 200 is exactly what the backend parsed, one for one.
        let ok = statuses.iter().filter(|s| s.starts_with("HTTP/1.1 200")).count();
        assert_eq!(
            ok,
            forwarded.len(),
            "{what}: statuses {statuses:?}, backend saw {forwarded:?}"
        );
        assert!(
            statuses
                .iter()
                .all(|s| s.starts_with("HTTP/1.1 200") || s.starts_with("HTTP/1.1 400")),
            "{what}: {statuses:?}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn oversized_heads_are_refused_before_the_backend() {
    let fx = Fixture::new();
    let backend = RawBackend::start().await;
    let proxy = spawn_proxy(fx.config(&format!("http://{}", backend.addr))).await;
    let mut many = b"GET / HTTP/1.1\r\nhost: localhost\r\n".to_vec();
    for i in 0..10_000 {
        write!(many, "x-{i}: 1\r\n").expect("write");
    }
    many.extend_from_slice(b"\r\n");
    let statuses = raw_statuses(proxy.addr, &fx, &many).await;
    assert!(
        statuses.first().is_some_and(|s| s.starts_with("HTTP/1.1 431")),
        "{statuses:?}"
    );
    let mut long_url = b"GET /".to_vec();
    long_url.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    long_url.extend_from_slice(b" HTTP/1.1\r\nhost: localhost\r\n\r\n");
    let statuses = raw_statuses(proxy.addr, &fx, &long_url).await;
    assert!(
        statuses
            .first()
            .is_some_and(|s| s.starts_with("HTTP/1.1 414") || s.starts_with("HTTP/1.1 431")),
        "{statuses:?}"
    );
    assert!(backend.requests().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn http2_header_abuse_is_refused_and_host_is_what_was_checked() {
    let fx = Fixture::new();
    let backend = RawBackend::start().await;
    let proxy = spawn_proxy(fx.config(&format!("http://{}", backend.addr))).await;

    // hyper's client refuses to *send* invalid header bytes, so speak h2 frames directly.
    let config = fx.tls13_client(b"h2");
    type Fields<'a> = Vec<(&'a [u8], &'a [u8])>;
    let cases: Vec<(&str, Fields)> = vec![
        ("CR LF in a value", vec![(b"x-evil", b"a\r\nx-injected: 1")]),
        ("NUL in a value", vec![(b"x-evil", b"a\0b")]),
        ("uppercase name", vec![(b"X-Upper", b"1")]),
        ("connection-specific header", vec![(b"connection", b"keep-alive")]),
    ];
    for (what, extra) in cases {
        let before = backend.requests().len();
        let tls = tls_connect(proxy.addr, config.clone()).await.expect("handshake");
        let refused = h2_raw_request(tls, &extra).await;
        assert!(refused, "{what}: not refused");
        assert_eq!(backend.requests().len(), before, "{what}: reached the backend");
    }

    // A body longer than its content-length: the stream is refused and the backend never
    // completes a request with the wrong length.
    let tls = tls_connect(proxy.addr, config.clone()).await.expect("handshake");
    let refused = h2_raw_request_with_body(tls, &[(b"content-length", b"3")], Some(b"0123456789")).await;
    assert!(refused, "a DATA frame longer than content-length was accepted");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());

    // Host and :authority disagreeing is malformed (RFC 9113 §8.3.1): 400, never forwarded.
    let mut send = h2(&fx, &fx.client, proxy.addr).await;
    let request = Request::get("https://authority.example/hv")
        .header("host", "host.example")
        .body(empty())
        .expect("request");
    let (status, _, _) = collect(send.send_request(request).await.expect("response")).await;
    assert_eq!(status, 400);
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());
    proxy.stop().await;
}

/// Sends one HTTP/2 GET with extra raw header fields (literal, no indexing) and reports whether
/// the server refused it (RST_STREAM or GOAWAY) rather than answering with HEADERS.
async fn h2_raw_request(tls: tokio_rustls::client::TlsStream<TcpStream>, extra: &[(&[u8], &[u8])]) -> bool {
    h2_raw_request_with_body(tls, extra, None).await
}

/// [`h2_raw_request`], a POST with one DATA frame when `body` is given.
async fn h2_raw_request_with_body(
    mut tls: tokio_rustls::client::TlsStream<TcpStream>,
    extra: &[(&[u8], &[u8])],
    body: Option<&[u8]>,
) -> bool {
    fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        out.push(0x00); // literal without indexing, new name
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    }
    // :method GET or POST, :scheme https, :path /
    let mut block = vec![if body.is_some() { 0x83 } else { 0x82 }, 0x87, 0x84];
    literal(&mut block, b":authority", b"localhost");
    for (name, value) in extra {
        literal(&mut block, name, value);
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x04, 0, 0, 0, 0, 0]); // empty SETTINGS
    let len = block.len() as u32;
    let flags = if body.is_some() { 0x04 } else { 0x05 }; // END_HEADERS (+ END_STREAM)
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 0x01, flags, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    if let Some(body) = body {
        let len = body.len() as u32;
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 0x00, 0x01, 0, 0, 0, 1]);
        out.extend_from_slice(body);
    }
    tls.write_all(&out).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Walk the frames received so far.
        let mut at = 0;
        while buf.len() >= at + 9 {
            let len = (usize::from(buf[at]) << 16) | (usize::from(buf[at + 1]) << 8) | usize::from(buf[at + 2]);
            let kind = buf[at + 3];
            let stream = u32::from_be_bytes([buf[at + 5] & 0x7f, buf[at + 6], buf[at + 7], buf[at + 8]]);
            match (kind, stream) {
                (0x03, 1) | (0x07, _) => return true, // RST_STREAM on our stream, or GOAWAY
                (0x01, 1) => return false,            // response HEADERS
                _ => {}
            }
            at += 9 + len;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, tls.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return true, // closed
            Err(_) => panic!("no answer to a malformed HTTP/2 request"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5: backend faults.

#[tokio::test]
async fn a_backend_down_at_start_gets_502_then_200_once_it_is_up() {
    let fx = Fixture::new();
    // A port held by this test but not listening: connections are refused until listen(), and no
    // parallel test can take the port in between.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let port = socket.local_addr().expect("addr").port();
    let proxy = spawn_proxy(fx.config(&format!("http://127.0.0.1:{port}"))).await;
    let config = fx.client_config(Some(&fx.client));
    for _ in 0..2 {
        let (status, _, _) = request(proxy.addr, config.clone(), get("/")).await;
        assert_eq!(status, 502);
    }
    let listener = socket.listen(64).expect("listen on the held port");
    let up = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0
                        || s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nup")
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    let (status, _, body) = request(proxy.addr, config, get("/")).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"up"[..]));
    up.abort();
    proxy.stop().await;
}

#[tokio::test]
async fn a_response_cut_by_a_reset_is_an_error_for_the_client_not_a_success() {
    let fx = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cutter = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\nonly the beginning")
                .await;
            let _ = s.set_zero_linger(); // RST on close
            drop(s);
        }
    });
    let proxy = spawn_proxy(fx.config(&format!("http://{addr}"))).await;
    let mut send = h1(proxy.addr, fx.client_config(Some(&fx.client))).await;
    let response = send.send_request(get("/")).await.expect("head arrives");
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("bounded");
    assert!(body.is_err(), "a truncated body was delivered as complete");
    cutter.abort();
    proxy.stop().await;
}

#[tokio::test]
async fn a_slow_body_is_streamed_to_the_end() {
    let fx = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let slow = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n").await;
                for b in b"0123456789" {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = s.write_all(&[*b]).await;
                }
            });
        }
    });
    let mut config = fx.config(&format!("http://{addr}"));
    config.upstream.response_timeout = Duration::from_millis(500); // covers the head only
    let proxy = spawn_proxy(config).await;
    let (status, _, body) = request(proxy.addr, fx.client_config(Some(&fx.client)), get("/")).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"0123456789"[..]));
    slow.abort();
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_aborting_an_upload_reaches_the_backend_as_an_abort_and_leaks_nothing() {
    let fx = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let outcome = Arc::new(Mutex::new(None::<Result<usize, String>>));
    let o = outcome.clone();
    let backend = tokio::spawn(async move {
        let Ok((s, _)) = listener.accept().await else { return };
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let o = o.clone();
            async move {
                let result = request
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes().len())
                    .map_err(|e| e.to_string());
                *o.lock().expect("lock") = Some(result);
                Ok::<_, std::convert::Infallible>(hyper::Response::new(empty()))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(s), service)
            .await;
    });
    let mut config = fx.config(&format!("http://{addr}"));
    config.admin = Some(originguard::config::AdminConfig {
        address: "127.0.0.1:0".parse().expect("addr"),
    });
    let proxy = spawn_proxy(config).await;
    let mut tls = tls_connect(proxy.addr, fx.client_config(Some(&fx.client)))
        .await
        .expect("handshake");
    tls.write_all(b"POST /upload HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1000000\r\n\r\n")
        .await
        .expect("write");
    tls.write_all(&[b'x'; 10_000]).await.expect("write");
    tls.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tls); // abort mid-upload
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(result) = outcome.lock().expect("lock").clone() {
            assert!(result.is_err(), "the backend saw a complete body: {result:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the backend never learned of the abort");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while proxy.metric("originguard_connections_open").await > 0.0 {
        assert!(Instant::now() < deadline, "the aborted connection's task stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    backend.abort();
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7: drain and reload under load, with the real binary and real signals.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_50_requests_in_flight_completes_them_all_and_refuses_new_connections() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let served = serve(&fx, &backend.url(), "").await;
    let config = fx.client_config(Some(&fx.client));
    let mut in_flight = Vec::new();
    for _ in 0..50 {
        let config = config.clone();
        let addr = served.addr;
        in_flight.push(tokio::spawn(async move {
            request(addr, config, get("/slow?ms=1500")).await
        }));
    }
    let deadline = Instant::now() + WAIT;
    while backend.count() < 50 {
        assert!(
            Instant::now() < deadline,
            "only {} requests reached the backend",
            backend.count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    served.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = tls_connect(served.addr, config.clone()).await;
    assert!(refused.is_err(), "a new connection was accepted while draining");
    for task in in_flight {
        let (status, _, body) = task.await.expect("join");
        assert_eq!((status.as_u16(), &body[..]), (200, &b"slow"[..]));
    }
    assert_eq!(served.wait(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sighups_during_50_concurrent_clients_fail_no_request() {
    let fx = Arc::new(Fixture::new());
    let backend = Backend::tcp().await;
    let served = serve(&fx, &backend.url(), "").await;
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..50 {
        let (fx, ok, failed, stop) = (fx.clone(), ok.clone(), failed.clone(), stop.clone());
        let addr = served.addr;
        clients.push(tokio::spawn(async move {
            let config = fx.client_config(Some(&fx.client));
            for _ in 0..200 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match tokio::time::timeout(WAIT, request(addr, config.clone(), get("/"))).await {
                    Ok((status, _, _)) if status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for _ in 0..20 {
        served.signal("HUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) >= 50);
    let deadline = Instant::now() + WAIT;
    while served.metric("originguard_reloads_total{result=\"ok\"}").await < 1.0 {
        assert!(Instant::now() < deadline, "no reload happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served.metric("originguard_reloads_total{result=\"error\"}").await, 0.0);
}

//! What the proxy puts on the wire, at the TLS record layer: a small proxied response leaves in
//! one TLS record (TLS test suites such as tlsfuzzer expect it, and it is one write, not two).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use originguard::config::SessionResumption;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// A TCP relay in front of `target` that counts the application-data records (content type
/// 23) the server sends to the client.
async fn counting_relay(target: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let addr = listener.local_addr().expect("addr");
    let records = Arc::new(AtomicUsize::new(0));
    let counter = records.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.expect("accept");
        let server = TcpStream::connect(target).await.expect("connect");
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        });
        // Server to client: forward bytes, parsing record headers as they pass.
        let mut pending = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
            pending.extend_from_slice(&buf[..n]);
            while pending.len() >= 5 {
                let len = usize::from(u16::from_be_bytes([pending[3], pending[4]]));
                if pending.len() < 5 + len {
                    break;
                }
                if pending[0] == 23 {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                pending.drain(..5 + len);
            }
        }
    });
    (addr, records)
}

#[tokio::test]
async fn a_small_proxied_response_arrives_in_one_tls_record() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    // No session tickets: nothing but the response follows the handshake.
    config.tls.session_resumption = SessionResumption::Off;
    let proxy = spawn_proxy(config).await;
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (relay, records) = counting_relay(proxy.addr).await;
        let client = client_config(&fx.server_ca.der, Some(&fx.client), &[version], &[b"http/1.1"]);
        let tls = tls_connect(relay, client).await.expect("handshake");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http1");
        tokio::spawn(conn);
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let before = records.load(Ordering::SeqCst);
            let (status, _, body) = collect(send.send_request(get("/")).await.expect("response")).await;
            assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(
                records.load(Ordering::SeqCst) - before,
                1,
                "{version:?}: a small response took more than one record"
            );
        }
    }
    proxy.stop().await;
}

/// TLS 1.3 session tickets wait for the first response and leave in the same write: after the
/// handshake, nothing follows the server's flight until the client asks for something; then
/// the tickets (rustls packs both into one record) and the response arrive together — and they
/// work (the next connection resumes). TLS 1.2 sends its ticket inside the handshake, as
/// before, and still resumes.
#[tokio::test]
async fn tls13_tickets_leave_with_the_first_response() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let client = fx.tls13_client(b"http/1.1");
    let (relay, records) = counting_relay(proxy.addr).await;
    let tls = tls_connect(relay, client.clone()).await.expect("handshake");
    assert_eq!(tls.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Full));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_handshake = records.load(Ordering::SeqCst);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1");
    tokio::spawn(conn);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        records.load(Ordering::SeqCst),
        after_handshake,
        "the server sent records (tickets) before any request"
    );
    let (status, _, _) = collect(send.send_request(get("/")).await.expect("response")).await;
    assert_eq!(status.as_u16(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        records.load(Ordering::SeqCst) - after_handshake,
        2,
        "the tickets (one record: rustls packs handshake messages) and the response"
    );
    drop(send);

    let (relay, _) = counting_relay(proxy.addr).await;
    let tls = tls_connect(relay, client).await.expect("second handshake");
    assert_eq!(
        tls.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed),
        "the held tickets resume"
    );

    let client12 = client_config(
        &fx.server_ca.der,
        Some(&fx.client),
        &[&rustls::version::TLS12],
        &[b"http/1.1"],
    );
    let (relay, _) = counting_relay(proxy.addr).await;
    let tls = tls_connect(relay, client12.clone()).await.expect("TLS 1.2 handshake");
    drop(tls);
    let (relay, _) = counting_relay(proxy.addr).await;
    let tls = tls_connect(relay, client12).await.expect("TLS 1.2 resumption");
    assert_eq!(tls.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    proxy.stop().await;
}

/// Over HTTP/2 the held tickets reach the client too (with the server's first frames or the
/// first response), and the next HTTP/2 connection resumes and is served.
#[tokio::test]
async fn tls13_tickets_held_for_the_first_response_resume_over_http2() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let client = fx.tls13_client(b"h2");
    for expected in [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed] {
        let tls = tls_connect(proxy.addr, client.clone()).await.expect("handshake");
        assert_eq!(tls.get_ref().1.handshake_kind(), Some(expected));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let request = http::Request::get("https://localhost/h2")
            .body(empty())
            .expect("request");
        let (status, _, _) = collect(send.send_request(request).await.expect("response")).await;
        assert_eq!(status, 200, "{expected:?}");
    }
    assert_eq!(backend.count(), 2);
    proxy.stop().await;
}

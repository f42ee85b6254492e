//! Timeouts, limits and graceful shutdown.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn silent_tcp_peer_is_dropped_at_handshake_timeout() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.listener.handshake_timeout = Duration::from_millis(300);
    let proxy = spawn_proxy(config).await;
    let mut silent = TcpStream::connect(proxy.addr).await.expect("connect");
    assert!(closed_within(&mut silent, WAIT).await, "a silent peer was kept open");
    // A client that completes the handshake afterwards is unaffected.
    let (status, _, _) = request(proxy.addr, fx.client_config(Some(&fx.client)), get("/")).await;
    assert_eq!(status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_at_idle_timeout() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.listener.idle_timeout = Duration::from_millis(300);
    let proxy = spawn_proxy(config).await;
    let mut tls = tls_connect(proxy.addr, fx.client_config(Some(&fx.client)))
        .await
        .expect("handshake");
    tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut tls, WAIT).await, "idle connection was kept open");
    proxy.stop().await;
}

#[tokio::test]
async fn slow_request_head_is_cut_at_header_read_timeout() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.listener.header_read_timeout = Duration::from_millis(300);
    let proxy = spawn_proxy(config).await;
    let mut tls = tls_connect(proxy.addr, fx.client_config(Some(&fx.client)))
        .await
        .expect("handshake");
    tls.write_all(b"GET / HTTP/1.1\r\nhost: loc").await.expect("write");
    assert!(
        closed_within(&mut tls, WAIT).await,
        "a half-sent head was waited on forever"
    );
    assert_eq!(backend.count(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn max_connections_makes_further_connections_wait() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.listener.max_connections = 1;
    let proxy = spawn_proxy(config).await;
    let client = fx.client_config(Some(&fx.client));
    let first = tls_connect(proxy.addr, client.clone()).await.expect("first handshake");
    let second = tokio::spawn(tls_connect(proxy.addr, client.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "the second connection was served while the first held the only slot"
    );
    drop(first);
    let second = tokio::time::timeout(WAIT, second)
        .await
        .expect("served once the slot frees");
    assert!(second.expect("join").is_ok());
    proxy.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_and_stops_accepting() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let addr = proxy.addr;
    let client = fx.client_config(Some(&fx.client));
    let in_flight = tokio::spawn(request(addr, client.clone(), get("/slow?ms=800")));
    // Wait until the backend has the request, then begin shutdown.
    let deadline = tokio::time::Instant::now() + WAIT;
    while backend.count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "request never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.shutdown.cancel();
    let (status, _, body) = tokio::time::timeout(WAIT, in_flight)
        .await
        .expect("bounded")
        .expect("join");
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"slow");
    tokio::time::timeout(WAIT, proxy.task)
        .await
        .expect("serve returns")
        .expect("no panic");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

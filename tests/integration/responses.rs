//! Responses the proxy makes itself: 400, 431, 502, 504 — short plain text, nothing leaked.

use std::time::Duration;

use crate::support::*;
use originguard::config::UpstreamProtocol;

#[tokio::test]
async fn malformed_request_gets_400_and_is_not_forwarded() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let reply = raw_exchange(
        proxy.addr,
        fx.client_config(Some(&fx.client)),
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(backend.count(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn oversized_request_head_gets_431() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.listener.max_header_bytes = 8192;
    let proxy = spawn_proxy(config).await;
    let big = format!(
        "GET / HTTP/1.1\r\nhost: localhost\r\nx-big: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let reply = raw_exchange(proxy.addr, fx.client_config(Some(&fx.client)), big.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert_eq!(backend.count(), 0);
    // Under the limit is fine.
    let small = format!(
        "GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\nx-big: {}\r\n\r\n",
        "a".repeat(4 * 1024)
    );
    let reply = raw_exchange(proxy.addr, fx.client_config(Some(&fx.client)), small.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    proxy.stop().await;
}

#[tokio::test]
async fn unreachable_upstream_gets_502_with_a_short_text_body() {
    let fx = Fixture::new();
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    for protocol in [UpstreamProtocol::Http1, UpstreamProtocol::H2c] {
        let mut config = with_admin(fx.config(&format!("http://{closed}")));
        config.upstream.protocol = protocol;
        let proxy = spawn_proxy(config).await;
        let (status, headers, body) = request(proxy.addr, fx.client_config(Some(&fx.client)), get("/")).await;
        assert_eq!(status, 502, "{protocol:?}");
        assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("upstream unavailable"), "{body}");
        assert!(
            !body.contains("127.0.0.1") && !body.contains("refused"),
            "internal detail leaked: {body}"
        );
        let metric = "originguard_upstream_errors_total{kind=\"connect\"}";
        assert_eq!(proxy.metric(metric).await, 1.0, "{protocol:?}");
        proxy.stop().await;
    }
}

#[tokio::test]
async fn upstream_reset_gets_502() {
    let fx = Fixture::new();
    // An upstream that accepts and closes at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let resetter = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    for protocol in [UpstreamProtocol::Http1, UpstreamProtocol::H2c] {
        let mut config = with_admin(fx.config(&format!("http://{addr}")));
        config.upstream.protocol = protocol;
        let proxy = spawn_proxy(config).await;
        let (status, _, _) = request(proxy.addr, fx.client_config(Some(&fx.client)), get("/")).await;
        assert_eq!(status, 502, "{protocol:?}");
        let metric = "originguard_upstream_errors_total{kind=\"reset\"}";
        assert_eq!(proxy.metric(metric).await, 1.0, "{protocol:?}");
        proxy.stop().await;
    }
    resetter.abort();
}

#[tokio::test]
async fn slow_upstream_gets_504_at_response_timeout() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.upstream.response_timeout = Duration::from_millis(300);
    let proxy = spawn_proxy(config).await;
    let (status, _, body) = request(proxy.addr, fx.client_config(Some(&fx.client)), get("/slow?ms=5000")).await;
    assert_eq!(status, 504);
    assert!(String::from_utf8_lossy(&body).contains("gateway timeout"));
    // A response inside the timeout passes.
    let (status, _, body) = request(proxy.addr, fx.client_config(Some(&fx.client)), get("/slow?ms=10")).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"slow");
    proxy.stop().await;
}

//! What the backend receives: identity headers, spoofing guard, hop-by-hop, X-Forwarded-*.

use base64::Engine;
use http::Request;

use crate::support::*;
use originguard::config::ClientCertHeaders;

fn sha256_hex(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A request carrying every identity header a client might try to smuggle.
fn spoofing_request() -> Request<TestBody> {
    Request::get("/spoof?q=1")
        .header("host", "app.example")
        .header("X-Forwarded-Client-Cert", "Hash=00;Subject=\"CN=admin\"")
        .header("x-forwarded-client-cert", "By=spoof")
        .header("CLIENT-CERT", ":AAAA:")
        .header("Client-Cert-Chain", ":AAAA:")
        .body(empty())
        .expect("request")
}

async fn backend_view(mode: ClientCertHeaders) -> (Seen, Fixture) {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.headers.client_cert = mode;
    let proxy = spawn_proxy(config).await;
    let (status, _, _) = request(proxy.addr, fx.client_config(Some(&fx.client)), spoofing_request()).await;
    assert_eq!(status, 200);
    proxy.stop().await;
    (backend.last(), fx)
}

#[tokio::test]
async fn xfcc_mode_replaces_spoofed_identity_with_the_verified_one() {
    let (seen, fx) = backend_view(ClientCertHeaders::Xfcc).await;
    let values: Vec<_> = seen.headers.get_all("x-forwarded-client-cert").iter().collect();
    assert_eq!(values.len(), 1, "{values:?}");
    let expected = format!(
        "Hash={};Subject=\"CN=client-1\";URI=spiffe://clients.test/client-1;DNS=client-1.clients.test",
        sha256_hex(fx.client.leaf().as_ref())
    );
    assert_eq!(values[0], expected.as_str());
    assert!(seen.headers.get("client-cert").is_none());
    assert!(seen.headers.get("client-cert-chain").is_none());
    assert_eq!(seen.uri, "/spoof?q=1");
}

#[tokio::test]
async fn rfc9440_mode_sends_the_leaf_and_strips_spoofed_xfcc() {
    let (seen, fx) = backend_view(ClientCertHeaders::Rfc9440).await;
    assert!(seen.headers.get("x-forwarded-client-cert").is_none());
    assert!(seen.headers.get("client-cert-chain").is_none());
    let values: Vec<_> = seen.headers.get_all("client-cert").iter().collect();
    assert_eq!(values.len(), 1);
    let b64 = base64::engine::general_purpose::STANDARD.encode(fx.client.leaf().as_ref());
    assert_eq!(values[0], format!(":{b64}:").as_str());
}

#[tokio::test]
async fn both_and_none_modes() {
    let (seen, _) = backend_view(ClientCertHeaders::Both).await;
    assert_eq!(seen.headers.get_all("x-forwarded-client-cert").iter().count(), 1);
    assert_eq!(seen.headers.get_all("client-cert").iter().count(), 1);
    assert!(!seen.headers["x-forwarded-client-cert"].as_bytes().starts_with(b"By="));

    let (seen, _) = backend_view(ClientCertHeaders::None).await;
    for name in ["x-forwarded-client-cert", "client-cert", "client-cert-chain"] {
        assert!(seen.headers.get(name).is_none(), "{name} reached the backend");
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_host_kept() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let request_ = Request::get("/")
        .header("host", "app.example:8443")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .body(empty())
        .expect("request");
    let (status, response_headers, _) = request(proxy.addr, fx.client_config(Some(&fx.client)), request_).await;
    assert_eq!(status, 200);
    assert!(response_headers.get("keep-alive").is_none());
    let seen = backend.last();
    for name in ["x-hop", "keep-alive", "proxy-connection", "proxy-authorization"] {
        assert!(seen.headers.get(name).is_none(), "{name} was forwarded");
    }
    assert_eq!(seen.headers["host"], "app.example:8443");
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    assert_eq!(seen.headers["te"], "trailers");
    proxy.stop().await;
}

#[tokio::test]
async fn x_forwarded_headers_append_the_peer() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let config = fx.client_config(Some(&fx.client));
    let with_xff = Request::get("/")
        .header("host", "app.example")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "http")
        .body(empty())
        .expect("request");
    request(proxy.addr, config.clone(), with_xff).await;
    let seen = backend.last();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "app.example");

    request(proxy.addr, config, get("/")).await;
    assert_eq!(backend.last().headers["x-forwarded-for"], "127.0.0.1");
    proxy.stop().await;
}

#[tokio::test]
async fn x_forwarded_off_leaves_them_alone() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.headers.x_forwarded = false;
    let proxy = spawn_proxy(config).await;
    request(proxy.addr, fx.client_config(Some(&fx.client)), get("/")).await;
    let seen = backend.last();
    assert!(seen.headers.get("x-forwarded-for").is_none());
    assert!(seen.headers.get("x-forwarded-proto").is_none());
    assert!(seen.headers.get("x-forwarded-client-cert").is_some());
    proxy.stop().await;
}

#[tokio::test]
async fn http2_requests_get_host_from_authority_and_the_same_guard() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let mut send = h2(&fx, &fx.client, proxy.addr).await;
    let request_ = Request::get("https://app.example/h2?x=1")
        .header("x-forwarded-client-cert", "spoof")
        .header("Client-Cert", ":AAAA:")
        .body(empty())
        .expect("request");
    let (status, _, _) = collect(send.send_request(request_).await.expect("response")).await;
    assert_eq!(status, 200);
    let seen = backend.last();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.uri, "/h2?x=1");
    assert_eq!(seen.headers["host"], "app.example");
    assert_eq!(seen.headers["x-forwarded-host"], "app.example");
    assert!(seen.headers.get("client-cert").is_none());
    let xfcc = seen.headers["x-forwarded-client-cert"].to_str().expect("ascii");
    assert!(xfcc.starts_with("Hash="), "{xfcc}");
    proxy.stop().await;
}

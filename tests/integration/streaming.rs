//! Bodies stream both ways (never buffered whole), Unix-socket upstreams, HTTP/2 inbound.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::*;

type Chunk = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;

/// The client sends the first chunk of an upload and receives it back through the proxy and the
/// echo backend *before* sending the rest: neither direction can be buffering the whole body.
#[tokio::test]
async fn bodies_stream_both_ways_without_buffering() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let mut send = h1(proxy.addr, fx.client_config(Some(&fx.client))).await;

    let (tx, rx) = mpsc::channel::<Chunk>(1);
    let body = StreamBody::new(ReceiverStream::new(rx)).boxed();
    let request_ = Request::post("/echo")
        .header("host", "localhost")
        .body(body)
        .expect("request");
    let response_fut = tokio::spawn(async move { send.send_request(request_).await });

    tx.send(Ok(Frame::data(Bytes::from_static(b"first chunk"))))
        .await
        .expect("send");
    let response = tokio::time::timeout(WAIT, response_fut)
        .await
        .expect("response head before the upload ends")
        .expect("join")
        .expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let frame = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("first chunk echoed before the upload ends")
        .expect("frame")
        .expect("ok");
    assert_eq!(frame.into_data().expect("data"), Bytes::from_static(b"first chunk"));

    tx.send(Ok(Frame::data(Bytes::from_static(b"second"))))
        .await
        .expect("send");
    drop(tx);
    let rest = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("bounded")
        .expect("body")
        .to_bytes();
    assert_eq!(&rest[..], b"second");
    proxy.stop().await;
}

/// 64 MiB up and back down in 64 KiB chunks, compared byte for byte by checksum.
#[tokio::test]
async fn large_body_round_trips_intact() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 1024;
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let mut send = h1(proxy.addr, fx.client_config(Some(&fx.client))).await;

    let (tx, rx) = mpsc::channel::<Chunk>(4);
    let producer = tokio::spawn(async move {
        let mut sum = 0u64;
        for i in 0..CHUNKS {
            let chunk: Vec<u8> = (0..CHUNK).map(|j| ((i * 31 + j) % 251) as u8).collect();
            sum = chunk
                .iter()
                .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
            if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                break;
            }
        }
        sum
    });
    let body = StreamBody::new(ReceiverStream::new(rx)).boxed();
    let request_ = Request::post("/echo")
        .header("host", "localhost")
        .body(body)
        .expect("request");
    let response = send.send_request(request_).await.expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let (mut len, mut sum) = (0usize, 0u64);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    while let Some(frame) = tokio::time::timeout_at(deadline, body.frame()).await.expect("bounded") {
        if let Ok(data) = frame.expect("frame").into_data() {
            len += data.len();
            sum = data
                .iter()
                .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
        }
    }
    assert_eq!(len, CHUNK * CHUNKS);
    assert_eq!(sum, producer.await.expect("producer"));
    proxy.stop().await;
}

#[tokio::test]
async fn unix_socket_upstream() {
    let fx = Fixture::new();
    let socket = fx.path("app.sock");
    let backend = Backend::unix(&socket).await;
    let proxy = spawn_proxy(fx.config(&format!("unix:{}", socket.display()))).await;
    let config = fx.client_config(Some(&fx.client));
    for _ in 0..3 {
        let (status, _, body) = request(proxy.addr, config.clone(), get("/via-unix")).await;
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"ok");
    }
    let seen = backend.last();
    assert_eq!(seen.uri, "/via-unix");
    assert_eq!(seen.headers["host"], "localhost");
    assert!(seen.headers.contains_key("x-forwarded-client-cert"));
    proxy.stop().await;
}

#[tokio::test]
async fn http2_inbound_multiplexes_concurrent_streams() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let send = h2(&fx, &fx.client, proxy.addr).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move {
            let request_ = Request::get(format!("https://localhost/slow?ms={}", 50 + i * 10))
                .body(empty())
                .expect("request");
            collect(send.send_request(request_).await.expect("response")).await
        }));
    }
    for task in tasks {
        let (status, _, body) = task.await.expect("join");
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"slow");
    }
    assert_eq!(backend.count(), 8);
    proxy.stop().await;
}

#[tokio::test]
async fn http2_can_be_turned_off() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.listener.http2 = false;
    let proxy = spawn_proxy(config).await;
    let config = client_config(
        &fx.server_ca.der,
        Some(&fx.client),
        &[&rustls::version::TLS13],
        &[b"h2", b"http/1.1"],
    );
    let tls = tls_connect(proxy.addr, config).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    proxy.stop().await;
}

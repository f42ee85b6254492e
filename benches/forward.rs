//! The forwarding path for one request: an HTTP/1.1 keep-alive connection over mTLS to the
//! proxy (wired as `serve` wires it), forwarded to a hyper backend on loopback. Wall time per
//! request, client and backend included — compare runs on the same machine, not absolute values.
//!
//! `cargo bench --bench forward`

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Flavour, Pki};
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

fn forward(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let pki = Pki::new(Flavour::Ecdsa);
    let send = runtime.block_on(async {
        let backend = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let backend_addr = backend.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = backend.accept().await {
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    service_fn(|_req| async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }),
                ));
            }
        });
        let (mut config, policies) = pki.policies("", "");
        config.upstream.target =
            originguard::config::UpstreamTarget::Tcp(backend_addr.to_string().parse().expect("authority"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let proxy = originguard::proxy::Proxy::new(&config, policies).expect("upstream");
        tokio::spawn(originguard::app::run(
            config,
            proxy,
            listener,
            None,
            CancellationToken::new(),
        ));

        let tcp = TcpStream::connect(addr).await.expect("connect");
        let tls = tokio_rustls::TlsConnector::from(pki.client_config(false))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("handshake");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http1");
        tokio::spawn(conn);
        Arc::new(tokio::sync::Mutex::new(send))
    });

    let mut group = c.benchmark_group("forward");
    group.sample_size(50).measurement_time(Duration::from_secs(5));
    group.bench_function("h1_keepalive_request", |b| {
        b.to_async(&runtime).iter(|| {
            let send = send.clone();
            async move {
                let mut send = send.lock().await;
                send.ready().await.expect("connection ready");
                let request = Request::get("/")
                    .header("host", "localhost")
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let response = send
                    .send_request(request)
                    .await
                    .unwrap_or_else(|e| panic!("request failed: {e:?}"));
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.expect("body");
            }
        });
    });
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);

//! The floor for `benches/compare.sh`: a bare rustls + hyper server that requires and verifies
//! client certificates (rustls' stock `WebPkiClientVerifier`, session tickets) and answers every
//! request `200 ok` itself — no proxying, no identity headers, no limits. What originguard costs
//! above it is what the proxy adds.
//!
//! Not a criterion bench (`cargo bench` runs it and it exits at once). compare.sh starts it:
//!
//!   FLOOR_LISTEN=127.0.0.1:18090 FLOOR_CERT=server.pem FLOOR_KEY=server.key FLOOR_CA=ca.pem \
//!     target/release/deps/floor_server-*

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

fn main() {
    let Ok(listen) = std::env::var("FLOOR_LISTEN") else {
        println!(
            "floor_server: set FLOOR_LISTEN, FLOOR_CERT, FLOOR_KEY and FLOOR_CA to run it (benches/compare.sh does)"
        );
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is required"));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(var("FLOOR_CA")).expect("CA file") {
        roots.add(ca.expect("CA")).expect("CA added");
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("verifier");
    let chain: Vec<_> = CertificateDer::pem_file_iter(var("FLOOR_CERT"))
        .expect("certificate file")
        .map(|c| c.expect("certificate"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(var("FLOOR_KEY")).expect("key");
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().expect("ticketer");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen).await.expect("bind");
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(|_request| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
}

//! Post-quantum key agreement like Cloudflare's (issue 14): `tls.key_exchange`.

use std::sync::Arc;

use originguard::config::KeyExchange;
use rustls::crypto::aws_lc_rs::kx_group::{X25519, X25519MLKEM768};
use rustls::{HandshakeKind, NamedGroup};

use crate::support::*;

/// A client whose first group gets the only key share (rustls sends one share, plus X25519
/// alongside a hybrid first): `[X25519, X25519MLKEM768]` is Cloudflare's default hello
/// ("supported": an X25519 share, the hybrid advertised), `[X25519MLKEM768, X25519]` its
/// "preferred" one.
fn client(fx: &Fixture, groups: &[&'static dyn rustls::crypto::SupportedKxGroup]) -> Arc<rustls::ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = groups.to_vec();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(fx.server_ca.der.clone()).expect("server CA");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(fx.client.chain.clone(), fx.client.key())
        .expect("client cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

async fn negotiated(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> (NamedGroup, HandshakeKind) {
    let tls = tls_connect(addr, config).await.expect("handshake");
    let session = tls.get_ref().1;
    let group = session.negotiated_key_exchange_group().expect("a group").name();
    (group, session.handshake_kind().expect("done"))
}

#[tokio::test]
async fn key_exchange_follows_the_setting_whatever_the_clients_group_order() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let cloudflare_default = client(&fx, &[X25519, X25519MLKEM768]);
    let cloudflare_preferred = client(&fx, &[X25519MLKEM768, X25519]);
    let classical_only = client(&fx, &[X25519]);
    let cases = [
        (
            KeyExchange::HybridPreferred,
            NamedGroup::X25519MLKEM768,
            HandshakeKind::FullWithHelloRetryRequest,
        ),
        (KeyExchange::HybridIfSent, NamedGroup::X25519, HandshakeKind::Full),
        (KeyExchange::Classical, NamedGroup::X25519, HandshakeKind::Full),
    ];
    for (setting, group, kind) in cases {
        let mut config = fx.config(&backend.url());
        config.tls.key_exchange = setting;
        let proxy = spawn_proxy(config).await;
        // Cloudflare's default hello: only the setting decides.
        assert_eq!(
            negotiated(proxy.addr, cloudflare_default.clone()).await,
            (group, kind),
            "{setting:?}"
        );
        // A hybrid share sent: used, with no extra round trip, unless classical.
        let expected = match setting {
            KeyExchange::Classical => NamedGroup::X25519,
            _ => NamedGroup::X25519MLKEM768,
        };
        assert_eq!(
            negotiated(proxy.addr, cloudflare_preferred.clone()).await,
            (expected, HandshakeKind::Full),
            "{setting:?}"
        );
        // A client without the hybrid is never asked for it.
        assert_eq!(
            negotiated(proxy.addr, classical_only.clone()).await,
            (NamedGroup::X25519, HandshakeKind::Full),
            "{setting:?}"
        );
        // And the requests still go through.
        assert_eq!(refusal(proxy.addr, cloudflare_default.clone()).await, None);
        proxy.stop().await;
    }
}

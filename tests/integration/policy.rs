//! Per-hostname AOP: policies chosen by SNI, allow-lists, the 421 guard, resumption that keeps
//! the identity and never crosses policies, and the source-address gate.

use std::sync::{Arc, Mutex};

use http::Request;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConfig, HandshakeKind, NamedGroup};

use crate::support::*;
use originguard::config::{AllowLists, ClientAuthConfig, Config, HostConfig, SessionResumption, TrustSource};

/// Two customer CAs besides the fixture's (default) client CA.
struct Hosts {
    fx: Fixture,
    ca_a: Ca,
    ca_b: Ca,
}

impl Hosts {
    fn new() -> Hosts {
        let fx = Fixture::new();
        let ca_a = Ca::root("customer A CA");
        let ca_b = Ca::root("customer B CA");
        fx.write("ca-a.pem", &ca_a.pem);
        fx.write("ca-b.pem", &ca_b.pem);
        Hosts { fx, ca_a, ca_b }
    }

    fn host(&self, names: &[&str], ca_file: &str) -> HostConfig {
        HostConfig {
            server_names: names.iter().map(|n| n.to_string()).collect(),
            certificate: self.fx.path("server.pem"),
            private_key: self.fx.path("server.key"),
            client_auth: ClientAuthConfig {
                trust: vec![TrustSource::File(self.fx.path(ca_file))],
                verify_depth: 1,
                crl: vec![],
                crl_stale_refuse: false,
                allow: AllowLists::default(),
                verify_cache: true,
            },
            upstream: None,
        }
    }

    /// Default policy: the fixture's client CA. a.example: CA A. *.wild.example: CA B.
    fn config(&self, upstream: &str) -> Config {
        let mut config = self.fx.config(upstream);
        config.hosts.push(self.host(&["a.example"], "ca-a.pem"));
        config.hosts.push(self.host(&["*.wild.example"], "ca-b.pem"));
        config
    }

    fn client(&self, cert: &ClientCert) -> Arc<ClientConfig> {
        self.fx.client_config(Some(cert))
    }
}

#[tokio::test]
async fn each_host_verifies_against_its_own_cas_in_both_directions() {
    let h = Hosts::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(h.config(&backend.url())).await;
    let a = h.ca_a.leaf(Leaf::client("a-client"));
    let default = &h.fx.client;

    assert_eq!(refusal_as(proxy.addr, "a.example", h.client(&a)).await, None);
    assert_eq!(backend.count(), 1);
    // A's client is a stranger to the default policy and to B's hosts.
    assert_eq!(
        refusal_as(proxy.addr, "localhost", h.client(&a)).await,
        Some(AlertDescription::UnknownCA)
    );
    assert_eq!(
        refusal_as(proxy.addr, "x.wild.example", h.client(&a)).await,
        Some(AlertDescription::UnknownCA)
    );
    // The default policy's client is a stranger to A.
    assert_eq!(
        refusal_as(proxy.addr, "a.example", h.client(default)).await,
        Some(AlertDescription::UnknownCA)
    );
    assert_eq!(refusal_as(proxy.addr, "localhost", h.client(default)).await, None);
    assert_eq!(backend.count(), 2, "only the two accepted clients reached the backend");
    proxy.stop().await;
}

#[tokio::test]
async fn wildcards_match_one_label_case_insensitively_and_unknown_names_get_the_default() {
    let h = Hosts::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(h.config(&backend.url())).await;
    let b = h.ca_b.leaf(Leaf::client("b-client"));
    let default = &h.fx.client;

    assert_eq!(refusal_as(proxy.addr, "x.wild.example", h.client(&b)).await, None);
    assert_eq!(refusal_as(proxy.addr, "X.WILD.Example", h.client(&b)).await, None);
    // Two labels below the wildcard: not covered, so the default policy applies.
    assert_eq!(
        refusal_as(proxy.addr, "deep.sub.wild.example", h.client(&b)).await,
        Some(AlertDescription::UnknownCA)
    );
    assert_eq!(
        refusal_as(proxy.addr, "deep.sub.wild.example", h.client(default)).await,
        None
    );
    // Unknown SNI and no SNI (an IP address) get the default policy.
    assert_eq!(refusal_as(proxy.addr, "other.example", h.client(default)).await, None);
    assert_eq!(refusal_as(proxy.addr, "127.0.0.1", h.client(default)).await, None);
    assert_eq!(
        refusal_as(proxy.addr, "A.EXAMPLE", h.client(default)).await,
        Some(AlertDescription::UnknownCA)
    );
    proxy.stop().await;
}

/// Each allow-list kind admits the right leaf and refuses a sibling from the same CA.
#[tokio::test]
async fn allow_lists_refuse_a_sibling_from_the_same_ca() {
    let fx = Fixture::new();
    let good = &fx.client;
    let sibling = fx.client_ca.leaf(Leaf::client("client-2"));
    let leaf = webpki::EndEntityCert::try_from(good.leaf()).expect("leaf");
    let spki = originguard::tls::identity::sha256(leaf.subject_public_key_info().as_ref());
    let cert = originguard::tls::identity::sha256(good.leaf().as_ref());
    let cert_hex: Vec<String> = cert.iter().map(|b| format!("{b:02X}")).collect();

    let cases: Vec<(&str, AllowLists)> = vec![
        (
            "subject (CN form)",
            AllowLists {
                subjects: vec!["CN=client-1".into()],
                ..Default::default()
            },
        ),
        (
            "dns name",
            AllowLists {
                dns_names: vec!["client-1.clients.test".into()],
                ..Default::default()
            },
        ),
        (
            "uri",
            AllowLists {
                uris: vec!["spiffe://clients.test/client-1".into()],
                ..Default::default()
            },
        ),
        (
            "spki pin",
            AllowLists {
                spki_sha256: vec![spki],
                ..Default::default()
            },
        ),
        (
            "cert pin",
            AllowLists {
                cert_sha256: vec![cert],
                ..Default::default()
            },
        ),
    ];
    for (what, allow) in cases {
        let backend = Backend::tcp().await;
        let mut config = fx.config(&backend.url());
        config.client_auth.allow = allow;
        let proxy = spawn_proxy(config).await;
        assert_eq!(
            refusal(proxy.addr, fx.client_config(Some(good))).await,
            None,
            "{what}: allowed leaf refused"
        );
        assert_eq!(
            refusal(proxy.addr, fx.client_config(Some(&sibling))).await,
            Some(AlertDescription::AccessDenied),
            "{what}: sibling admitted"
        );
        assert_eq!(backend.count(), 1, "{what}");
        proxy.stop().await;
    }

    // The same lists from TOML, as an operator writes them (hex with colons, base64 pin).
    let pin = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, spki);
    let toml_lists = format!(
        "allow_cert_sha256 = [\"{}\"]\nallow_spki_sha256 = [\"{pin}\"]\nallow_dns_names = [\"*.clients.test\"]",
        cert_hex.join(":")
    );
    let config = fx
        .toml("http://127.0.0.1:9")
        .lines("client_auth", &toml_lists)
        .config(&fx.path("og.toml"));
    let proxy = spawn_proxy(config).await;
    assert_eq!(refusal(proxy.addr, fx.client_config(Some(good))).await, None);
    assert_eq!(
        refusal(proxy.addr, fx.client_config(Some(&sibling))).await,
        Some(AlertDescription::AccessDenied)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn host_from_another_policy_gets_421_on_http1_and_nothing_is_forwarded() {
    let h = Hosts::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(h.config(&backend.url())).await;
    let a = h.ca_a.leaf(Leaf::client("a-client"));
    let tls = tls_connect_as(proxy.addr, "a.example", h.client(&a))
        .await
        .expect("handshake");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .expect("http1");
    tokio::spawn(conn);

    let to = |host: &str| Request::get("/").header("host", host).body(empty()).expect("request");
    let (status, _, body) = collect(send.send_request(to("a.example")).await.expect("response")).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
    // Same connection, a host under the default policy, then one under B's wildcard.
    for other in ["other.example", "x.wild.example:8443", "localhost"] {
        let (status, _, body) = collect(send.send_request(to(other)).await.expect("response")).await;
        assert_eq!(status, 421, "{other}");
        assert!(String::from_utf8_lossy(&body).contains("misdirected"));
    }
    // Case and port do not change which policy a host selects.
    let (status, _, _) = collect(send.send_request(to("A.Example:443")).await.expect("response")).await;
    assert_eq!(status, 200);
    assert_eq!(backend.count(), 2, "a misdirected request was forwarded");

    // A Host header that is not plain text cannot be matched to any policy: refused.
    let tls = tls_connect_as(proxy.addr, "a.example", h.client(&a))
        .await
        .expect("handshake");
    let mut raw = tls;
    tokio::io::AsyncWriteExt::write_all(
        &mut raw,
        b"GET / HTTP/1.1\r\nhost: a.example\xff\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("HTTP/1.1 421") || reply.starts_with("HTTP/1.1 400"),
        "{reply}"
    );
    assert_eq!(backend.count(), 2);

    // And the reverse: a connection verified under the default policy cannot reach A's host.
    let (status, _, _) = request(proxy.addr, h.client(&h.fx.client), to("a.example")).await;
    assert_eq!(status, 421);
    assert_eq!(backend.count(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn host_from_another_policy_gets_421_on_a_reused_http2_connection() {
    let h = Hosts::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(h.config(&backend.url())).await;
    let a = h.ca_a.leaf(Leaf::client("a-client"));
    let config = client_config(&h.fx.server_ca.der, Some(&a), &[&rustls::version::TLS13], &[b"h2"]);
    let tls = tls_connect_as(proxy.addr, "a.example", config)
        .await
        .expect("handshake");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("h2");
    tokio::spawn(conn);
    let to = |uri: &str| Request::get(uri).body(empty()).expect("request");
    let (status, _, _) = collect(
        send.send_request(to("https://a.example/first"))
            .await
            .expect("response"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = collect(
        send.send_request(to("https://other.example/second"))
            .await
            .expect("response"),
    )
    .await;
    assert_eq!(status, 421, "second stream with another policy's :authority");
    let (status, _, _) = collect(
        send.send_request(to("https://a.example/third"))
            .await
            .expect("response"),
    )
    .await;
    assert_eq!(status, 200);
    let paths: Vec<String> = backend.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(paths, vec!["/first", "/third"]);
    proxy.stop().await;
}

/// [`request_once`], plus the XFCC the backend received.
async fn one_request(
    addr: std::net::SocketAddr,
    name: &str,
    config: Arc<ClientConfig>,
    backend: &Backend,
) -> Result<(HandshakeKind, String), AlertDescription> {
    let kind = request_once(addr, name, config).await?;
    let xfcc = backend.last().headers["x-forwarded-client-cert"]
        .to_str()
        .expect("ascii")
        .to_string();
    Ok((kind, xfcc))
}

#[tokio::test]
async fn resumed_tls13_session_forwards_the_same_identity() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let config = fx.tls13_client(b"http/1.1");
    let (first, xfcc1) = one_request(proxy.addr, "localhost", config.clone(), &backend)
        .await
        .expect("first");
    let (second, xfcc2) = one_request(proxy.addr, "localhost", config, &backend)
        .await
        .expect("second");
    assert_eq!(first, HandshakeKind::Full);
    assert_eq!(second, HandshakeKind::Resumed);
    assert_eq!(xfcc1, xfcc2);
    assert!(xfcc2.contains("Subject=\"CN=client-1\""));
    proxy.stop().await;
}

#[tokio::test]
async fn resumption_off_means_every_handshake_is_full() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.tls.session_resumption = SessionResumption::Off;
    let proxy = spawn_proxy(config).await;
    let client = fx.tls13_client(b"http/1.1");
    for _ in 0..3 {
        let (kind, _) = one_request(proxy.addr, "localhost", client.clone(), &backend)
            .await
            .expect("ok");
        assert_eq!(kind, HandshakeKind::Full);
    }
    proxy.stop().await;
}

/// A client session store that offers any saved TLS 1.3 ticket to any server name: what an
/// attacker replaying a ticket from host A on a connection to host B would do.
#[derive(Debug)]
struct AnyNameTickets {
    inner: ClientSessionMemoryCache,
    tickets: Mutex<Vec<Tls13ClientSessionValue>>,
}

impl ClientSessionStore for AnyNameTickets {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.tickets.lock().expect("lock").push(value);
    }
    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.tickets.lock().expect("lock").pop()
    }
}

#[tokio::test]
async fn a_ticket_from_one_policy_never_resumes_under_another() {
    // A and B trust the same CA, but B admits only CN=b-only. A client verified under A must not
    // carry its session into B and skip B's allow-list.
    let h = Hosts::new();
    let backend = Backend::tcp().await;
    let mut config = h.fx.config(&backend.url());
    config.hosts.push(h.host(&["a.example"], "ca-a.pem"));
    let mut b = h.host(&["b.example"], "ca-a.pem");
    b.client_auth.allow.subjects = vec!["CN=b-only".into()];
    config.hosts.push(b);
    let proxy = spawn_proxy(config).await;

    let leaf = h.ca_a.leaf(Leaf::client("a-client"));
    let mut client = (*client_config(
        &h.fx.server_ca.der,
        Some(&leaf),
        &[&rustls::version::TLS13],
        &[b"http/1.1"],
    ))
    .clone();
    let store = Arc::new(AnyNameTickets {
        inner: ClientSessionMemoryCache::new(8),
        tickets: Mutex::new(Vec::new()),
    });
    client.resumption = Resumption::store(store.clone());
    let client = Arc::new(client);

    let (kind, _) = one_request(proxy.addr, "a.example", client.clone(), &backend)
        .await
        .expect("A admits");
    assert_eq!(kind, HandshakeKind::Full);
    assert!(!store.tickets.lock().expect("lock").is_empty(), "A issued tickets");
    // The ticket is offered under B: B cannot decrypt it, so a full handshake runs and B's
    // allow-list refuses the client.
    let outcome = one_request(proxy.addr, "b.example", client.clone(), &backend).await;
    assert_eq!(outcome.err(), Some(AlertDescription::AccessDenied));
    // Under A it still resumes (the control: tickets work at all).
    let (kind, _) = one_request(proxy.addr, "a.example", client, &backend)
        .await
        .expect("A resumes");
    assert_eq!(kind, HandshakeKind::Resumed);
    proxy.stop().await;
}

#[tokio::test]
async fn peer_gate_closes_unlisted_addresses_before_tls_and_admits_listed_ones() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.listener.allow_peers = originguard::peers::parse_peers("cloudflare").expect("cloudflare");
    config
        .listener
        .allow_peers
        .push(originguard::peers::IpNet::parse("203.0.113.0/24").expect("net"));
    let proxy = spawn_proxy(config).await;
    let refused = tls_connect(proxy.addr, fx.client_config(Some(&fx.client))).await;
    assert!(refused.is_err(), "127.0.0.1 passed a gate that excludes it");
    assert_eq!(backend.count(), 0);
    proxy.stop().await;

    let mut config = fx.config(&backend.url());
    config.listener.allow_peers = vec![originguard::peers::IpNet::parse("127.0.0.0/8").expect("net")];
    let proxy = spawn_proxy(config).await;
    let (status, _, _) = request(proxy.addr, fx.client_config(Some(&fx.client)), get("/")).await;
    assert_eq!(status, 200);
    proxy.stop().await;
}

//! Server-side handshake cost, in memory (no sockets): the bytes are passed between a rustls
//! `ClientConnection` and the production `ServerConnection` config, and only the server's calls
//! are timed (as in rustls' own bench). Also the client-certificate verifier alone.
//!
//! `cargo bench --bench handshake`

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Flavour, Pki};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rustls::pki_types::UnixTime;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

/// One handshake; returns the time spent in server calls.
fn handshake(server_config: &Arc<ServerConfig>, client_config: &Arc<ClientConfig>) -> Duration {
    handshake_as(server_config, client_config).0
}

/// One handshake: the time spent in server calls, what kind it was and the group it used.
fn handshake_as(
    server_config: &Arc<ServerConfig>,
    client_config: &Arc<ClientConfig>,
) -> (Duration, Option<rustls::HandshakeKind>, Option<rustls::NamedGroup>) {
    let mut client =
        ClientConnection::new(client_config.clone(), "localhost".try_into().expect("name")).expect("client");
    let mut buf = Vec::with_capacity(16 * 1024);
    let started = Instant::now();
    let mut server = ServerConnection::new(server_config.clone()).expect("server");
    let mut server_time = started.elapsed();
    for _ in 0..10 {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client write");
        }
        if !buf.is_empty() {
            let started = Instant::now();
            let mut slice = &buf[..];
            while !slice.is_empty() {
                server.read_tls(&mut slice).expect("server read");
            }
            server.process_new_packets().expect("server accepts the client");
            server_time += started.elapsed();
        }
        buf.clear();
        let started = Instant::now();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server write");
        }
        server_time += started.elapsed();
        if !buf.is_empty() {
            let mut slice = &buf[..];
            while !slice.is_empty() {
                client.read_tls(&mut slice).expect("client read");
            }
            client.process_new_packets().expect("client accepts the server");
        }
        if !client.is_handshaking() && !server.is_handshaking() && !server.wants_write() {
            let group = client.negotiated_key_exchange_group().map(|g| g.name());
            return (server_time, client.handshake_kind(), group);
        }
    }
    panic!("handshake did not finish");
}

fn handshakes(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");
    group.sample_size(50).measurement_time(Duration::from_secs(5));
    for (name, flavour) in [("ecdsa", Flavour::Ecdsa), ("cloudflare_rsa", Flavour::CloudflareLike)] {
        let pki = Pki::new(flavour);
        for cache in [false, true] {
            let (_, policies) = pki.policies(&format!("verify_cache = {cache}"), "session_resumption = \"off\"");
            let server = policies.default.server_config.clone();
            let client = pki.client_config(false);
            let id = format!("{name}/full/cache_{}", if cache { "on" } else { "off" });
            group.bench_function(id, |b| {
                b.iter_custom(|iters| (0..iters).map(|_| handshake(&server, &client)).sum());
            });
        }
    }
    let pki = Pki::new(Flavour::Ecdsa);
    let (_, policies) = pki.policies("", "session_resumption = \"tickets\"");
    let server = policies.default.server_config.clone();
    let client = pki.client_config(true);
    handshake(&server, &client);
    group.bench_function("ecdsa/resumed", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| handshake(&server, &client)).sum());
    });
    group.finish();
}

/// Post-quantum costs, server side, full TLS 1.3 handshakes without resumption or the verified-
/// chain cache: the client certificate's algorithm (P-256 vs ML-DSA-44, both with X25519), and
/// the key exchange (P-256 client certificate): X25519, X25519MLKEM768 sent at once, and
/// Cloudflare's default hello (X25519 share, hybrid advertised) answered by a HelloRetryRequest
/// for the hybrid (`tls.key_exchange = "hybrid-preferred"`).
fn post_quantum(c: &mut Criterion) {
    use rustls::crypto::aws_lc_rs::kx_group::{X25519, X25519MLKEM768};
    let mut group = c.benchmark_group("pq");
    group.sample_size(50).measurement_time(Duration::from_secs(5));
    let off = ("verify_cache = false", "session_resumption = \"off\"");
    for (name, flavour) in [("p256", Flavour::Ecdsa), ("ml_dsa_44", Flavour::MlDsa44)] {
        let pki = Pki::new(flavour);
        let (_, policies) = pki.policies(off.0, off.1);
        let server = policies.default.server_config.clone();
        let client = pki.client_config_with_groups(false, Some(vec![X25519]));
        group.bench_function(format!("client_cert_{name}/x25519"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| handshake(&server, &client)).sum());
        });
    }
    let pki = Pki::new(Flavour::Ecdsa);
    let (_, policies) = pki.policies(off.0, off.1);
    let server = policies.default.server_config.clone();
    let hybrid_only = policies
        .default
        .variants
        .hybrid_only
        .clone()
        .expect("hybrid-preferred builds the hybrid-only variant");
    use rustls::HandshakeKind::{Full, FullWithHelloRetryRequest};
    use rustls::NamedGroup;
    let cases = [
        ("x25519", server.clone(), vec![X25519], Full, NamedGroup::X25519),
        (
            "x25519mlkem768",
            server.clone(),
            vec![X25519MLKEM768, X25519],
            Full,
            NamedGroup::X25519MLKEM768,
        ),
        (
            "hrr_to_x25519mlkem768",
            hybrid_only,
            vec![X25519, X25519MLKEM768],
            FullWithHelloRetryRequest,
            NamedGroup::X25519MLKEM768,
        ),
    ];
    for (name, server, groups, kind, group_name) in cases {
        let client = pki.client_config_with_groups(false, Some(groups));
        // Measure what the name says.
        let (_, seen_kind, seen_group) = handshake_as(&server, &client);
        assert_eq!((seen_kind, seen_group), (Some(kind), Some(group_name)), "{name}");
        group.bench_function(format!("kx/{name}"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| handshake(&server, &client)).sum());
        });
    }
    group.finish();
}

fn verifier(c: &mut Criterion) {
    let mut group = c.benchmark_group("verifier");
    group.sample_size(50).measurement_time(Duration::from_secs(3));
    for (name, flavour) in [("ecdsa", Flavour::Ecdsa), ("cloudflare_rsa", Flavour::CloudflareLike)] {
        let pki = Pki::new(flavour);
        for cache in [false, true] {
            let (config, _) = pki.policies("", "");
            let verifier = verifier_for(&config, cache);
            let leaf = pki.client_chain[0].clone();
            group.bench_function(format!("{name}/cache_{}", if cache { "on" } else { "off" }), |b| {
                b.iter(|| verifier.verify(&leaf, &[], UnixTime::now()).expect("verifies"));
            });
        }
    }
    group.finish();
}

fn verifier_for(config: &originguard::config::Config, cache: bool) -> originguard::tls::ClientVerifier {
    let mut cas = Vec::new();
    for source in &config.client_auth.trust {
        if let originguard::config::TrustSource::File(path) = source {
            cas.extend(originguard::tls::load::trusted_cas(path).expect("ca"));
        }
    }
    originguard::tls::ClientVerifier::new(
        &cas,
        1,
        originguard::tls::Revocations::default(),
        Default::default(),
        cache,
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
    )
}

/// Keeps a handle alive for the batched setup closure type.
#[allow(dead_code)]
fn _unused(_: BatchSize) {}

criterion_group!(benches, handshakes, post_quantum, verifier);
criterion_main!(benches);

//! Metric names and handles. These names and labels are public API (INTERFACE.md):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `originguard_handshakes_total` | counter | `result`: `ok` or a [`Reason`] label |
//! | `originguard_handshake_duration_seconds` | histogram | |
//! | `originguard_tls_resumed_total` | counter | |
//! | `originguard_connections_open` | gauge | |
//! | `originguard_requests_total` | counter | `code` |
//! | `originguard_request_duration_seconds` | histogram | |
//! | `originguard_upstream_errors_total` | counter | `kind`: `connect`, `tls`, `reset`, `timeout` (the upstream's failures; a client's mistakes show in `requests_total{code}`) |
//! | `originguard_reloads_total` | counter | `result`: `ok`, `error` |
//! | `originguard_certificate_not_after_seconds` | gauge | `role`: `server`, `client_ca`; `subject`; `sha256` (lowercase hex of the DER) |
//! | `originguard_build_info` | gauge (1) | `version` |
//! | `originguard_verify_cache_total` | counter | `result`: `hit`, `miss` |
//! | `originguard_tls_negotiated_total` | counter | `version`: `1.2`, `1.3`; `group`: `X25519`, `X25519MLKEM768`, `secp256r1`, `secp384r1`, `secp521r1`, `other` |
//! | `originguard_peers_refused_total` | counter | (connections closed by `listener.allow_peers`) |
//! | `originguard_log_dropped_total` | counter | (log lines that could not be written) |
//! | `originguard_proxy_protocol_refused_total` | counter | (missing/malformed PROXY header, or a peer not in `proxy_protocol_from`) |
//!
//! Handshake counters are resolved once per reason at startup, so the handshake path increments
//! an atomic without a map lookup.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::audit::CertSummary;
use crate::tls::{PolicySet, Reason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabel {
    role: &'static str,
    subject: String,
    /// Two CAs may share a subject (the rotation recipe): the fingerprint keeps them apart.
    sha256: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NegotiatedLabel {
    version: &'static str,
    group: &'static str,
}

/// Every handshake outcome label, in a fixed order.
const HANDSHAKE_RESULTS: [Option<Reason>; 13] = [
    None,
    Some(Reason::NoCertificate),
    Some(Reason::UnknownIssuer),
    Some(Reason::BadDepth),
    Some(Reason::Expired),
    Some(Reason::NotYetValid),
    Some(Reason::Revoked),
    Some(Reason::NotAllowed),
    Some(Reason::BadSignature),
    Some(Reason::BadPurpose),
    Some(Reason::Timeout),
    Some(Reason::ProtocolError),
    Some(Reason::Other),
];

/// Status codes whose request counters are resolved at startup (others go through the map).
const COMMON_CODES: [u16; 18] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 421, 429, 431, 500, 502, 503, 504,
];

/// Log lines the process could not write. Process-wide, like the log itself: the writer has no
/// handle on a `Metrics`.
pub(crate) static LOG_DROPPED: std::sync::LazyLock<Counter> = std::sync::LazyLock::new(Counter::default);
/// Verified-chain cache lookups (`originguard_verify_cache_total{result}`): process-wide, since
/// every reload builds new verifiers and the counts must survive it.
static VERIFY_CACHE: std::sync::LazyLock<Family<ResultLabel, Counter>> = std::sync::LazyLock::new(Family::default);
pub(crate) static VERIFY_CACHE_HITS: std::sync::LazyLock<Counter> =
    std::sync::LazyLock::new(|| VERIFY_CACHE.get_or_create(&ResultLabel { result: "hit" }).clone());
pub(crate) static VERIFY_CACHE_MISSES: std::sync::LazyLock<Counter> =
    std::sync::LazyLock::new(|| VERIFY_CACHE.get_or_create(&ResultLabel { result: "miss" }).clone());

/// The process's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    handshakes: Vec<Counter>,
    handshake_duration: Histogram,
    resumed: Counter,
    connections_open: Gauge,
    requests: Family<CodeLabel, Counter>,
    /// Counters for [`COMMON_CODES`], in that order: the request path increments an atomic
    /// without hashing or locking.
    common_requests: Vec<Counter>,
    request_duration: Histogram,
    upstream_errors: Family<KindLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    not_after: Family<CertLabel, Gauge>,
    peers_refused: Counter,
    negotiated: Family<NegotiatedLabel, Counter>,
    proxy_protocol_refused: Counter,
    /// Serializes certificate-gauge refreshes (clear + set).
    cert_lock: Mutex<()>,
}

impl Metrics {
    pub(crate) fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let handshake_family = Family::<ResultLabel, Counter>::default();
        registry.register(
            "originguard_handshakes",
            "TLS handshakes by result: ok or the failure reason",
            handshake_family.clone(),
        );
        let handshakes = HANDSHAKE_RESULTS
            .iter()
            .map(|r| {
                let result = r.map_or("ok", Reason::as_str);
                handshake_family.get_or_create(&ResultLabel { result }).clone()
            })
            .collect();
        // 100 µs .. ~13 s.
        let handshake_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register(
            "originguard_handshake_duration_seconds",
            "Time from TCP accept to TLS handshake done (successful handshakes)",
            handshake_duration.clone(),
        );
        let resumed = Counter::default();
        registry.register(
            "originguard_tls_resumed",
            "Handshakes that resumed a TLS session",
            resumed.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "originguard_connections_open",
            "Open TLS connections",
            connections_open.clone(),
        );
        let requests = Family::<CodeLabel, Counter>::default();
        registry.register(
            "originguard_requests",
            "HTTP requests by response status",
            requests.clone(),
        );
        let common_requests = COMMON_CODES
            .iter()
            .map(|&code| requests.get_or_create(&CodeLabel { code }).clone())
            .collect();
        let request_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 21));
        registry.register(
            "originguard_request_duration_seconds",
            "Time from request head to the end of the response body",
            request_duration.clone(),
        );
        let upstream_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "originguard_upstream_errors",
            "Requests the upstream failed: connect, reset, timeout",
            upstream_errors.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "originguard_reloads",
            "Configuration reloads by result",
            reloads.clone(),
        );
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ResultLabel { result });
        }
        for kind in ["connect", "tls", "reset", "timeout"] {
            let _ = upstream_errors.get_or_create(&KindLabel { kind });
        }
        let not_after = Family::<CertLabel, Gauge>::default();
        registry.register(
            "originguard_certificate_not_after_seconds",
            "Expiry (Unix time) of server certificates and trusted client CAs",
            not_after.clone(),
        );
        let peers_refused = Counter::default();
        registry.register(
            "originguard_peers_refused",
            "Connections closed by listener.allow_peers before the TLS handshake",
            peers_refused.clone(),
        );
        registry.register(
            "originguard_log_dropped",
            "Log lines dropped because writing them failed (stderr closed or full)",
            LOG_DROPPED.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        registry.register(
            "originguard_build_info",
            "1, labelled with the version of the running binary",
            build_info.clone(),
        );
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "originguard_verify_cache",
            "Verified-chain cache lookups on full handshakes: hit (CA signatures skipped) or miss",
            VERIFY_CACHE.clone(),
        );
        // Both series exist from the start.
        let _ = (&*VERIFY_CACHE_HITS, &*VERIFY_CACHE_MISSES);
        let proxy_protocol_refused = Counter::default();
        registry.register(
            "originguard_proxy_protocol_refused",
            "Connections closed for a missing or malformed PROXY protocol header, or from a peer not in listener.proxy_protocol_from",
            proxy_protocol_refused.clone(),
        );
        let negotiated = Family::<NegotiatedLabel, Counter>::default();
        registry.register(
            "originguard_tls_negotiated",
            "Successful handshakes by TLS version (1.2, 1.3) and key-exchange group (X25519, X25519MLKEM768, secp256r1, ...)",
            negotiated.clone(),
        );
        Arc::new(Metrics {
            registry,
            handshakes,
            handshake_duration,
            resumed,
            connections_open,
            requests,
            common_requests,
            request_duration,
            upstream_errors,
            reloads,
            not_after,
            peers_refused,
            negotiated,
            proxy_protocol_refused,
            cert_lock: Mutex::new(()),
        })
    }

    /// Prometheus / OpenMetrics text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String cannot fail");
        out
    }

    pub(crate) fn handshake_ok(&self, seconds: f64, resumed: bool) {
        self.handshakes[0].inc();
        self.handshake_duration.observe(seconds);
        if resumed {
            self.resumed.inc();
        }
    }

    /// Counts what a successful handshake negotiated.
    pub(crate) fn negotiated(&self, version: &'static str, group: &'static str) {
        self.negotiated.get_or_create(&NegotiatedLabel { version, group }).inc();
    }

    pub(crate) fn handshake_failed(&self, reason: Reason) {
        let index = HANDSHAKE_RESULTS
            .iter()
            .position(|r| *r == Some(reason))
            .expect("every reason has a counter");
        self.handshakes[index].inc();
    }

    /// Counts an open connection until the guard is dropped.
    pub(crate) fn connection_open(self: &Arc<Self>) -> ConnectionGuard {
        self.connections_open.inc();
        ConnectionGuard(self.clone())
    }

    pub(crate) fn request_done(&self, code: u16, seconds: f64) {
        match COMMON_CODES.iter().position(|c| *c == code) {
            Some(i) => self.common_requests[i].inc(),
            None => self.requests.get_or_create(&CodeLabel { code }).inc(),
        };
        self.request_duration.observe(seconds);
    }

    pub(crate) fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors.get_or_create(&KindLabel { kind }).inc();
    }

    pub(crate) fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    pub(crate) fn proxy_protocol_refused(&self) {
        self.proxy_protocol_refused.inc();
    }

    pub(crate) fn peer_refused(&self) {
        self.peers_refused.inc();
    }

    /// Replaces the certificate expiry gauges with those of `policies`.
    pub(crate) fn set_certificates(&self, policies: &PolicySet) {
        let _guard = self.cert_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.not_after.clear();
        for policy in policies.all() {
            let certs = policy
                .server_chain
                .first()
                .map(|leaf| ("server", leaf))
                .into_iter()
                .chain(policy.cas.iter().map(|ca| ("client_ca", &ca.der)));
            for (role, der) in certs {
                let summary = CertSummary::of(der);
                if let Some(t) = summary.not_after {
                    self.not_after
                        .get_or_create(&CertLabel {
                            role,
                            subject: summary.subject,
                            sha256: crate::tls::identity::fingerprint(der.as_ref()),
                        })
                        .set(t.unix_timestamp());
                }
            }
        }
    }
}

/// Decrements `originguard_connections_open` on drop.
pub(crate) struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

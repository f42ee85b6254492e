//! `originguard check`: the effective policy in words, and the warnings an operator should see
//! (also logged at startup by `serve`).

use std::fmt::Write;

use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use std::collections::HashMap;

use base64::Engine;
use rustls::pki_types::ServerName;

use crate::config::{Config, SessionResumption};
use crate::tls::identity::{fingerprint_colons, rfc4514};
use crate::tls::{load, server, Policy, PolicySet, TrustedCa};

/// A CA or server certificate expiring within this many days is warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Subject, expiry and SHA-256 of a certificate, for reports.
pub struct CertSummary {
    pub subject: String,
    pub not_after: Option<OffsetDateTime>,
    pub sha256: String,
    /// The certificate's key algorithm (what the certificates it issues are signed with, for a
    /// CA): `RSA-4096`, `ECDSA P-256`, `ML-DSA-65`, ...
    pub key: String,
}

impl CertSummary {
    pub fn of(der: &CertificateDer<'_>) -> CertSummary {
        let sha256 = fingerprint_colons(der.as_ref());
        match X509Certificate::from_der(der.as_ref()) {
            Ok((_, cert)) => CertSummary {
                subject: rfc4514(cert.subject()),
                not_after: Some(cert.validity().not_after.to_datetime()),
                sha256,
                key: key_algorithm(&cert),
            },
            Err(_) => CertSummary {
                subject: "(unparsable)".into(),
                not_after: None,
                sha256,
                key: "unknown".into(),
            },
        }
    }

    fn not_after_text(&self) -> String {
        let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
        self.not_after
            .and_then(|t| t.format(&format).ok())
            .unwrap_or_else(|| "unknown".into())
    }
}

/// A certificate's public-key algorithm in words (ML-DSA parameter sets by OID).
fn key_algorithm(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    let oid = spki.algorithm.algorithm.to_id_string();
    match oid.as_str() {
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => format!("RSA-{}", rsa.key_size()),
            _ => "RSA".into(),
        },
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|c| c.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "ECDSA P-256".into(),
                Some("1.3.132.0.34") => "ECDSA P-384".into(),
                Some("1.3.132.0.35") => "ECDSA P-521".into(),
                _ => "ECDSA".into(),
            }
        }
        "1.3.101.112" => "Ed25519".into(),
        "2.16.840.1.101.3.4.3.17" => "ML-DSA-44".into(),
        "2.16.840.1.101.3.4.3.18" => "ML-DSA-65".into(),
        "2.16.840.1.101.3.4.3.19" => "ML-DSA-87".into(),
        other => other.to_string(),
    }
}

/// The effective policy, as `check` prints it.
pub fn describe(config: &Config, policies: &PolicySet) -> String {
    let mut out = String::new();
    let l = &config.listener;
    let _ = writeln!(out, "config: {}", config.file.display());
    let _ = writeln!(
        out,
        "listener: {} (http2 {}, max_connections {}, handshake_timeout {:?}, idle_timeout {:?})",
        l.address,
        if l.http2 { "on" } else { "off" },
        l.max_connections,
        l.handshake_timeout,
        l.idle_timeout
    );
    match l.allow_peers.len() {
        0 => {
            let _ = writeln!(out, "allow_peers: any");
        }
        n => {
            let _ = writeln!(out, "allow_peers: {n} networks");
        }
    }
    let _ = writeln!(
        out,
        "session resumption: {}",
        match config.tls.session_resumption {
            SessionResumption::Tickets => format!("tickets (max age {:?}, per policy)", server::TICKET_MAX_AGE),
            SessionResumption::Off => "off".to_string(),
        }
    );
    let _ = writeln!(
        out,
        "key exchange: {} (post-quantum X25519MLKEM768 {})",
        config.tls.key_exchange.as_str(),
        match config.tls.key_exchange {
            crate::config::KeyExchange::HybridPreferred =>
                "for every client that supports it, by HelloRetryRequest if needed",
            crate::config::KeyExchange::HybridIfSent => "when the client sent a hybrid key share",
            crate::config::KeyExchange::Classical => "off",
        }
    );
    let _ = writeln!(out, "FIPS: {}", crate::tls::server::fips_status());
    for policy in policies.all() {
        describe_policy(&mut out, policy);
    }
    describe_upstream(&mut out, "upstream", &config.upstream);
    for (i, host) in config.hosts.iter().enumerate() {
        if let Some(upstream) = &host.upstream {
            describe_upstream(&mut out, &format!("hosts[{i}].upstream"), upstream);
        }
    }
    let _ = writeln!(
        out,
        "headers: client_cert {}, x_forwarded {}",
        config.headers.client_cert.as_str(),
        config.headers.x_forwarded
    );
    out
}

fn describe_upstream(out: &mut String, label: &str, upstream: &crate::config::UpstreamConfig) {
    let _ = writeln!(
        out,
        "{label}: {} ({}, connect_timeout {:?}, response_timeout {:?})",
        upstream.target,
        upstream.protocol.as_str(),
        upstream.connect_timeout,
        upstream.response_timeout
    );
    if upstream.target.is_https() {
        let tls = &upstream.tls;
        let cas = match tls.ca.is_empty() {
            true => "the webpki roots".to_string(),
            false => tls
                .ca
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let name = tls.server_name.as_deref().unwrap_or("the URL's host");
        let _ = writeln!(out, "  verified against {cas}, as {name}");
        if let Some((cert, _)) = &tls.client_certificate {
            let _ = writeln!(out, "  presenting client certificate {}", cert.display());
        }
    }
}

fn describe_policy(out: &mut String, policy: &Policy) {
    match policy.server_names.is_empty() {
        true => {
            let _ = writeln!(out, "policy {} (no SNI or an unlisted name):", policy.name);
        }
        false => {
            let _ = writeln!(out, "policy {} ({}):", policy.name, policy.server_names.join(", "));
        }
    }
    if let Some(leaf) = policy.server_chain.first() {
        let s = CertSummary::of(leaf);
        let _ = writeln!(
            out,
            "  server certificate: {} (not after {}; chain of {})",
            s.subject,
            s.not_after_text(),
            policy.server_chain.len()
        );
    }
    let _ = writeln!(
        out,
        "  client certificates: required; verify_depth {} ({})",
        policy.verify_depth,
        match policy.verify_depth {
            1 => "leaf issued directly by a trusted CA".to_string(),
            n => format!("up to {} intermediate(s) sent by the client", n - 1),
        }
    );
    for ca in &policy.cas {
        let s = CertSummary::of(&ca.der);
        let _ = writeln!(out, "  trusted CA: {}", s.subject);
        let _ = writeln!(out, "    sha256: {}", s.sha256);
        let _ = writeln!(out, "    key: {}", s.key);
        let _ = writeln!(out, "    not after: {}", s.not_after_text());
        let _ = writeln!(out, "    source: {}", ca.source);
    }
    if policy.crl_files.is_empty() {
        let _ = writeln!(out, "  crl: none");
    }
    for crl in &policy.crl_files {
        let _ = writeln!(out, "  crl: {}", crl.display());
    }
    let a = &policy.allow;
    if a.is_empty() {
        let _ = writeln!(out, "  allow-lists: none (any certificate that chains)");
    }
    let lists: [(&str, Vec<String>); 5] = [
        ("allow_subjects", a.subjects.clone()),
        ("allow_dns_names", a.dns_names.clone()),
        ("allow_uris", a.uris.clone()),
        (
            "allow_spki_sha256",
            a.spki_sha256
                .iter()
                .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
                .collect(),
        ),
        ("allow_cert_sha256", a.cert_sha256.iter().map(hex::encode).collect()),
    ];
    for (key, values) in lists {
        if !values.is_empty() {
            let _ = writeln!(out, "  {key}: {}", values.join(", "));
        }
    }
}

/// Settings that are legal but going stale.
pub fn config_warnings(config: &Config, now: OffsetDateTime) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.listener.embedded_cloudflare_ranges {
        let (y, m, d) = crate::net::CLOUDFLARE_RANGES_AS_OF;
        let as_of = time::Month::try_from(m)
            .ok()
            .and_then(|m| time::Date::from_calendar_date(y, m, d).ok());
        if let Some(as_of) = as_of {
            let age = (now.date() - as_of).whole_days();
            if age > crate::net::STALE_AFTER_DAYS {
                warnings.push(format!(
                    "listener.allow_peers: the embedded Cloudflare ranges are {age} days old (as of {as_of}); \
                     fetch current ones with `originguard cloudflare ips --out FILE` and use \"file:FILE\""
                ));
            }
        }
    }
    warnings
}

/// Things that are legal but probably wrong or soon broken.
pub fn warnings(policies: &PolicySet, now: OffsetDateTime) -> Vec<String> {
    let mut warnings = Vec::new();
    let soon = now + time::Duration::days(EXPIRY_WARNING_DAYS);
    let mut stale = Vec::new();
    let mut expiry = |what: String, s: &CertSummary| match s.not_after {
        Some(t) if t <= now => warnings.push(format!("{what} {} expired on {}", s.subject, s.not_after_text())),
        Some(t) if t <= soon => warnings.push(format!(
            "{what} {} expires on {} (within {EXPIRY_WARNING_DAYS} days)",
            s.subject,
            s.not_after_text()
        )),
        _ => {}
    };
    for policy in policies.all() {
        let unix = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        for next in policy.verifier.stale_crls(unix) {
            stale.push(format!(
                "{}: a CRL is past its nextUpdate ({}): it still revokes what it lists, but newer \
                 revocations are unknown; fetch a fresh one (client_auth.crl_stale = \"refuse\" refuses its CA's clients meanwhile)",
                policy.name,
                crate::tls::utc(i64::try_from(next).unwrap_or(i64::MAX))
            ));
        }
        if let Some(leaf) = policy.server_chain.first() {
            expiry(format!("{}: server certificate", policy.name), &CertSummary::of(leaf));
        }
        for ca in &policy.cas {
            expiry(format!("{}: trusted CA", policy.name), &CertSummary::of(&ca.der));
        }
    }
    warnings.extend(stale);

    let cloudflare = load::cloudflare_ca();
    let is_cloudflare_pull_ca = |ca: &TrustedCa| {
        cloudflare
            .iter()
            .any(|cf| cf.anchor.subject_public_key_info == ca.anchor.subject_public_key_info)
    };
    for policy in policies.all() {
        if !policy.cas.is_empty() && policy.cas.iter().all(is_cloudflare_pull_ca) && policy.allow.is_empty() {
            warnings.push(format!(
                "{}: only the shared Cloudflare origin-pull CA is trusted, with no allow-list: its client \
                 certificate is the same for every Cloudflare customer, so any Cloudflare zone pointed at this \
                 origin passes. Use zone-level or per-hostname Authenticated Origin Pulls with your own CA \
                 (trust = [\"/path/to/your-ca.pem\"]), or pin a certificate (allow_cert_sha256)",
                policy.name
            ));
        }
        for ca in &policy.cas {
            let subject = CertSummary::of(&ca.der).subject.to_ascii_lowercase();
            if subject.contains("cloudflare") && subject.contains("origin ssl") {
                warnings.push(format!(
                    "{}: {} is trusted for client certificates, but it is the Cloudflare Origin CA, which signs \
                     origin *server* certificates; Cloudflare's client certificate is issued by the origin-pull CA \
                     (trust = [\"cloudflare\"])",
                    policy.name, ca.source
                ));
            }
        }
        if let Some(leaf) = policy.server_chain.first() {
            for name in &policy.server_names {
                if !certificate_covers(leaf, name) {
                    warnings.push(format!(
                        "{}: server certificate does not cover server name {name:?}: clients checking the \
                         certificate (Cloudflare in Full (strict)) will refuse it",
                        policy.name
                    ));
                }
            }
        }
    }

    let mut seen: HashMap<&str, &str> = HashMap::new();
    for policy in &policies.hosts {
        for name in &policy.server_names {
            if let Some(first) = seen.insert(name, &policy.name) {
                warnings.push(format!(
                    "server name {name:?} is listed by both {first} and {}; {first} wins",
                    policy.name
                ));
                seen.insert(name, first);
            }
        }
    }
    warnings
}

/// Whether a certificate is valid for `name` (for `*.domain`, for a name under it).
fn certificate_covers(leaf: &CertificateDer<'_>, name: &str) -> bool {
    let probe = match name.strip_prefix("*.") {
        Some(domain) => format!("originguard-probe.{domain}"),
        None => name.to_string(),
    };
    let Ok(server_name) = ServerName::try_from(probe) else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf).is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&server_name).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(
        feature = "fips",
        ignore = "relies on the default trust = [\"cloudflare\"], which a FIPS build refuses"
    )]
    fn embedded_cloudflare_ranges_are_warned_about_once_stale() {
        let text = "[listener]\nallow_peers = [\"cloudflare\"]\n[tls]\ncertificate = \"s\"\nprivate_key = \"k\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n";
        let config = Config::from_toml(std::path::Path::new("t.toml"), text).expect("valid");
        let (y, m, d) = crate::net::CLOUDFLARE_RANGES_AS_OF;
        let as_of = time::Date::from_calendar_date(y, time::Month::try_from(m).expect("month"), d)
            .expect("date")
            .midnight()
            .assume_utc();
        assert!(config_warnings(&config, as_of + time::Duration::days(30)).is_empty());
        let stale = config_warnings(&config, as_of + time::Duration::days(120));
        assert_eq!(stale.len(), 1);
        assert!(
            stale[0].contains("120 days old") && stale[0].contains("cloudflare ips --out"),
            "{stale:?}"
        );
    }
}

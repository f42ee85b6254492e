//! `originguard check`: the effective policy in words, and the warnings an operator should see
//! (also logged at startup by `serve`).

use std::fmt::Write;

use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::Config;
use crate::tls::identity::{hex, rfc4514};
use crate::tls::{load, Policy, TrustedCa};

/// A CA or server certificate expiring within this many days is warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Subject, expiry and SHA-256 of a certificate, for reports.
pub struct CertSummary {
    pub subject: String,
    pub not_after: Option<OffsetDateTime>,
    pub sha256: String,
}

impl CertSummary {
    pub fn of(der: &CertificateDer<'_>) -> CertSummary {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
        let sha256 = hex(digest.as_ref())
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap_or("??"))
            .collect::<Vec<_>>()
            .join(":");
        match X509Certificate::from_der(der.as_ref()) {
            Ok((_, cert)) => CertSummary {
                subject: rfc4514(cert.subject()),
                not_after: Some(cert.validity().not_after.to_datetime()),
                sha256,
            },
            Err(_) => CertSummary {
                subject: "(unparsable)".into(),
                not_after: None,
                sha256,
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

/// The effective policy, as `check` prints it.
pub fn describe(config: &Config, policy: &Policy) -> String {
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
    if let Some(leaf) = policy.server_chain.first() {
        let s = CertSummary::of(leaf);
        let _ = writeln!(
            out,
            "server certificate: {} (not after {}; chain of {})",
            s.subject,
            s.not_after_text(),
            policy.server_chain.len()
        );
    }
    let _ = writeln!(
        out,
        "client certificates: required; verify_depth {} ({})",
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
        let _ = writeln!(out, "    not after: {}", s.not_after_text());
        let _ = writeln!(out, "    source: {}", ca.source);
    }
    if policy.crl_files.is_empty() {
        let _ = writeln!(out, "  crl: none");
    }
    for crl in &policy.crl_files {
        let _ = writeln!(out, "  crl: {}", crl.display());
    }
    let _ = writeln!(
        out,
        "upstream: {} ({}, connect_timeout {:?}, response_timeout {:?})",
        config.upstream.target,
        config.upstream.protocol.as_str(),
        config.upstream.connect_timeout,
        config.upstream.response_timeout
    );
    let _ = writeln!(
        out,
        "headers: client_cert {}, x_forwarded {}",
        config.headers.client_cert.as_str(),
        config.headers.x_forwarded
    );
    out
}

/// Things that are legal but probably wrong or soon broken.
pub fn warnings(policy: &Policy, now: OffsetDateTime) -> Vec<String> {
    let mut warnings = Vec::new();
    let soon = now + time::Duration::days(EXPIRY_WARNING_DAYS);
    let mut expiry = |what: String, s: &CertSummary| match s.not_after {
        Some(t) if t <= now => warnings.push(format!("{what} {} expired on {}", s.subject, s.not_after_text())),
        Some(t) if t <= soon => warnings.push(format!(
            "{what} {} expires on {} (within {EXPIRY_WARNING_DAYS} days)",
            s.subject,
            s.not_after_text()
        )),
        _ => {}
    };
    if let Some(leaf) = policy.server_chain.first() {
        expiry("server certificate".into(), &CertSummary::of(leaf));
    }
    for ca in &policy.cas {
        expiry("trusted CA".into(), &CertSummary::of(&ca.der));
    }

    let cloudflare = load::cloudflare_ca();
    let is_cloudflare_pull_ca = |ca: &TrustedCa| {
        cloudflare
            .iter()
            .any(|cf| cf.anchor.subject_public_key_info == ca.anchor.subject_public_key_info)
    };
    if !policy.cas.is_empty() && policy.cas.iter().all(is_cloudflare_pull_ca) {
        warnings.push(
            "only the shared Cloudflare origin-pull CA is trusted: its client certificate is the same for every \
             Cloudflare customer, so any Cloudflare zone pointed at this origin passes. Use zone-level or \
             per-hostname Authenticated Origin Pulls with your own CA (trust = [\"/path/to/your-ca.pem\"])"
                .into(),
        );
    }
    for ca in &policy.cas {
        let subject = CertSummary::of(&ca.der).subject.to_ascii_lowercase();
        if subject.contains("cloudflare") && subject.contains("origin ssl") {
            warnings.push(format!(
                "{} is trusted for client certificates, but it is the Cloudflare Origin CA, which signs origin \
                 *server* certificates; Cloudflare's client certificate is issued by the origin-pull CA \
                 (trust = [\"cloudflare\"])",
                ca.source
            ));
        }
    }
    warnings
}

//! `originguard check`: the effective policy in words (the warnings come from [`crate::audit`],
//! which `serve` logs too).

use std::fmt::Write;

use base64::Engine;

use crate::audit::CertSummary;
use crate::config::{Config, SessionResumption};
use crate::tls::{server, Policy, PolicySet};

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

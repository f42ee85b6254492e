//! What the runtime and `check` report about a configuration: certificate summaries (subject,
//! expiry, fingerprint, key algorithm) and the warnings an operator should see — logged at
//! startup, on every reload and daily by `serve`, printed by `check`.

use std::collections::HashMap;

use rustls::pki_types::{CertificateDer, ServerName};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::Config;
use crate::tls::identity::{fingerprint_colons, rfc4514};
use crate::tls::{load, PolicySet, TrustedCa};

/// A CA or server certificate expiring within this many days is warned about.
pub(crate) const EXPIRY_WARNING_DAYS: i64 = 30;

/// Subject, expiry and SHA-256 of a certificate, for reports.
pub(crate) struct CertSummary {
    pub subject: String,
    pub not_after: Option<OffsetDateTime>,
    pub sha256: String,
    /// The certificate's key algorithm (what the certificates it issues are signed with, for a
    /// CA): `RSA-4096`, `ECDSA P-256`, `ML-DSA-65`, ...
    pub key: String,
}

impl CertSummary {
    pub(crate) fn of(der: &CertificateDer<'_>) -> CertSummary {
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

    pub(crate) fn not_after_text(&self) -> String {
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

/// Settings that are legal but going stale.
pub fn config_warnings(config: &Config, now: OffsetDateTime) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.listener.embedded_cloudflare_ranges {
        let (y, m, d) = crate::peers::CLOUDFLARE_RANGES_AS_OF;
        let as_of = time::Month::try_from(m)
            .ok()
            .and_then(|m| time::Date::from_calendar_date(y, m, d).ok());
        if let Some(as_of) = as_of {
            let age = (now.date() - as_of).whole_days();
            if age > crate::peers::STALE_AFTER_DAYS {
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
    let Ok(server_name) = ServerName::try_from(crate::names::example(name)) else {
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
        let (y, m, d) = crate::peers::CLOUDFLARE_RANGES_AS_OF;
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

//! The verified client identity, derived once per connection from the leaf certificate, and
//! its header encodings.
//!
//! Formats (public API, see INTERFACE.md):
//! - `x-forwarded-client-cert` (Envoy):
//!   `Hash=<hex sha256 of leaf DER>;Subject="<RFC 4514 subject>";URI=<uri>;DNS=<dns>` — one
//!   `URI=`/`DNS=` element per SAN; `Subject` is always quoted, other values are quoted when
//!   they contain `,;="` or a space; inside quotes `\` and `"` are escaped with `\`.
//! - `client-cert` (RFC 9440): `:<base64 of leaf DER>:`.
//!
//! Subjects are rendered per RFC 4514 (most specific RDN first, `,` between RDNs, `+` within),
//! and any byte outside printable ASCII is written as a `\XX` hex pair (RFC 4514 §2.4), so the
//! header values are plain ASCII whatever a CA put in a certificate.

use std::fmt::Write;

use base64::Engine;
use http::HeaderValue;
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

/// Who the client is, as proven by the handshake.
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    /// Lowercase hex SHA-256 of the leaf DER.
    pub sha256: String,
    /// RFC 4514 subject; empty if the leaf could not be parsed beyond what webpki needed.
    pub subject: String,
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
    /// Precomputed header values, shared by every request on the connection.
    pub xfcc: HeaderValue,
    pub rfc9440: HeaderValue,
}

impl ClientIdentity {
    /// Builds the identity from a leaf that the verifier has already accepted.
    pub fn from_leaf(leaf: &CertificateDer<'_>) -> ClientIdentity {
        ClientIdentity::from_leaf_with_digest(leaf, &sha256(leaf.as_ref()))
    }

    /// [`ClientIdentity::from_leaf`] when the leaf's SHA-256 is already known.
    pub(crate) fn from_leaf_with_digest(leaf: &CertificateDer<'_>, digest: &[u8; 32]) -> ClientIdentity {
        let sha256 = hex::encode(digest);
        let (subject, uris, dns_names) = match X509Certificate::from_der(leaf.as_ref()) {
            Ok((_, cert)) => {
                let mut uris = Vec::new();
                let mut dns_names = Vec::new();
                if let Ok(Some(san)) = cert.subject_alternative_name() {
                    for name in &san.value.general_names {
                        match name {
                            GeneralName::URI(uri) => uris.push(ascii_escaped(uri.as_bytes())),
                            GeneralName::DNSName(dns) => dns_names.push(ascii_escaped(dns.as_bytes())),
                            _ => {}
                        }
                    }
                }
                (rfc4514(cert.subject()), uris, dns_names)
            }
            // webpki accepted it, x509-parser did not: forward the hash, which alone identifies
            // the certificate, rather than refuse a client the policy admits.
            Err(_) => (String::new(), Vec::new(), Vec::new()),
        };
        let xfcc = xfcc_value(&sha256, &subject, &uris, &dns_names);
        let rfc9440 = format!(":{}:", base64::engine::general_purpose::STANDARD.encode(leaf.as_ref()));
        ClientIdentity {
            xfcc: HeaderValue::try_from(xfcc).expect("xfcc value is printable ASCII by construction"),
            rfc9440: HeaderValue::try_from(rfc9440).expect("base64 is printable ASCII"),
            sha256,
            subject,
            uris,
            dns_names,
        }
    }
}

/// The `x-forwarded-client-cert` value (see the module doc for the format).
pub(crate) fn xfcc_value(sha256: &str, subject: &str, uris: &[String], dns_names: &[String]) -> String {
    let mut out = format!("Hash={sha256};Subject={}", quoted(subject));
    for uri in uris {
        let _ = write!(out, ";URI={}", maybe_quoted(uri));
    }
    for dns in dns_names {
        let _ = write!(out, ";DNS={}", maybe_quoted(dns));
    }
    out
}

fn maybe_quoted(value: &str) -> String {
    if value.is_empty() || value.contains([',', ';', '=', '"', ' ', '\\']) {
        quoted(value)
    } else {
        value.to_string()
    }
}

fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// RFC 4514 string form of a distinguished name.
pub(crate) fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let key = short_name(&oid).unwrap_or(oid.as_str()).to_string();
                    let value = match atv.as_str() {
                        Ok(s) => escape_value(s),
                        // Not a string type: RFC 4514 §2.4 '#' + hex of the BER encoding.
                        Err(_) => format!("#{}", hex::encode(atv.attr_value().data)),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 4514 §2.4 value escaping, plus hex pairs for anything outside printable ASCII.
fn escape_value(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    for (i, &b) in bytes.iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == bytes.len();
        match b {
            b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            b'#' if first => out.push_str("\\#"),
            b' ' if first || last => out.push_str("\\ "),
            0x21..=0x7e | b' ' => out.push(b as char),
            _ => {
                let _ = write!(out, "\\{b:02X}");
            }
        }
    }
    out
}

/// SAN strings are IA5 (ASCII) but nothing stops a CA from putting control bytes in them.
fn ascii_escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..=0x7e).contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\{b:02X}");
        }
    }
    out
}

/// What the refusal log says about a presented certificate.
#[derive(Debug)]
pub(crate) struct Presented {
    pub subject: String,
    pub issuer: String,
    /// Lowercase hex SHA-256 of the DER, as in `x-forwarded-client-cert`.
    pub sha256: String,
    pub not_after: String,
}

impl Presented {
    pub(crate) fn of(der: &CertificateDer<'_>) -> Presented {
        let sha256 = fingerprint(der.as_ref());
        match X509Certificate::from_der(der.as_ref()) {
            Ok((_, cert)) => Presented {
                subject: rfc4514(cert.subject()),
                issuer: rfc4514(cert.issuer()),
                sha256,
                not_after: super::utc(cert.validity().not_after.timestamp()),
            },
            Err(_) => Presented {
                subject: "(unparsable)".into(),
                issuer: String::new(),
                sha256,
                not_after: String::new(),
            },
        }
    }
}

/// A leaf's subject, for `allow_subjects`.
pub(crate) struct Subject {
    /// RFC 4514 form.
    pub rfc4514: String,
    pub common_names: Vec<String>,
}

impl Subject {
    pub(crate) fn parse(der: &CertificateDer<'_>) -> Option<Subject> {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
        let common_names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(escape_value))
            .collect();
        Some(Subject {
            rfc4514: rfc4514(cert.subject()),
            common_names,
        })
    }

    /// `CN=name` (a single CN attribute, nothing else) matches a subject whose one and only
    /// CN is `name` (other attributes such as O or C may be there); a subject with a second CN
    /// (`CN=origin,CN=attacker`) never matches the shorthand. Anything else must equal the
    /// whole RFC 4514 subject.
    pub(crate) fn matches(&self, wanted: &str) -> bool {
        if self.rfc4514 == wanted {
            return true;
        }
        match wanted.strip_prefix("CN=") {
            Some(cn) if !has_unescaped_separator(cn) => matches!(self.common_names.as_slice(), [only] if only == cn),
            _ => false,
        }
    }
}

fn has_unescaped_separator(value: &str) -> bool {
    let mut escaped = false;
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' | '+' => return true,
            _ => {}
        }
    }
    false
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The fingerprint of headers, logs and metrics: SHA-256 of the DER, lowercase hex (as
/// Envoy's XFCC `Hash`).
pub(crate) fn fingerprint(der: &[u8]) -> String {
    hex::encode(sha256(der))
}

/// The fingerprint as `check` shows it, for comparing with `openssl x509 -fingerprint -sha256`:
/// uppercase hex pairs joined by colons.
pub(crate) fn fingerprint_colons(der: &[u8]) -> String {
    let digest = sha256(der);
    let pairs: Vec<String> = digest.iter().map(|b| hex::encode_upper([*b])).collect();
    pairs.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4514_escaping() {
        assert_eq!(escape_value("a,b"), "a\\,b");
        assert_eq!(escape_value("#x"), "\\#x");
        assert_eq!(escape_value(" x "), "\\ x\\ ");
        assert_eq!(escape_value("é"), "\\C3\\A9");
        assert_eq!(escape_value("q\"\\"), "q\\\"\\\\");
        assert_eq!(escape_value("nul\0"), "nul\\00");
        assert_eq!(escape_value("\u{7f}~"), "\\7F~");
        assert_eq!(escape_value("<a;b>"), "\\<a\\;b\\>");
        // `#` and space are special only at the start (and space at the end).
        assert_eq!(escape_value("a#b"), "a#b");
        assert_eq!(escape_value("a b"), "a b");
        assert_eq!(escape_value("#"), "\\#");
        assert_eq!(escape_value(" "), "\\ ");
    }

    #[test]
    fn xfcc_quotes_where_needed() {
        let v = xfcc_value("ab", "CN=a\\,b", &["spiffe://x/y;z".into()], &["a.example".into()]);
        assert_eq!(v, "Hash=ab;Subject=\"CN=a\\\\,b\";URI=\"spiffe://x/y;z\";DNS=a.example");
    }

    #[test]
    fn rfc4514_names_every_common_attribute_and_hex_encodes_the_rest() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        let dn = &mut params.distinguished_name;
        dn.push(
            rcgen::DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
            "test",
        );
        dn.push(rcgen::DnType::CountryName, "US");
        dn.push(rcgen::DnType::StateOrProvinceName, "CA");
        dn.push(rcgen::DnType::LocalityName, "SF");
        dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 9]), "1 Main St");
        dn.push(rcgen::DnType::OrganizationName, "Acme");
        dn.push(rcgen::DnType::OrganizationalUnitName, "Ops");
        dn.push(rcgen::DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 1]), "u1");
        dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]), "42");
        dn.push(rcgen::DnType::CommonName, "client");
        let cert = params.self_signed(&key).expect("cert");
        let (_, parsed) = X509Certificate::from_der(cert.der().as_ref()).expect("parse");
        // Most specific first; serialNumber (2.5.4.5) has no short name, so its OID is used.
        assert_eq!(
            rfc4514(parsed.subject()),
            "CN=client,2.5.4.5=42,UID=u1,OU=Ops,O=Acme,STREET=1 Main St,L=SF,ST=CA,C=US,DC=test"
        );
    }

    #[test]
    fn subject_shorthand_matches_the_one_cn_and_nothing_else() {
        let subject = |rfc4514: &str, cns: &[&str]| Subject {
            rfc4514: rfc4514.into(),
            common_names: cns.iter().map(|cn| cn.to_string()).collect(),
        };
        let origin = subject("CN=origin,O=Acme", &["origin"]);
        assert!(origin.matches("CN=origin,O=Acme"), "the whole subject");
        assert!(origin.matches("CN=origin"), "the shorthand");
        assert!(!origin.matches("CN=other"));
        assert!(!origin.matches("CN=origin,O=Other"));
        assert!(!origin.matches("O=Acme"));
        assert!(!origin.matches("CN=origi"));
        // Two CNs: the shorthand names neither (`CN=origin,CN=attacker` is not "origin").
        let two = subject("CN=attacker,CN=origin", &["origin", "attacker"]);
        assert!(!two.matches("CN=origin"));
        assert!(two.matches("CN=attacker,CN=origin"));
        // An escaped separator is part of the name.
        let comma = subject("CN=a\\,b,O=x", &["a\\,b"]);
        assert!(comma.matches("CN=a\\,b"));
    }

    #[test]
    fn separators_count_only_when_not_escaped() {
        assert!(has_unescaped_separator("a,b"));
        assert!(has_unescaped_separator("a+b"));
        assert!(
            has_unescaped_separator("a\\\\,b"),
            "an escaped backslash, then a separator"
        );
        assert!(!has_unescaped_separator("a\\,b"));
        assert!(!has_unescaped_separator("a\\+b"));
        assert!(!has_unescaped_separator("ab"));
    }

    #[test]
    fn fingerprints_are_sha256_of_the_der() {
        // SHA-256 of the empty string.
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(fingerprint(b""), empty);
        let colons = fingerprint_colons(b"");
        assert_eq!(colons.replace(':', ""), empty.to_uppercase());
        assert!(colons.starts_with("E3:B0:C4:"), "{colons}");
    }

    #[test]
    fn identity_of_a_generated_leaf() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["client.example".to_string()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        params.distinguished_name.push(rcgen::DnType::CommonName, "client");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://clients.example/a".try_into().expect("uri"),
        ));
        let cert = params.self_signed(&key).expect("cert");
        let id = ClientIdentity::from_leaf(cert.der());
        assert_eq!(id.uris, vec!["spiffe://clients.example/a"]);
        assert_eq!(id.subject, "CN=client,O=Acme\\, Inc.");
        assert_eq!(id.dns_names, vec!["client.example"]);
        assert_eq!(id.sha256.len(), 64);
        let xfcc = id.xfcc.to_str().expect("ascii");
        assert!(
            xfcc.starts_with(&format!("Hash={};Subject=\"CN=client,O=Acme\\\\, Inc.\"", id.sha256)),
            "{xfcc}"
        );
        assert!(
            xfcc.ends_with(";URI=spiffe://clients.example/a;DNS=client.example"),
            "{xfcc}"
        );
        let subject = Subject::parse(cert.der()).expect("parses");
        assert_eq!(subject.rfc4514, id.subject);
        assert_eq!(subject.common_names, vec!["client"]);
        let b64 = id.rfc9440.to_str().expect("ascii");
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.trim_matches(':'))
            .expect("base64");
        assert_eq!(der, cert.der().as_ref());
    }
}

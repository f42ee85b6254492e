//! Property tests: the XFCC encoding round-trips any subject or SAN a CA can issue; the config
//! loader never panics; server-name matching (the SNI index and `names::matches`) agrees with a
//! simple reference model; the one
//! Host/:authority parser and the one header-name matcher agree with reference models.

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue};
use originguard::config::{Config, HeadersConfig, Underscores, DEFAULT_STRIP};
use originguard::proxy::authority;
use originguard::proxy::headers::{same_name, HeaderRules};
use originguard::tls::identity::ClientIdentity;
use originguard::tls::select::NameIndex;
use proptest::prelude::*;

/// Splits an XFCC element list into (key, value) pairs, unquoting quoted values.
fn parse_xfcc(value: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut v = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next()),
                    '"' => break,
                    c => v.push(c),
                }
            }
            assert!(
                matches!(chars.next(), None | Some(';')),
                "junk after a quoted value in {value:?}"
            );
        } else {
            for c in chars.by_ref() {
                if c == ';' {
                    break;
                }
                v.push(c);
            }
        }
        pairs.push((key, v));
    }
    pairs
}

/// RFC 4514: the value of the single CN attribute of a one-RDN subject, unescaped.
fn rfc4514_cn(subject: &str) -> String {
    let value = subject.strip_prefix("CN=").expect("CN first");
    let mut bytes = Vec::new();
    let mut it = value.bytes().peekable();
    while let Some(b) = it.next() {
        if b != b'\\' {
            bytes.push(b);
            continue;
        }
        let first = it.next().expect("escape has a character");
        match it.peek() {
            Some(second) if first.is_ascii_hexdigit() && second.is_ascii_hexdigit() => {
                let hi = (first as char).to_digit(16).expect("hex");
                let lo = (*second as char).to_digit(16).expect("hex");
                it.next();
                bytes.push((hi * 16 + lo) as u8);
            }
            _ => bytes.push(first),
        }
    }
    String::from_utf8(bytes).expect("utf-8")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn xfcc_round_trips_any_subject_and_san(
        cn in "[\\PC\"\\\\,;=+<># ]{1,24}",
        dns in "[a-z0-9,;=\" \\\\.-]{1,20}",
        uri in "[a-z0-9:/?&,;=\" \\\\.-]{1,30}",
    ) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn.clone());
        params.subject_alt_names = vec![
            rcgen::SanType::DnsName(dns.clone().try_into().expect("ia5")),
            rcgen::SanType::URI(uri.clone().try_into().expect("ia5")),
        ];
        let cert = params.self_signed(&key).expect("cert");
        let identity = ClientIdentity::from_leaf(cert.der());
        let header = identity.xfcc.to_str().expect("ASCII header").to_string();
        let pairs = parse_xfcc(&header);
        let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        prop_assert_eq!(get("Hash"), Some(identity.sha256.clone()));
        let subject = get("Subject").expect("subject");
        prop_assert_eq!(&subject, &identity.subject);
        prop_assert_eq!(rfc4514_cn(&subject), cn);
        prop_assert_eq!(get("DNS"), Some(dns));
        prop_assert_eq!(get("URI"), Some(uri));
    }

    #[test]
    fn the_config_loader_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        let _ = Config::from_toml(Path::new("fuzz.toml"), &text);
    }

    #[test]
    fn the_config_loader_never_panics_on_arbitrary_values(
        table in prop::sample::select(vec!["listener", "tls", "client_auth", "upstream", "headers", "log", "admin"]),
        key in prop::sample::select(vec![
            "address", "handshake_timeout", "max_connections", "max_header_bytes", "certificate", "min_version",
            "trust", "verify_depth", "crl", "allow_cert_sha256", "allow_spki_sha256", "url", "protocol",
            "client_cert", "format", "level", "allow_peers", "response_timeout", "idle_timeout",
        ]),
        value in prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            "\\PC{0,30}".prop_map(|s| format!("{s:?}")),
            prop::collection::vec("\\PC{0,12}", 0..4).prop_map(|v| format!("{v:?}")),
            Just("true".to_string()),
            Just("1.5".to_string()),
        ],
    ) {
        let text = format!(
            "[tls]\ncertificate = \"s.pem\"\nprivate_key = \"s.key\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[{table}]\n{key} = {value}\n"
        );
        let _ = Config::from_toml(Path::new("fuzz.toml"), &text);
    }

    #[test]
    fn name_matching_agrees_with_a_reference_model(
        hosts in prop::collection::vec(
            prop::collection::vec(("[*]?", "[a-c]{1,2}(\\.[a-c]{1,2}){0,2}"), 1..3), 1..5),
        queries in prop::collection::vec("[a-cA-C.]{0,9}", 1..20),
    ) {
        let hosts: Vec<Vec<String>> = hosts
            .into_iter()
            .map(|names| names.into_iter().map(|(star, name)| if star.is_empty() { name } else { format!("*.{name}") }).collect())
            .collect();
        let mut index = NameIndex::default();
        for (i, names) in hosts.iter().enumerate() {
            for name in names {
                index.insert(name, i);
            }
        }
        for query in queries {
            let q = query.strip_suffix('.').unwrap_or(&query).to_ascii_lowercase();
            let exact = hosts.iter().position(|names| names.contains(&q));
            let wildcard = || hosts.iter().position(|names| names.iter().any(|n| {
                n.strip_prefix("*.").is_some_and(|domain| {
                    q.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == domain)
                })
            }));
            let expected = exact.or_else(wildcard);
            prop_assert_eq!(index.lookup(&query), expected, "query {:?} hosts {:?}", query, hosts);
            // The one matcher (names::matches, used by allow_dns_names) follows the same model.
            for name in hosts.iter().flatten() {
                let model = match name.strip_prefix("*.") {
                    Some(domain) => q.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == domain),
                    None => *name == q,
                };
                prop_assert_eq!(originguard::names::matches(name, &query), model, "{:?} vs {:?}", name, query);
            }
        }
    }

    #[test]
    fn host_parser_agrees_with_a_reference_model(value in "[a-zA-Z0-9._@:/%\\[\\]?#-]{0,24}") {
        let parsed = authority::parse(value.as_bytes());
        prop_assert_eq!(parsed.is_some(), host_model(&value), "{:?}", value);
        if let Some(hp) = parsed {
            prop_assert!(value.starts_with(hp.host));
            prop_assert!(!hp.host.contains(['@', '/', '?', '#', '%']));
            prop_assert_eq!(hp.value, value.as_str());
        }
    }

    #[test]
    fn valid_hosts_are_accepted_as_given(
        labels in prop::collection::vec("[a-zA-Z0-9_-]{1,8}", 1..5),
        dot in any::<bool>(),
        port in prop::option::of(1u16..),
    ) {
        let host = labels.join(".");
        let value = format!("{host}{}{}", if dot { "." } else { "" }, port.map(|p| format!(":{p}")).unwrap_or_default());
        let hp = authority::parse(value.as_bytes()).expect("a valid host");
        prop_assert_eq!(hp.host, host.as_str());
        prop_assert_eq!(hp.port, port);
    }

    #[test]
    fn header_names_match_when_case_and_underscores_fold(a in "[a-zA-Z_-]{0,12}", b in "[a-zA-Z_-]{0,12}") {
        let fold = |s: &str| s.to_ascii_lowercase().replace('_', "-");
        prop_assert_eq!(same_name(a.as_bytes(), b.as_bytes()), fold(&a) == fold(&b));
    }

    #[test]
    fn no_spelling_of_a_protected_name_survives(
        picks in prop::collection::vec((0usize..13, prop::collection::vec(any::<bool>(), 40)), 1..6),
    ) {
        let protected: Vec<&str> = ["x-forwarded-client-cert", "client-cert", "client-cert-chain"]
            .into_iter()
            .chain(DEFAULT_STRIP)
            .collect();
        let rules = HeaderRules::new(&HeadersConfig {
            client_cert: originguard::config::ClientCertHeaders::Xfcc,
            x_forwarded: true,
            with_underscores: Underscores::Allow,
            strip: DEFAULT_STRIP.iter().map(|n| HeaderName::from_static(n)).collect(),
        });
        let mut headers = HeaderMap::new();
        for (which, flips) in &picks {
            // Each `-` may become `_` (names reach the proxy lowercase).
            let name: String = protected[*which]
                .chars()
                .zip(flips.iter().chain(std::iter::repeat(&false)))
                .map(|(c, &flip)| if c == '-' && flip { '_' } else { c })
                .collect();
            headers.append(HeaderName::from_bytes(name.as_bytes()).expect("name"), HeaderValue::from_static("forged"));
        }
        headers.append("accept", HeaderValue::from_static("*/*"));
        rules.sanitize(&mut headers).expect("allow never rejects");
        prop_assert_eq!(headers.len(), 1, "{:?}", headers);
    }
}

/// Reference model of `authority::parse`, written from RFC 3986 §3.2.2 plus our restrictions.
fn host_model(value: &str) -> bool {
    let port_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| n <= 65535)
    };
    if let Some(rest) = value.strip_prefix('[') {
        let Some(close) = rest.find(']') else { return false };
        let (literal, after) = (&rest[..close], &rest[close + 1..]);
        return literal.parse::<std::net::Ipv6Addr>().is_ok()
            && (after.is_empty() || after.strip_prefix(':').is_some_and(port_ok));
    }
    let (host, port) = match value.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (value, None),
    };
    if port.is_some_and(|p| !port_ok(p)) {
        return false;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

//! Property tests: the XFCC encoding round-trips any subject or SAN a CA can issue; the config
//! loader never panics; server-name matching agrees with a simple reference model.

use std::path::Path;

use originguard::config::Config;
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
        }
    }
}

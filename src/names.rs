//! Host-name patterns: the one definition of what `server_names`, `allow_dns_names` and the
//! `check` coverage warning accept and match.
//!
//! A pattern is a DNS name or `*.domain`, stored lowercase without a trailing dot. `*.domain`
//! matches exactly one more non-empty label (`a.domain`, not `domain` nor `a.b.domain`), as in
//! RFC 6125 §6.4.3 and every TLS stack. Matching ignores ASCII case and one trailing dot of the
//! name; a name that itself contains `*` (a wildcard SAN in a client certificate) never matches:
//! patterns are ours to write, not the CA's. `tls::select::NameIndex` is the hashed form of the
//! same rule for SNI lookups, property-tested against [`matches()`].

/// Validates a pattern from the config; returns its canonical form (lowercase, no trailing dot).
pub(crate) fn parse(text: &str) -> Result<String, String> {
    let lower = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(format!(
            "invalid host name {text:?} (expected e.g. \"api.example.com\" or \"*.example.com\")"
        ));
    }
    Ok(lower)
}

/// Whether `name` matches the canonical `pattern` (see the module docs).
pub fn matches(pattern: &str, name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.contains('*') {
        return false;
    }
    match wildcard_domain(pattern) {
        Some(domain) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(domain)),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// `Some(domain)` for a `*.domain` pattern.
pub(crate) fn wildcard_domain(pattern: &str) -> Option<&str> {
    pattern.strip_prefix("*.")
}

/// A concrete name the pattern matches (for asking a certificate whether it covers it).
pub(crate) fn example(pattern: &str) -> String {
    match wildcard_domain(pattern) {
        Some(domain) => format!("originguard-probe.{domain}"),
        None => pattern.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_exactly_one_label() {
        assert!(matches("*.example.com", "a.example.com"));
        assert!(matches("*.example.com", "A.Example.COM."));
        assert!(!matches("*.example.com", "example.com"));
        assert!(!matches("*.example.com", "a.b.example.com"));
        assert!(!matches("*.example.com", ".example.com"));
        assert!(!matches("*.example.com", "*.example.com"));
        assert!(matches("api.example.com", "API.example.com"));
        assert_eq!(parse("API.Example.com.").as_deref(), Ok("api.example.com"));
        assert_eq!(
            parse("a-b.under_score.example").as_deref(),
            Ok("a-b.under_score.example")
        );
        assert_eq!(example("*.example.com"), "originguard-probe.example.com");
        assert_eq!(example("api.example.com"), "api.example.com");
        assert!(matches("*.example.com", &example("*.example.com")));
        for bad in ["", "*.", "a..b", "*", "a b", "a.*.b"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

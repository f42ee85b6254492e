//! The request's host: one parser for `Host` and `:authority`, used to refuse malformed or
//! ambiguous hosts (400), for the 421 guard and for `x-forwarded-host`.
//!
//! A backend's URL parser reads `user@api.example.com`, `api.example.com:443:443`,
//! `api.example.com/foo` or `api.example.com..` in ways of its own — several of them as
//! `api.example.com` — so the proxy accepts only what every reader agrees on:
//!
//! - exactly `uri-host [":" port]` (RFC 9112 §3.2, RFC 3986 §3.2.2): no userinfo, path, query
//!   or second port; the port is 1–5 digits up to 65535;
//! - a reg-name limited to letters, digits, `-`, `_` and `.` (stricter than RFC 3986, which also
//!   allows sub-delims and percent-encoding that no DNS name needs and parsers decode
//!   differently), no empty label, at most 253 characters; one trailing dot is allowed and
//!   removed for matching;
//! - or an IPv6 literal in brackets that parses as an address.
//!
//! Per request (see [`of_request`]): HTTP/1.x needs exactly one `Host` line, and an
//! absolute-form target must name the same authority; HTTP/2 needs `:authority` or `host`, and
//! both, when present, must be equal (RFC 9113 §8.3.1).

use std::net::Ipv6Addr;

use http::{header, Request, Version};

/// A validated `host[:port]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPort<'a> {
    /// The whole value as received (`Api.Example.com.:8443`).
    pub value: &'a str,
    /// The host without port and without one trailing dot, case as received.
    pub host: &'a str,
    pub port: Option<u16>,
}

/// Why a request's host was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostError {
    #[error("missing Host")]
    Missing,
    #[error("more than one Host")]
    Duplicate,
    #[error("malformed Host")]
    Malformed,
    #[error("Host and the request target's authority differ")]
    Mismatch,
}

/// Parses one `host[:port]` value; `None` unless it is exactly that.
pub fn parse(value: &[u8]) -> Option<HostPort<'_>> {
    let value = std::str::from_utf8(value).ok()?;
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (literal, after) = rest.split_once(']')?;
        literal.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            _ => Some(port(after.strip_prefix(':')?)?),
        };
        (&value[..literal.len() + 2], port)
    } else {
        let (host, port) = match value.split_once(':') {
            Some((host, port)) => (host, Some(self::port(port)?)),
            None => (value, None),
        };
        (reg_name(host)?, port)
    };
    Some(HostPort { value, host, port })
}

/// The host a request is for, validated (see the module doc).
pub(crate) fn of_request<B>(request: &Request<B>) -> Result<HostPort<'_>, HostError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Duplicate);
    }
    let authority = request.uri().authority().map(|a| a.as_str());
    let value = match (host, authority) {
        (None, None) => return Err(HostError::Missing),
        // HTTP/1.x always needs Host (RFC 9112 §3.2), even with an absolute-form target.
        (None, Some(_)) if request.version() != Version::HTTP_2 => return Err(HostError::Missing),
        (None, Some(authority)) => authority.as_bytes(),
        (Some(host), Some(authority)) => {
            if !host.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) {
                return Err(HostError::Mismatch);
            }
            host.as_bytes()
        }
        (Some(host), None) => host.as_bytes(),
    };
    parse(value).ok_or(HostError::Malformed)
}

fn port(digits: &str) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A DNS-style name (or IPv4 address): returns it without one trailing dot.
fn reg_name(name: &str) -> Option<&str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_hosts_and_normalises_one_trailing_dot() {
        let hp = parse(b"Api.Example.com.:8443").expect("valid");
        assert_eq!((hp.host, hp.port), ("Api.Example.com", Some(8443)));
        assert_eq!(parse(b"127.0.0.1").expect("v4").host, "127.0.0.1");
        let v6 = parse(b"[::1]:443").expect("v6");
        assert_eq!((v6.host, v6.port), ("[::1]", Some(443)));
        assert_eq!(parse(b"localhost").expect("name").port, None);
    }

    #[test]
    fn refuses_what_parsers_disagree_on() {
        for bad in [
            "",
            "user@api.example.com",
            "api.example.com:443:443",
            "api.example.com:abc",
            "api.example.com:",
            "api.example.com:65536",
            "api.example.com/foo",
            "api.example.com..",
            ".api.example.com",
            "api..example.com",
            "api.example.com?x",
            "api.example.com#x",
            "api%2eexample.com",
            "api example.com",
            "[::1",
            "[::1]x",
            "[zz::1]",
            "[::1]:",
            "api.example.com\\@evil",
            "é.example.com",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?} accepted");
        }
    }

    fn request(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::get(uri).version(version);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn per_request_rules() {
        let h1 = Version::HTTP_11;
        let h2 = Version::HTTP_2;
        assert_eq!(of_request(&request(h1, "/", &["a.test"])).map(|h| h.host), Ok("a.test"));
        assert_eq!(of_request(&request(h1, "/", &[])), Err(HostError::Missing));
        assert_eq!(
            of_request(&request(h1, "/", &["a.test", "a.test"])),
            Err(HostError::Duplicate)
        );
        assert_eq!(
            of_request(&request(h1, "http://b.test/", &["a.test"])),
            Err(HostError::Mismatch)
        );
        assert_eq!(of_request(&request(h1, "http://b.test/", &[])), Err(HostError::Missing));
        assert!(of_request(&request(h1, "http://A.test/", &["a.test"])).is_ok());
        assert_eq!(
            of_request(&request(h2, "https://a.test/", &[])).map(|h| h.host),
            Ok("a.test")
        );
        assert_eq!(
            of_request(&request(h2, "https://a.test/", &["b.test"])),
            Err(HostError::Mismatch)
        );
        assert_eq!(of_request(&request(h2, "/", &[])), Err(HostError::Missing));
        assert_eq!(
            of_request(&request(h2, "https://user@a.test/", &[])),
            Err(HostError::Malformed)
        );
    }
}

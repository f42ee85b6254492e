//! Request header hygiene: the one place that knows every header name the proxy sets or
//! protects, and how a client might spell it.
//!
//! Many app servers (CGI/WSGI environments, Rack, some Python and Ruby servers) read `_` and
//! `-` in header names as the same character, and merge `X_Forwarded_Client_Cert` with the real
//! `x-forwarded-client-cert` — forged element first. So names are compared with [`same_name`]:
//! ASCII case-insensitive, `_` read as `-`. Rules, for headers and trailers alike:
//!
//! - **removed in every spelling**: the identity headers (`x-forwarded-client-cert`,
//!   `client-cert`, `client-cert-chain`) and every name in `headers.strip`;
//! - **other spellings removed**: the names the proxy sets (`x-forwarded-for`,
//!   `x-forwarded-proto`, `x-forwarded-host`) and the names that frame or route a message
//!   (`host`, `content-length`, `transfer-encoding`, `connection` and the other hop-by-hop
//!   names): their exact spelling is handled by the forwarding rules, a look-alike is only ever
//!   an attempt to be read as one;
//! - **every other name with `_`**: `headers.with_underscores` — `allow` (forward), `drop`, or
//!   `reject` (400). In trailers `reject` drops, since the response has begun;
//! - a `Trailer` header loses the tokens that name any of the above.
//!
//! The forwarding rules proper live here too, as pure functions: hop-by-hop removal (RFC 9110
//! §7.6.1), `x-forwarded-for` / `forwarded` (RFC 7239) appending, and the request-smuggling
//! framing guard (RFC 9112 §6.3).
//!
//! HTTP header names reach us lowercase (hyper and the `http` crate normalise them), so only a
//! name containing `_` can be another spelling of a protected one.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{HeadersConfig, Underscores};

pub(crate) static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub(crate) static CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
pub(crate) static CLIENT_CERT_CHAIN: HeaderName = HeaderName::from_static("client-cert-chain");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub(crate) static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Names the proxy sets or that frame a message: only their exact spelling may pass (and is
/// then handled by the forwarding rules).
const LOOK_ALIKES: [&str; 13] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "forwarded",
];

/// Whether two header names are the same once case is ignored and `_` is read as `-`.
pub fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| fold(x) == fold(y))
}

fn fold(b: u8) -> u8 {
    match b {
        b'_' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

/// A request header named with `_` under `with_underscores = "reject"`.
#[derive(Debug, thiserror::Error)]
#[error("header name with an underscore: {0}")]
pub struct UnderscoreRejected(pub HeaderName);

/// The header rules of one configuration generation.
#[derive(Clone, Debug)]
pub struct HeaderRules {
    /// Removed in every spelling.
    removed: Vec<HeaderName>,
    underscores: Underscores,
}

impl HeaderRules {
    pub fn new(config: &HeadersConfig) -> HeaderRules {
        let mut removed = vec![XFCC.clone(), CLIENT_CERT.clone(), CLIENT_CERT_CHAIN.clone()];
        for name in &config.strip {
            if !removed.contains(name) {
                removed.push(name.clone());
            }
        }
        HeaderRules {
            removed,
            underscores: config.with_underscores,
        }
    }

    /// Applies the rules to a request's headers: one pass over the names present (no hashing
    /// unless something is removed).
    pub fn sanitize(&self, headers: &mut HeaderMap) -> Result<(), UnderscoreRejected> {
        let mut doomed: Vec<HeaderName> = Vec::new();
        for name in headers.keys() {
            let bytes = name.as_str().as_bytes();
            if !bytes.contains(&b'_') {
                if self.removed.contains(name) {
                    doomed.push(name.clone());
                }
                continue;
            }
            // Only a name with `_` can be another spelling of a protected one.
            if self.is_protected(bytes) {
                doomed.push(name.clone());
                continue;
            }
            match self.underscores {
                Underscores::Allow => {}
                Underscores::Drop => doomed.push(name.clone()),
                Underscores::Reject => return Err(UnderscoreRejected(name.clone())),
            }
        }
        for name in doomed {
            headers.remove(name);
        }
        self.clean_trailer_header(headers);
        Ok(())
    }

    /// Applies the rules to request trailers: everything protected goes, exact spellings of
    /// the names the proxy sets included (those are set in the head, never in trailers).
    pub(crate) fn sanitize_trailers(&self, trailers: &mut HeaderMap) {
        let doomed: Vec<HeaderName> = trailers
            .keys()
            .filter(|name| self.unfit_for_trailers(name.as_str().as_bytes()))
            .cloned()
            .collect();
        for name in doomed {
            trailers.remove(name);
        }
    }

    /// What never passes as a trailer: protected names, any spelling of a name the proxy sets
    /// or that frames a message, and underscore names unless they are allowed.
    fn unfit_for_trailers(&self, name: &[u8]) -> bool {
        self.is_protected(name)
            || LOOK_ALIKES.iter().any(|l| same_name(l.as_bytes(), name))
            || (name.contains(&b'_') && self.underscores != Underscores::Allow)
    }

    /// Whether `name` is a protected name in any spelling, or a look-alike of a name the
    /// proxy sets (a spelling other than the exact one).
    fn is_protected(&self, name: &[u8]) -> bool {
        self.removed.iter().any(|p| same_name(p.as_str().as_bytes(), name))
            || (name.contains(&b'_') && LOOK_ALIKES.iter().any(|l| same_name(l.as_bytes(), name)))
    }

    /// `Trailer: x-forwarded-client-cert` announces a trailer we will drop: keep the header
    /// truthful (and give no backend a reason to look for the name).
    fn clean_trailer_header(&self, headers: &mut HeaderMap) {
        if !headers.contains_key(header::TRAILER) {
            return;
        }
        let kept: Vec<&str> = headers
            .get_all(header::TRAILER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !self.unfit_for_trailers(t.as_bytes()))
            .collect();
        let value = (!kept.is_empty())
            .then(|| HeaderValue::from_str(&kept.join(", ")).ok())
            .flatten();
        headers.remove(header::TRAILER);
        if let Some(value) = value {
            headers.insert(header::TRAILER, value);
        }
    }
}

/// Request smuggling guard (RFC 9112 §6.3): hyper decodes `Transfer-Encoding: chunked` and
/// ignores a Content-Length next to it, but a backend might not; and a coding other than chunked
/// cannot be forwarded faithfully once the proxy has decoded the chunks. Such requests are
/// refused rather than rewritten.
///
/// hyper drops a Content-Length that comes with Transfer-Encoding before the request reaches
/// us, so `saw_content_length` reports what the connection's reader saw in the raw head.
pub(crate) fn ambiguous_framing(headers: &HeaderMap, saw_content_length: bool) -> bool {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    match codings.next() {
        None => false,
        Some(first) => {
            codings.next().is_some()
                || !first.as_bytes().eq_ignore_ascii_case(b"chunked")
                || headers.contains_key(header::CONTENT_LENGTH)
                || saw_content_length
        }
    }
}

/// Removes RFC 9110 §7.6.1 connection-specific fields (plus Proxy-Authenticate/-Authorization)
/// and those `Connection` names. `te: trailers` survives (gRPC needs it end to end), other TE
/// values do not; `Trailer` is end-to-end in RFC 9110 and is kept so trailers pass through.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    const HOP_BY_HOP: [&HeaderName; 8] = [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
    ];
    // Most messages carry none of them: one pass over the names present, no hashing.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(&name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// `x-forwarded-for`: the incoming values (all of them, in order) + `, ` + the peer IP.
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, peer: &HeaderValue) {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR.clone(), peer.clone());
        return;
    }
    let mut value = Vec::new();
    for existing in headers.get_all(&X_FORWARDED_FOR) {
        value.extend_from_slice(existing.as_bytes());
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(peer.as_bytes());
    // Joined valid values stay valid; should that ever fail, the peer alone is still true.
    let value = HeaderValue::from_bytes(&value).unwrap_or_else(|_| peer.clone());
    headers.insert(X_FORWARDED_FOR.clone(), value);
}

/// `forwarded` (RFC 7239), when the client sent one: our element is appended, as for
/// `x-forwarded-for`, so the last element is always the one the proxy vouches for.
pub(crate) fn append_forwarded(headers: &mut HeaderMap, peer: IpAddr, host: &HeaderValue) {
    let mut value = Vec::new();
    for existing in headers.get_all(header::FORWARDED) {
        value.extend_from_slice(existing.as_bytes());
        value.extend_from_slice(b", ");
    }
    let element = match peer {
        IpAddr::V4(v4) => format!("for={v4};proto=https;host=\""),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto=https;host=\""),
    };
    value.extend_from_slice(element.as_bytes());
    // A validated host has no quote or backslash to escape.
    value.extend_from_slice(host.as_bytes());
    value.push(b'"');
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        headers.insert(header::FORWARDED, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_STRIP;

    fn rules(underscores: Underscores) -> HeaderRules {
        HeaderRules::new(&HeadersConfig {
            client_cert: crate::config::ClientCertHeaders::Xfcc,
            x_forwarded: true,
            with_underscores: underscores,
            strip: DEFAULT_STRIP.iter().map(|s| HeaderName::from_static(s)).collect(),
        })
    }

    fn headers(names: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for name in names {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_static("v"),
            );
        }
        h
    }

    #[test]
    fn protected_names_go_in_every_spelling() {
        let mut h = headers(&[
            "x-forwarded-client-cert",
            "x_forwarded_client_cert",
            "x-forwarded_client-cert",
            "client_cert",
            "client-cert-chain",
            "x_ssl_client_cert",
            "ssl-client-verify",
            "x_forwarded_for",
            "x_forwarded_host",
            "content_length",
            "transfer_encoding",
            "x-forwarded-for",
            "x_app_id",
            "accept",
        ]);
        rules(Underscores::Allow).sanitize(&mut h).expect("allowed");
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-forwarded-for", "x_app_id"]);
    }

    #[test]
    fn other_underscore_names_follow_the_setting() {
        let mut h = headers(&["x_app_id", "accept"]);
        rules(Underscores::Drop).sanitize(&mut h).expect("drop");
        assert!(!h.contains_key("x_app_id") && h.contains_key("accept"));
        let mut h = headers(&["x_app_id"]);
        assert!(rules(Underscores::Reject).sanitize(&mut h).is_err());
        // A protected spelling is removed, never a reason to reject.
        let mut h = headers(&["x_forwarded_client_cert"]);
        rules(Underscores::Reject)
            .sanitize(&mut h)
            .expect("removed, not rejected");
        assert!(h.is_empty());
    }

    #[test]
    fn trailers_and_the_trailer_header() {
        let mut h = HeaderMap::new();
        h.insert(
            header::TRAILER,
            HeaderValue::from_static("X_Forwarded_Client_Cert, grpc-status, x-forwarded-for"),
        );
        rules(Underscores::Allow).sanitize(&mut h).expect("ok");
        assert_eq!(h[header::TRAILER], "grpc-status");
        let mut t = headers(&["client_cert", "x-forwarded-for", "grpc-status", "x-ssl-client-s-dn"]);
        rules(Underscores::Allow).sanitize_trailers(&mut t);
        assert_eq!(t.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["grpc-status"]);
    }

    #[test]
    fn same_name_folds_case_and_underscore() {
        assert!(same_name(b"X_Forwarded-CLIENT_cert", b"x-forwarded-client-cert"));
        assert!(!same_name(b"x-forwarded-client-certs", b"x-forwarded-client-cert"));
        assert!(!same_name(b"x.forwarded.client.cert", b"x-forwarded-client-cert"));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(header::HOST, HeaderValue::from_static("a"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::HOST], "a");
        assert_eq!(h[header::TE], "trailers");
    }

    #[test]
    fn forwarded_for_appends_the_peer_to_every_incoming_value() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2, 3.3.3.3"));
        append_forwarded_for(&mut h, &HeaderValue::from_static("::1"));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 3.3.3.3, ::1");
    }
}

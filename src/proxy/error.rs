//! The one rescue point: every request the proxy answers itself ends here. A [`ProxyError`]
//! knows its status, its body, whether the connection closes after it, how loudly it is logged
//! and which metric it counts in; [`respond`] does all of that in one place (as linkerd's
//! `errors/respond`).
//!
//! Statuses (INTERFACE.md, plus 501 for CONNECT other than an HTTP/2 WebSocket and 500 for an
//! internal failure): 400 a missing, duplicate or malformed host (see `authority`), a header
//! name with `_` under `headers.with_underscores = "reject"`, a request whose framing a backend
//! could read differently (RFC 9112 §6.3), or a client body that failed; 421 the request's host
//! selects another `[[hosts]]` policy than the connection's SNI did; 502 upstream refused,
//! reset, unreachable or its TLS failed; 504 no response head within
//! `upstream.response_timeout`. 400 (malformed request) and 431 (head larger than
//! `listener.max_header_bytes`) are produced by hyper's parser before a request exists.
//! Bodies are short plain text; causes go to the log, never to the client.
//!
//! `originguard_upstream_errors_total{kind}` counts the upstream's failures only — `connect`,
//! `tls`, `reset`, `timeout` — every one of which this module emits; the client's own mistakes
//! show in `originguard_requests_total{code}`.

use std::net::IpAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tracing::{debug, error, warn};

use super::ProxyBody;
use crate::metrics::Metrics;

/// Why the proxy answered a request itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("upstream request failed")]
    Upstream(#[source] super::upstream::UpstreamError),
    #[error("upstream sent no response head in time")]
    UpstreamTimeout,
    #[error("request host belongs to another policy than the connection")]
    Misdirected,
    #[error("ambiguous request framing (Transfer-Encoding other than chunked, or with Content-Length)")]
    BadFraming,
    #[error("bad host")]
    BadHost(#[source] super::authority::HostError),
    #[error("header not allowed")]
    BadHeader(#[source] super::headers::UnderscoreRejected),
    #[error("the client's request body failed")]
    ClientBody(#[source] super::upstream::UpstreamError),
    #[error("CONNECT (other than an HTTP/2 WebSocket to an HTTP/1.1 upstream) is not supported")]
    UnsupportedProtocol,
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ProxyError {
    /// Classifies a failed upstream exchange: the client's own body failing (malformed chunks,
    /// an aborted upload) is the client's fault, not the upstream's.
    pub(crate) fn from_upstream(error: super::upstream::UpstreamError) -> ProxyError {
        let mut source = std::error::Error::source(&error);
        while let Some(e) = source {
            if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_user) {
                return ProxyError::ClientBody(error);
            }
            source = e.source();
        }
        ProxyError::Upstream(error)
    }
}

/// What the log line of a rescued request names.
pub(crate) struct Rescued<'a> {
    pub peer: IpAddr,
    pub sni: &'a str,
    pub host: &'a str,
    pub method: &'a http::Method,
    pub path: &'a str,
}

impl ProxyError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::BadFraming | ProxyError::BadHost(_) | ProxyError::BadHeader(_) | ProxyError::ClientBody(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::UnsupportedProtocol => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn body(&self) -> &'static str {
        match self {
            ProxyError::Upstream(_) => "502 bad gateway: upstream unavailable\n",
            ProxyError::UpstreamTimeout => "504 gateway timeout: upstream did not respond in time\n",
            ProxyError::Misdirected => "421 misdirected request: this connection is not authorized for that host\n",
            ProxyError::BadFraming => "400 bad request: ambiguous message framing\n",
            ProxyError::BadHost(_) => "400 bad request: missing, duplicate or malformed host\n",
            ProxyError::BadHeader(_) => "400 bad request: header names with underscores are not accepted\n",
            ProxyError::ClientBody(_) => "400 bad request: malformed or incomplete request body\n",
            ProxyError::UnsupportedProtocol => "501 not implemented: CONNECT is not supported here\n",
            ProxyError::Internal(_) => "500 internal server error\n",
        }
    }

    /// Whether the connection closes after this answer: after a 400, what follows on the
    /// connection was framed or sent by a client whose request we refused to read.
    pub(crate) fn closes_connection(&self) -> bool {
        self.status() == StatusCode::BAD_REQUEST
    }

    /// The `kind` label of `originguard_upstream_errors_total`, for the upstream's failures.
    pub(crate) fn upstream_kind(&self) -> Option<&'static str> {
        match self {
            ProxyError::Upstream(e) if e.is_tls() => Some("tls"),
            ProxyError::Upstream(e) if e.is_connect() => Some("connect"),
            ProxyError::Upstream(_) => Some("reset"),
            ProxyError::UpstreamTimeout => Some("timeout"),
            _ => None,
        }
    }
}

/// Logs, counts and answers a request the proxy answers itself: upstream failures at `warn`
/// (the operator's concern), the client's mistakes at `debug` (an attacker must not be able to
/// flood the log), internal failures at `error`.
pub(crate) fn respond(error: &ProxyError, request: &Rescued<'_>, metrics: &Metrics) -> Response<ProxyBody> {
    let Rescued {
        peer,
        sni,
        host,
        method,
        path,
    } = request;
    let cause = error_chain(error);
    match (error, error.upstream_kind()) {
        (_, Some(kind)) => {
            metrics.upstream_error(kind);
            warn!(%peer, %method, path, error = %cause, "upstream error");
        }
        (ProxyError::Internal(_), None) => error!(%peer, %method, path, error = %cause, "internal error"),
        (ProxyError::Misdirected, None) => {
            debug!(%peer, sni, host, "request host belongs to another policy than the connection's SNI: 421")
        }
        (_, None) => debug!(%peer, path, error = %cause, "bad request"),
    }
    let mut response = Response::new(
        Full::new(Bytes::from_static(error.body().as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = error.status();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if error.closes_connection() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// An error and its causes, for the log.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_one_status_and_only_upstream_failures_have_a_kind() {
        let cases = [
            (ProxyError::UpstreamTimeout, 504, Some("timeout"), false),
            (ProxyError::Misdirected, 421, None, false),
            (ProxyError::BadFraming, 400, None, true),
            (ProxyError::UnsupportedProtocol, 501, None, false),
            (ProxyError::Internal("rng"), 500, None, false),
        ];
        for (error, status, kind, closes) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert_eq!(error.upstream_kind(), kind, "{error}");
            assert_eq!(error.closes_connection(), closes, "{error}");
            let metrics = crate::metrics::Metrics::new();
            let rescued = Rescued {
                peer: IpAddr::from([127, 0, 0, 1]),
                sni: "",
                host: "",
                method: &http::Method::GET,
                path: "/",
            };
            let response = respond(&error, &rescued, &metrics);
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers().contains_key(header::CONNECTION), closes);
        }
    }
}

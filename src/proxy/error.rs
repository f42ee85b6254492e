//! The one place that turns a failure into the response the proxy makes itself.
//!
//! Statuses (INTERFACE.md, plus 501 for CONNECT other than an HTTP/2 WebSocket): 400 a missing,
//! duplicate or malformed host (see `authority`), a header name with `_` under
//! `headers.with_underscores = "reject"`, or a request whose framing a backend could read differently
//! (Transfer-Encoding other than `chunked`, or together with Content-Length: RFC 9112 §6.3);
//! 421 the request's host selects another `[[hosts]]` policy than the
//! connection's SNI did; 502 upstream refused/reset/unreachable, 504 no response head within
//! `upstream.response_timeout`. 400 (malformed request) and 431 (head larger than
//! `listener.max_header_bytes`) are produced by hyper's parser before a request exists.
//! Bodies are short plain text; causes go to the log, never to the client.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::forward::ProxyBody;

/// Why the proxy answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream request failed")]
    Upstream(#[source] hyper_util::client::legacy::Error),
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
    ClientBody(#[source] hyper_util::client::legacy::Error),
    #[error("CONNECT (other than an HTTP/2 WebSocket to an HTTP/1.1 upstream) is not supported")]
    UnsupportedProtocol,
}

impl ProxyError {
    /// Classifies a failed upstream exchange: the client's own body failing (malformed chunks,
    /// an aborted upload) is the client's fault, not the upstream's.
    pub fn from_upstream(error: hyper_util::client::legacy::Error) -> ProxyError {
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

impl ProxyError {
    /// The `kind` label of `originguard_upstream_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Upstream(e) if is_tls(e) => "tls",
            ProxyError::Upstream(e) if e.is_connect() => "connect",
            ProxyError::Upstream(_) => "reset",
            ProxyError::UpstreamTimeout => "timeout",
            ProxyError::Misdirected => "misdirected",
            ProxyError::BadFraming | ProxyError::BadHost(_) | ProxyError::BadHeader(_) | ProxyError::ClientBody(_) => {
                "bad_request"
            }
            ProxyError::UnsupportedProtocol => "unsupported",
        }
    }
}

/// Whether TLS with an `https://` upstream failed (its certificate refused, say).
fn is_tls(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if e.is::<super::upstream::UpstreamTlsError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Maps an error to its response.
pub fn rescue(error: &ProxyError) -> Response<ProxyBody> {
    match error {
        ProxyError::Upstream(_) => text(StatusCode::BAD_GATEWAY, "502 bad gateway: upstream unavailable\n"),
        ProxyError::BadFraming => {
            // Whatever follows on this connection was framed by a reading we refused: close it.
            let mut response = text(StatusCode::BAD_REQUEST, "400 bad request: ambiguous message framing\n");
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        ProxyError::BadHost(_) => closing(text(
            StatusCode::BAD_REQUEST,
            "400 bad request: missing, duplicate or malformed host\n",
        )),
        ProxyError::BadHeader(_) => closing(text(
            StatusCode::BAD_REQUEST,
            "400 bad request: header names with underscores are not accepted\n",
        )),
        ProxyError::ClientBody(_) => {
            let mut response = text(
                StatusCode::BAD_REQUEST,
                "400 bad request: malformed or incomplete request body\n",
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        ProxyError::UnsupportedProtocol => text(
            StatusCode::NOT_IMPLEMENTED,
            "501 not implemented: CONNECT is not supported here\n",
        ),
        ProxyError::Misdirected => text(
            StatusCode::MISDIRECTED_REQUEST,
            "421 misdirected request: this connection is not authorized for that host\n",
        ),
        ProxyError::UpstreamTimeout => text(
            StatusCode::GATEWAY_TIMEOUT,
            "504 gateway timeout: upstream did not respond in time\n",
        ),
    }
}

/// A 400 closes the connection: what follows on it was sent by a client we just refused to read.
fn closing(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

//! A small client for Cloudflare's v4 API: bearer token, JSON envelope, bounded retries on 429
//! and 5xx, and a dry-run mode that prints requests instead of sending them.
//!
//! HTTPS goes through rustls with Mozilla's roots (webpki-roots) — the same TLS stack and
//! provider as the proxy; plain `http://` bases are allowed for tests and local proxies.
//! The token is sent only in the `Authorization` header and never printed or logged.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;

/// Cloudflare's API base.
pub const DEFAULT_BASE: &str = "https://api.cloudflare.com/client/v4";
/// Attempts for a request answered 429 or 5xx (or not answered at all).
const ATTEMPTS: u32 = 4;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An API client for one token.
pub struct Api {
    base: String,
    token: String,
    tls: Arc<rustls::ClientConfig>,
    dry_run: bool,
    /// Base delay between retries (doubled each time, capped by Retry-After ≤ 10 s).
    backoff: Duration,
}

/// A Cloudflare API failure, with the envelope's errors.
#[derive(Debug, thiserror::Error)]
#[error("{method} {path}: HTTP {status}: {}{hint}", format_errors(errors))]
pub struct ApiError {
    pub method: Method,
    pub path: String,
    pub status: u16,
    pub errors: Vec<(i64, String)>,
    hint: String,
}

fn format_errors(errors: &[(i64, String)]) -> String {
    if errors.is_empty() {
        return "no error details".into();
    }
    errors
        .iter()
        .map(|(code, message)| format!("cloudflare error {code}: {message}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Api {
    /// `token` comes from `CLOUDFLARE_API_TOKEN` (never from a flag, so it stays out of shell
    /// history and process lists).
    pub fn new(base: &str, token: Option<String>, dry_run: bool) -> anyhow::Result<Api> {
        let token = match (token, dry_run) {
            (Some(token), _) if !token.trim().is_empty() => token.trim().to_string(),
            (_, true) => String::new(),
            _ => bail!("set CLOUDFLARE_API_TOKEN to an API token with Zone → SSL and Certificates → Edit"),
        };
        let base = base.trim_end_matches('/').to_string();
        let uri: Uri = base.parse().with_context(|| format!("--api-base {base}: not a URL"))?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
            bail!("--api-base {base}: expected https://HOST[/path]");
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::server::provider())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Api {
            base,
            token,
            tls: Arc::new(tls),
            dry_run,
            backoff: Duration::from_millis(500),
        })
    }

    /// A client for the endpoints that need no token (`/ips`).
    pub fn anonymous(base: &str) -> anyhow::Result<Api> {
        let mut api = Api::new(base, None, true)?;
        api.dry_run = false;
        Ok(api)
    }

    /// Shortens the retry backoff (tests).
    pub fn with_backoff(mut self, backoff: Duration) -> Api {
        self.backoff = backoff;
        self
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Sends a request and returns the envelope's `result`. In dry-run mode, prints the request
    /// (private keys redacted) and returns `Value::Null` for writes; reads are still sent when a
    /// token is available, so a dry run can show what would change.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        if self.dry_run && (method != Method::GET || self.token.is_empty()) {
            let shown = body.as_ref().map(redacted).map(|b| format!(" {b}")).unwrap_or_default();
            println!("dry-run: {method} {}{path}{shown}", self.base);
            return Ok(Value::Null);
        }
        // Only idempotent requests are retried after a failure that may have reached the API:
        // a POST (an upload) that failed in transit, or got a 5xx, may have been applied.
        // A 429 means it was not, whatever the method.
        let idempotent = method != Method::POST;
        let mut delay = self.backoff;
        let mut last = None;
        for attempt in 1..=ATTEMPTS {
            match self.send(&method, path, body.as_ref()).await {
                Ok((status, retry_after, bytes)) => {
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS || (idempotent && status.is_server_error());
                    if retryable && attempt < ATTEMPTS {
                        // Retry-After (seconds) when the API says how long; else exponential backoff.
                        let wait = retry_after.map_or(delay, |s| Duration::from_secs(s.min(MAX_RETRY_AFTER)));
                        tracing::debug!(%status, attempt, ?wait, "cloudflare API busy; retrying");
                        tokio::time::sleep(wait).await;
                        delay *= 2;
                        continue;
                    }
                    return self.envelope(&method, path, status, &bytes);
                }
                Err(error) if !idempotent => {
                    return Err(error.context(format!(
                        "{method} {path} failed in transit and may or may not have been applied; \
                         not retried (check with `originguard cloudflare status`)"
                    )));
                }
                Err(error) => {
                    tracing::debug!(%error, attempt, "cloudflare API unreachable; retrying");
                    last = Some(error);
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("{method} {path}: no answer")))
    }

    fn envelope(&self, method: &Method, path: &str, status: StatusCode, bytes: &[u8]) -> anyhow::Result<Value> {
        let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        let success = body.get("success").and_then(Value::as_bool).unwrap_or(false);
        if status.is_success() && success {
            return Ok(body.get("result").cloned().unwrap_or(Value::Null));
        }
        let errors: Vec<(i64, String)> = body
            .get("errors")
            .and_then(Value::as_array)
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        (
                            e.get("code").and_then(Value::as_i64).unwrap_or(0),
                            e.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let permission = status == StatusCode::FORBIDDEN
            || status == StatusCode::UNAUTHORIZED
            || errors.iter().any(|(code, _)| matches!(code, 9109 | 10000 | 10001));
        let hint = if permission {
            if path.ends_with("/settings/tls_client_auth") {
                " (the token needs Zone → Zone Settings → Edit for the global toggle)".to_string()
            } else {
                " (the token needs Zone → SSL and Certificates → Edit for this zone)".to_string()
            }
        } else {
            String::new()
        };
        Err(ApiError {
            method: method.clone(),
            path: path.to_string(),
            status: status.as_u16(),
            errors,
            hint,
        }
        .into())
    }

    async fn send(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Option<u64>, Bytes)> {
        let url = format!("{}{path}", self.base);
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
        let host = uri.host().context("URL without host")?.to_string();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, uri.authority().map_or(host.as_str(), |a| a.as_str()))
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, concat!("originguard/", env!("CARGO_PKG_VERSION")));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let mut request = request.body(Full::new(bytes))?;
        if !self.token.is_empty() {
            let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.token))
                .context("token is not a valid header value")?;
            auth.set_sensitive(true);
            request.headers_mut().insert(header::AUTHORIZATION, auth);
        }

        let exchange = async {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            if https {
                let name = ServerName::try_from(host.clone())?;
                let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, tcp)
                    .await?;
                roundtrip(TokioIo::new(tls), request).await
            } else {
                roundtrip(TokioIo::new(tcp), request).await
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("{method} {path}: timed out"))?
    }
}

/// Longest Retry-After honoured, in seconds.
const MAX_RETRY_AFTER: u64 = 60;

async fn roundtrip<I>(io: I, request: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Option<u64>, Bytes)>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(conn);
    let response = send.send_request(request).await?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let bytes = response.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok((status, retry_after, bytes))
}

/// The body with any private key replaced, for printing.
fn redacted(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(object) = body.as_object_mut() {
        if object.contains_key("private_key") {
            object.insert("private_key".into(), Value::String("<redacted>".into()));
        }
        if let Some(certificate) = object.get_mut("certificate") {
            if let Some(pem) = certificate.as_str() {
                *certificate = Value::String(format!("<PEM, {} bytes>", pem.len()));
            }
        }
    }
    body
}

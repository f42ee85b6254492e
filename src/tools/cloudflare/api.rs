//! A small client for Cloudflare's v4 API: bearer token, JSON envelope, bounded retries on 429
//! and 5xx, and a dry-run mode that prints requests instead of sending them.
//!
//! The transport is reqwest on the same rustls and aws-lc-rs provider as the proxy: it verifies
//! with the system trust store (so a TLS-inspecting corporate proxy's CA, installed there,
//! works) and honours `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` — except for a loopback API base,
//! which is always reached directly (as Go's HTTP client does). Plain `http://` bases are allowed
//! for tests and local proxies. The token is sent only in the `Authorization` header and never
//! printed or logged.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode, Uri};
use serde_json::Value;

/// Cloudflare's API base.
pub(crate) const DEFAULT_BASE: &str = "https://api.cloudflare.com/client/v4";
/// Attempts for a request answered 429 or 5xx (or not answered at all).
const ATTEMPTS: u32 = 4;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An API client for one token.
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
    dry_run: bool,
    /// Base delay between retries (doubled each time, capped by Retry-After ≤ 10 s).
    backoff: Duration,
}

/// A Cloudflare API failure, with the envelope's errors.
#[derive(Debug, thiserror::Error)]
#[error("{method} {path}: HTTP {status}: {}{hint}", format_errors(errors))]
pub(crate) struct ApiError {
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
        let loopback = match uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']')) {
            Some("localhost") => true,
            Some(host) => host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
            None => false,
        };
        let mut http = reqwest::Client::builder()
            .user_agent(concat!("originguard/", env!("CARGO_PKG_VERSION")))
            .timeout(REQUEST_TIMEOUT)
            .https_only(false);
        if loopback {
            http = http.no_proxy();
        }
        let http = http.build().context("cannot set up the HTTPS client")?;
        Ok(Api {
            base,
            token,
            http,
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

    pub(crate) fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Sends a request and returns the envelope's `result`. In dry-run mode, prints the request
    /// (private keys redacted) and returns `Value::Null` for writes; reads are still sent when a
    /// token is available, so a dry run can show what would change.
    pub(crate) async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
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
        let mut request = self
            .http
            .request(method.clone(), &url)
            .header(header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        if !self.token.is_empty() {
            let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.token))
                .context("token is not a valid header value")?;
            auth.set_sensitive(true);
            request = request.header(header::AUTHORIZATION, auth);
        }
        let response = request
            .send()
            .await
            .map_err(|e| anyhow!("{method} {path}: {}", error_chain(&e)))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| anyhow!("{method} {path}: reading the answer: {}", error_chain(&e)))?;
        Ok((status, retry_after, bytes))
    }
}

/// Longest Retry-After honoured, in seconds.
const MAX_RETRY_AFTER: u64 = 60;

/// An error and its causes on one line: reqwest's own message is only "error sending request".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
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

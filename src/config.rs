//! Configuration: raw TOML (serde, unknown keys rejected) becomes a validated [`Config`].
//!
//! Two stages, so that nothing downstream handles an invalid value: [`RawConfig`] mirrors the
//! file exactly; [`Config::from_toml`] checks every value and produces types that cannot be
//! wrong (socket addresses, durations, enums). Every error names the file and the key, e.g.
//! `config/originguard.toml: listener.address: invalid socket address "x"`.
//!
//! This module reads no certificate files: turning paths into keys and trust stores is
//! [`crate::tls::Policy::build`]'s job, which reports errors in the same form.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;
use serde::Deserialize;

/// A configuration error: the file, the key and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}: {key}: {message}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, key: impl Into<String>, message: impl fmt::Display) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            key: key.into(),
            message: message.to_string(),
        }
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file this was read from; relative certificate paths are resolved against the
    /// working directory, as nginx and ghostunnel do.
    pub file: PathBuf,
    pub listener: ListenerConfig,
    pub tls: TlsConfig,
    pub client_auth: ClientAuthConfig,
    pub upstream: UpstreamConfig,
    pub headers: HeadersConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub http2: bool,
}

#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub min_version: MinVersion,
    pub session_resumption: SessionResumption,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionResumption {
    Tickets,
    Off,
}

#[derive(Clone, Debug)]
pub struct ClientAuthConfig {
    pub trust: Vec<TrustSource>,
    /// Apache `SSLVerifyDepth` meaning: 1 = leaf issued directly by a trusted CA.
    pub verify_depth: u8,
    pub crl: Vec<PathBuf>,
}

/// Where a trusted client CA comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustSource {
    /// The Cloudflare origin-pull CA embedded in the binary.
    Cloudflare,
    /// A PEM file (a bundle may hold several CAs).
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    pub target: UpstreamTarget,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub max_idle_per_host: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamTarget {
    Tcp(Authority),
    Unix(PathBuf),
}

impl fmt::Display for UpstreamTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamTarget::Tcp(authority) => write!(f, "http://{authority}"),
            UpstreamTarget::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    H2c,
}

impl UpstreamProtocol {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
        }
    }
}

#[derive(Clone, Debug)]
pub struct HeadersConfig {
    pub client_cert: ClientCertHeaders,
    pub x_forwarded: bool,
}

/// Which identity headers the backend receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCertHeaders {
    Xfcc,
    Rfc9440,
    Both,
    None,
}

impl ClientCertHeaders {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientCertHeaders::Xfcc => "xfcc",
            ClientCertHeaders::Rfc9440 => "rfc9440",
            ClientCertHeaders::Both => "both",
            ClientCertHeaders::None => "none",
        }
    }

    pub fn xfcc(self) -> bool {
        matches!(self, ClientCertHeaders::Xfcc | ClientCertHeaders::Both)
    }

    pub fn rfc9440(self) -> bool {
        matches!(self, ClientCertHeaders::Rfc9440 | ClientCertHeaders::Both)
    }
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    pub access_log: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::new(path, "(file)", format!("cannot read: {e}")))?;
        Config::from_toml(path, &text)
    }

    /// Validates `text`, reporting errors against `file`.
    pub fn from_toml(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().to_string();
            let key = e
                .span()
                .map(|span| locate(text, span.start))
                .unwrap_or_else(|| "(file)".to_string());
            ConfigError::new(file, key, message)
        })?;
        raw.validate(file)
    }
}

/// "line L, column C" for a byte offset, so a TOML error points into the file.
fn locate(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {column}")
}

// ---------------------------------------------------------------------------------------------
// Raw TOML shape. Defaults here are the documented defaults in config/originguard.toml.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listener: RawListener,
    tls: Option<RawTls>,
    #[serde(default)]
    client_auth: RawClientAuth,
    upstream: Option<RawUpstream>,
    #[serde(default)]
    headers: RawHeaders,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawListener {
    address: String,
    handshake_timeout: String,
    header_read_timeout: String,
    idle_timeout: String,
    max_connections: i64,
    max_header_bytes: i64,
    http2: bool,
}

impl Default for RawListener {
    fn default() -> Self {
        RawListener {
            address: "0.0.0.0:8443".into(),
            handshake_timeout: "10s".into(),
            header_read_timeout: "30s".into(),
            idle_timeout: "900s".into(),
            max_connections: 10_000,
            max_header_bytes: 65_536,
            http2: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate: String,
    private_key: String,
    #[serde(default = "default_min_version")]
    min_version: String,
    #[serde(default = "default_resumption")]
    session_resumption: String,
}

fn default_min_version() -> String {
    "1.2".into()
}

fn default_resumption() -> String {
    "tickets".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawClientAuth {
    trust: Vec<String>,
    verify_depth: i64,
    crl: Vec<String>,
}

impl Default for RawClientAuth {
    fn default() -> Self {
        RawClientAuth {
            trust: vec!["cloudflare".into()],
            verify_depth: 1,
            crl: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: String,
    #[serde(default = "default_protocol")]
    protocol: String,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: String,
    #[serde(default = "default_response_timeout")]
    response_timeout: String,
    #[serde(default = "default_max_idle")]
    max_idle_per_host: i64,
}

fn default_protocol() -> String {
    "http1".into()
}

fn default_connect_timeout() -> String {
    "5s".into()
}

fn default_response_timeout() -> String {
    "100s".into()
}

fn default_max_idle() -> i64 {
    64
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHeaders {
    client_cert: String,
    x_forwarded: bool,
}

impl Default for RawHeaders {
    fn default() -> Self {
        RawHeaders {
            client_cert: "xfcc".into(),
            x_forwarded: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: String,
    level: String,
    access_log: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
            level: "info".into(),
            access_log: true,
        }
    }
}

/// hyper refuses a read buffer below 8 KiB, and a larger cap than 1 MiB only helps abuse.
const MIN_HEADER_BYTES: i64 = 8 * 1024;
const MAX_HEADER_BYTES: i64 = 1024 * 1024;
/// webpki builds paths of at most six intermediates.
const MAX_VERIFY_DEPTH: i64 = 7;

impl RawConfig {
    fn validate(self, file: &Path) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError::new(file, key, message);

        let l = self.listener;
        let listener = ListenerConfig {
            address: l.address.parse().map_err(|_| {
                err(
                    "listener.address",
                    format!(
                        "invalid socket address {:?} (expected e.g. \"0.0.0.0:8443\" or \"[::]:443\")",
                        l.address
                    ),
                )
            })?,
            handshake_timeout: duration(file, "listener.handshake_timeout", &l.handshake_timeout)?,
            header_read_timeout: duration(file, "listener.header_read_timeout", &l.header_read_timeout)?,
            idle_timeout: duration(file, "listener.idle_timeout", &l.idle_timeout)?,
            max_connections: in_range(file, "listener.max_connections", l.max_connections, 1, 1 << 20)?,
            max_header_bytes: in_range(
                file,
                "listener.max_header_bytes",
                l.max_header_bytes,
                MIN_HEADER_BYTES,
                MAX_HEADER_BYTES,
            )?,
            http2: l.http2,
        };

        let t = self.tls.ok_or_else(|| {
            err(
                "tls",
                "missing table: [tls] with certificate and private_key is required".into(),
            )
        })?;
        let tls = TlsConfig {
            certificate: non_empty_path(file, "tls.certificate", &t.certificate)?,
            private_key: non_empty_path(file, "tls.private_key", &t.private_key)?,
            min_version: match t.min_version.as_str() {
                "1.2" => MinVersion::Tls12,
                "1.3" => MinVersion::Tls13,
                other => {
                    return Err(err(
                        "tls.min_version",
                        format!("unsupported value {other:?} (expected \"1.2\" or \"1.3\")"),
                    ))
                }
            },
            session_resumption: match t.session_resumption.as_str() {
                "tickets" => SessionResumption::Tickets,
                "off" => SessionResumption::Off,
                other => {
                    return Err(err(
                        "tls.session_resumption",
                        format!("unsupported value {other:?} (expected \"tickets\" or \"off\")"),
                    ))
                }
            },
        };

        let c = self.client_auth;
        if c.trust.is_empty() {
            return Err(err(
                "client_auth.trust",
                "must name at least one CA (\"cloudflare\" or a PEM path): client certificates are always required"
                    .into(),
            ));
        }
        let trust = c
            .trust
            .iter()
            .enumerate()
            .map(|(i, entry)| match entry.as_str() {
                "cloudflare" => Ok(TrustSource::Cloudflare),
                "" => Err(err(&format!("client_auth.trust[{i}]"), "empty path".into())),
                path => Ok(TrustSource::File(PathBuf::from(path))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client_auth = ClientAuthConfig {
            trust,
            verify_depth: in_range(file, "client_auth.verify_depth", c.verify_depth, 1, MAX_VERIFY_DEPTH)?,
            crl: c
                .crl
                .iter()
                .enumerate()
                .map(|(i, p)| non_empty_path(file, &format!("client_auth.crl[{i}]"), p))
                .collect::<Result<_, _>>()?,
        };

        let u = self
            .upstream
            .ok_or_else(|| err("upstream", "missing table: [upstream] with url is required".into()))?;
        let upstream = UpstreamConfig {
            target: upstream_target(file, &u.url)?,
            protocol: match u.protocol.as_str() {
                "http1" => UpstreamProtocol::Http1,
                "h2c" => UpstreamProtocol::H2c,
                other => {
                    return Err(err(
                        "upstream.protocol",
                        format!("unsupported value {other:?} (expected \"http1\" or \"h2c\")"),
                    ))
                }
            },
            connect_timeout: duration(file, "upstream.connect_timeout", &u.connect_timeout)?,
            response_timeout: duration(file, "upstream.response_timeout", &u.response_timeout)?,
            max_idle_per_host: in_range(file, "upstream.max_idle_per_host", u.max_idle_per_host, 0, 1 << 16)?,
        };

        let headers = HeadersConfig {
            client_cert: match self.headers.client_cert.as_str() {
                "xfcc" => ClientCertHeaders::Xfcc,
                "rfc9440" => ClientCertHeaders::Rfc9440,
                "both" => ClientCertHeaders::Both,
                "none" => ClientCertHeaders::None,
                other => {
                    return Err(err(
                        "headers.client_cert",
                        format!("unsupported value {other:?} (expected \"xfcc\", \"rfc9440\", \"both\" or \"none\")"),
                    ))
                }
            },
            x_forwarded: self.headers.x_forwarded,
        };

        let log = LogConfig {
            format: match self.log.format.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(err(
                        "log.format",
                        format!("unsupported value {other:?} (expected \"text\" or \"json\")"),
                    ))
                }
            },
            level: {
                tracing_subscriber::EnvFilter::try_new(&self.log.level)
                    .map_err(|e| err("log.level", format!("invalid filter {:?}: {e}", self.log.level)))?;
                self.log.level
            },
            access_log: self.log.access_log,
        };

        Ok(Config {
            file: file.to_path_buf(),
            listener,
            tls,
            client_auth,
            upstream,
            headers,
            log,
        })
    }
}

fn upstream_target(file: &Path, url: &str) -> Result<UpstreamTarget, ConfigError> {
    let key = "upstream.url";
    if let Some(path) = url.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(ConfigError::new(
                file,
                key,
                "unix: needs a socket path, e.g. \"unix:/run/app.sock\"",
            ));
        }
        return Ok(UpstreamTarget::Unix(PathBuf::from(path)));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| ConfigError::new(file, key, format!("invalid URL {url:?}: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(ConfigError::new(
            file,
            key,
            format!("{url:?}: expected http://HOST:PORT or unix:/path (TLS to the upstream is not supported)"),
        ));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(ConfigError::new(
            file,
            key,
            format!("{url:?}: a path prefix is not supported; give only http://HOST:PORT"),
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| ConfigError::new(file, key, format!("{url:?}: missing host")))?;
    Ok(UpstreamTarget::Tcp(authority))
}

fn non_empty_path(file: &Path, key: &str, value: &str) -> Result<PathBuf, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::new(file, key, "empty path"));
    }
    Ok(PathBuf::from(value))
}

fn in_range<T: TryFrom<i64>>(file: &Path, key: &str, value: i64, min: i64, max: i64) -> Result<T, ConfigError> {
    if !(min..=max).contains(&value) {
        return Err(ConfigError::new(
            file,
            key,
            format!("{value} is out of range {min}..={max}"),
        ));
    }
    T::try_from(value).map_err(|_| ConfigError::new(file, key, format!("{value} is out of range")))
}

fn duration(file: &Path, key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(value).map_err(|message| ConfigError::new(file, key, message))?;
    if d.is_zero() {
        return Err(ConfigError::new(file, key, "must be greater than zero"));
    }
    Ok(d)
}

/// Parses `"250ms"`, `"10s"`, `"15m"`, `"1h"` (one number, one unit).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {value:?} (expected e.g. \"250ms\", \"10s\", \"15m\", \"1h\")");
    let split = value.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = value.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(bad()),
    };
    millis.map(Duration::from_millis).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [tls]
        certificate = "s.pem"
        private_key = "s.key"
        [upstream]
        url = "http://127.0.0.1:8080"
    "#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::from_toml(Path::new("t.toml"), MINIMAL).expect("valid");
        assert_eq!(c.listener.address, "0.0.0.0:8443".parse().expect("addr"));
        assert_eq!(c.listener.idle_timeout, Duration::from_secs(900));
        assert_eq!(c.client_auth.trust, vec![TrustSource::Cloudflare]);
        assert_eq!(c.client_auth.verify_depth, 1);
        assert_eq!(c.tls.session_resumption, SessionResumption::Tickets);
        assert_eq!(c.headers.client_cert, ClientCertHeaders::Xfcc);
        assert_eq!(c.upstream.response_timeout, Duration::from_secs(100));
    }

    #[test]
    fn errors_name_file_and_key() {
        let text = MINIMAL.replace("[upstream]", "[upstream]\nconnect_timeout = \"5 parsecs\"");
        let e = Config::from_toml(Path::new("/etc/og.toml"), &text).expect_err("invalid");
        assert_eq!(e.key, "upstream.connect_timeout");
        assert!(e
            .to_string()
            .starts_with("/etc/og.toml: upstream.connect_timeout: invalid duration"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_location() {
        let text = MINIMAL.replace("[tls]", "[tls]\nverify_clients = false");
        let e = Config::from_toml(Path::new("t.toml"), &text).expect_err("unknown key");
        assert!(e.message.contains("unknown field `verify_clients`"), "{e}");
        assert!(e.key.starts_with("line 3"), "{e}");
    }

    #[test]
    fn upstream_urls() {
        let p = Path::new("t");
        assert_eq!(
            upstream_target(p, "unix:/run/a.sock").expect("unix"),
            UpstreamTarget::Unix("/run/a.sock".into())
        );
        assert!(matches!(
            upstream_target(p, "http://[::1]:80").expect("v6"),
            UpstreamTarget::Tcp(_)
        ));
        assert!(upstream_target(p, "https://x:1").is_err());
        assert!(upstream_target(p, "http://x:1/prefix").is_err());
        assert!(upstream_target(p, "unix:").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "10", "1.5s", "-1s", "10 s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn depth_and_trust_are_checked() {
        let text = format!("{MINIMAL}\n[client_auth]\nverify_depth = 0");
        assert_eq!(
            Config::from_toml(Path::new("t"), &text).expect_err("depth").key,
            "client_auth.verify_depth"
        );
        let text = format!("{MINIMAL}\n[client_auth]\ntrust = []");
        assert_eq!(
            Config::from_toml(Path::new("t"), &text).expect_err("trust").key,
            "client_auth.trust"
        );
    }
}

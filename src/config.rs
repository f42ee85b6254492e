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
    pub(crate) fn new(file: &Path, key: impl Into<String>, message: impl fmt::Display) -> Self {
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
    /// Per-hostname policies, in file order.
    pub hosts: Vec<HostConfig>,
    pub upstream: UpstreamConfig,
    pub headers: HeadersConfig,
    /// The admin listener; `None` when the `[admin]` table is absent.
    pub admin: Option<AdminConfig>,
    pub log: LogConfig,
    pub reload: ReloadConfig,
}

/// `[reload]`: reload on file changes (see `crate::watch`).
#[derive(Clone, Debug)]
pub struct ReloadConfig {
    pub watch: bool,
    pub debounce: Duration,
}

#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub address: SocketAddr,
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
    /// Source-address gate; empty = any peer.
    pub allow_peers: Vec<crate::peers::IpNet>,
    /// `allow_peers` includes the embedded Cloudflare ranges (warned about once they age).
    pub embedded_cloudflare_ranges: bool,
    /// The `file:` entries of `allow_peers` (watched for changes).
    pub peer_files: Vec<PathBuf>,
    /// `proxy_protocol = "required"`: every connection starts with a PROXY v1/v2 header.
    pub proxy_protocol: bool,
    /// Peers allowed to send it (empty = any).
    pub proxy_protocol_from: Vec<crate::peers::IpNet>,
    /// Every connection is closed gracefully once this old.
    pub max_connection_age: Duration,
    /// Connections still in the TLS handshake; beyond it, accepting waits.
    pub max_handshakes: usize,
    /// How long in-flight requests and tunnels get to finish when draining.
    pub drain_timeout: Duration,
    /// On SIGTERM: not ready at once, still serving this long, then drain.
    pub shutdown_delay: Duration,
}

#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub min_version: MinVersion,
    pub session_resumption: SessionResumption,
    /// Session-ticket keys shared by replicas (see `tls::tickets`); `None`: random per process.
    pub ticket_keys: Option<PathBuf>,
    pub key_exchange: KeyExchange,
}

/// `tls.key_exchange`: how X25519MLKEM768 (post-quantum hybrid) is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyExchange {
    /// A client that supports the hybrid gets it, with a HelloRetryRequest when it sent only a
    /// classical key share (Cloudflare's default "supported" setting).
    #[default]
    HybridPreferred,
    /// The hybrid only when the client sent a hybrid key share: never an extra round trip.
    HybridIfSent,
    /// Never the hybrid.
    Classical,
}

impl KeyExchange {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KeyExchange::HybridPreferred => "hybrid-preferred",
            KeyExchange::HybridIfSent => "hybrid-if-sent",
            KeyExchange::Classical => "classical",
        }
    }
}

/// `tls.min_version`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum MinVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// `tls.session_resumption`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionResumption {
    #[default]
    Tickets,
    Off,
}

#[derive(Clone, Debug)]
pub struct ClientAuthConfig {
    pub trust: Vec<TrustSource>,
    /// Apache `SSLVerifyDepth` meaning: 1 = leaf issued directly by a trusted CA.
    pub verify_depth: u8,
    pub crl: Vec<PathBuf>,
    /// A CRL past its nextUpdate: `true` refuses every client of its CA; `false` warns.
    pub crl_stale_refuse: bool,
    pub allow: AllowLists,
    /// Remember verified chains (see `tls::cache`).
    pub verify_cache: bool,
}

/// Checks on top of chain validation. Each non-empty list must match; empty lists allow any
/// certificate that chains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowLists {
    /// Exact RFC 4514 subjects, or `CN=name` to match the common name alone.
    pub subjects: Vec<String>,
    /// SAN dNSNames, lowercase; `*.example.com` matches exactly one label.
    pub dns_names: Vec<String>,
    /// SAN URIs, exact.
    pub uris: Vec<String>,
    /// SHA-256 of the DER SubjectPublicKeyInfo.
    pub spki_sha256: Vec<[u8; 32]>,
    /// SHA-256 of the leaf certificate DER.
    pub cert_sha256: Vec<[u8; 32]>,
}

impl AllowLists {
    pub(crate) fn is_empty(&self) -> bool {
        self.subjects.is_empty()
            && self.dns_names.is_empty()
            && self.uris.is_empty()
            && self.spki_sha256.is_empty()
            && self.cert_sha256.is_empty()
    }
}

/// A `[[hosts]]` table: a policy chosen by SNI (per-hostname AOP).
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Lowercase exact names or `*.domain` wildcards.
    pub server_names: Vec<String>,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub client_auth: ClientAuthConfig,
    /// `[hosts.upstream]`: this host's own backend (unset keys from `[upstream]`); `None`: the
    /// top-level upstream.
    pub upstream: Option<UpstreamConfig>,
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
    /// How to reach an `https://` target; empty for the others.
    pub tls: UpstreamTls,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub max_idle_per_host: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamTarget {
    Tcp(Authority),
    /// TLS over TCP, verified (`UpstreamTls`).
    Https(Authority),
    Unix(PathBuf),
}

impl UpstreamTarget {
    pub(crate) fn is_https(&self) -> bool {
        matches!(self, UpstreamTarget::Https(_))
    }
}

impl fmt::Display for UpstreamTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamTarget::Tcp(authority) => write!(f, "http://{authority}"),
            UpstreamTarget::Https(authority) => write!(f, "https://{authority}"),
            UpstreamTarget::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The TLS client side of an `https://` upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM files of the CAs that may issue the upstream's certificate; empty: the webpki roots
    /// (the Mozilla set), as a browser would.
    pub ca: Vec<PathBuf>,
    /// The name sent as SNI and verified against the certificate; `None`: the URL's host.
    pub server_name: Option<String>,
    /// A certificate (chain) and key to present when the upstream asks for one.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// The table these keys came from (`upstream`, `hosts[1].upstream`), for errors found when
    /// the files are read.
    pub key: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    H2c,
    /// `https://` without `protocol`: ALPN offers h2 and http/1.1 and the upstream picks.
    Alpn,
}

impl UpstreamProtocol {
    /// The spelling used in the config file.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::Alpn => "alpn (h2, http/1.1)",
        }
    }
}

#[derive(Clone, Debug)]
pub struct HeadersConfig {
    pub client_cert: ClientCertHeaders,
    pub x_forwarded: bool,
    /// What happens to request header names with `_` that are not spellings of a protected name.
    pub with_underscores: Underscores,
    /// Extra names removed from every request, in any spelling (lowercase, `-` form).
    pub strip: Vec<http::HeaderName>,
}

/// `headers.with_underscores`: Envoy's `headers_with_underscores_action`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Underscores {
    #[default]
    Allow,
    Drop,
    Reject,
}

/// `headers.strip` by default: the client-certificate headers that nginx, Apache, HAProxy and
/// Traefik setups pass to backends, so a backend written for one of them never reads a forged one.
pub const DEFAULT_STRIP: [&str; 10] = [
    "x-ssl-client-cert",
    "x-ssl-client-verify",
    "x-ssl-client-s-dn",
    "x-ssl-client-i-dn",
    "x-forwarded-tls-client-cert",
    "x-forwarded-tls-client-cert-info",
    "x-client-cert",
    "x-client-verify",
    "ssl-client-cert",
    "ssl-client-verify",
];

/// Which identity headers the backend receives (`headers.client_cert`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertHeaders {
    #[default]
    Xfcc,
    Rfc9440,
    Both,
    None,
}

impl ClientCertHeaders {
    /// The spelling used in the config file.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ClientCertHeaders::Xfcc => "xfcc",
            ClientCertHeaders::Rfc9440 => "rfc9440",
            ClientCertHeaders::Both => "both",
            ClientCertHeaders::None => "none",
        }
    }

    pub(crate) fn xfcc(self) -> bool {
        matches!(self, ClientCertHeaders::Xfcc | ClientCertHeaders::Both)
    }

    pub(crate) fn rfc9440(self) -> bool {
        matches!(self, ClientCertHeaders::Rfc9440 | ClientCertHeaders::Both)
    }
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    pub access_log: bool,
}

/// `log.format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `listener.proxy_protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ProxyProtocol {
    #[default]
    Off,
    Required,
}

/// `client_auth.crl_stale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CrlStale {
    Warn,
    Refuse,
}

impl Config {
    /// Every file this configuration names (itself included): what a reload re-reads, and so
    /// what `[reload] watch` watches.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![
            self.file.clone(),
            self.tls.certificate.clone(),
            self.tls.private_key.clone(),
        ];
        files.extend(self.tls.ticket_keys.iter().cloned());
        files.extend(self.listener.peer_files.iter().cloned());
        let auths = std::iter::once(&self.client_auth).chain(self.hosts.iter().map(|h| &h.client_auth));
        for auth in auths {
            for source in &auth.trust {
                if let TrustSource::File(path) = source {
                    files.push(path.clone());
                }
            }
            files.extend(auth.crl.iter().cloned());
        }
        for host in &self.hosts {
            files.push(host.certificate.clone());
            files.push(host.private_key.clone());
        }
        // An https:// upstream's CAs and client certificate are reloaded (and watched) too.
        let upstreams = std::iter::once(&self.upstream).chain(self.hosts.iter().filter_map(|h| h.upstream.as_ref()));
        for upstream in upstreams {
            files.extend(upstream.tls.ca.iter().cloned());
            if let Some((cert, key)) = &upstream.tls.client_certificate {
                files.extend([cert.clone(), key.clone()]);
            }
        }
        files.sort();
        files.dedup();
        files
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::new(path, "(file)", format!("cannot read: {e}")))?;
        Config::from_toml(path, &text)
    }

    /// Validates `text`, reporting errors against `file`.
    pub fn from_toml(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (key, position) = match e.span() {
                Some(span) => (
                    key_at(text, span.start),
                    format!(" (line {})", locate(text, span.start)),
                ),
                None => (None, String::new()),
            };
            let message = format!("{}{position}", plain_message(e.message()));
            ConfigError::new(file, key.unwrap_or_else(|| "(file)".to_string()), message)
        })?;
        raw.validate(file)
    }
}

/// "L, column C" for a byte offset, so a TOML error points into the file.
fn locate(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("{line}, column {column}")
}

/// The dotted key path (`listener.max_connections`, `hosts[1].client_auth.trust`) of the
/// `key = value` line at `offset`, from the table headers above it. `None` when the offset is
/// not on such a line (a header, a syntax error).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split_once('=').map(|(k, _)| k.trim().trim_matches('"'))?;
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let mut table = String::new();
    let mut arrays: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for header in text[..line_start].lines().map(str::trim) {
        if let Some(name) = header.strip_prefix("[[").and_then(|h| h.split("]]").next()) {
            let name = name.trim().to_string();
            let n = arrays.entry(name.clone()).and_modify(|n| *n += 1).or_insert(0);
            table = format!("{name}[{n}]");
        } else if let Some(name) = header.strip_prefix('[').and_then(|h| h.split(']').next()) {
            let name = name.trim();
            // `[hosts.client_auth]` belongs to the latest `[[hosts]]` element.
            table = match name.split_once('.') {
                Some((array, rest)) if arrays.contains_key(array) => format!("{array}[{}].{rest}", arrays[array]),
                _ => name.to_string(),
            };
        }
    }
    Some(match table.is_empty() {
        true => key.to_string(),
        false => format!("{table}.{key}"),
    })
}

/// serde's wording in an operator's words: `invalid type: string "10000", expected i64` becomes
/// `expected an integer, found a string "10000"`.
fn plain_message(message: &str) -> String {
    let message = message.trim();
    // `unknown variant `1.1`, expected `1.2` or `1.3`` -> `unsupported value "1.1" (expected
    // "1.2" or "1.3")`: the wording the config reference uses.
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        if let Some((value, expected)) = rest.split_once(", expected ") {
            let expected = expected.trim_start_matches("one of ").replace('`', "\"");
            return format!(
                "unsupported value \"{}\" (expected {expected})",
                value.trim_matches('`')
            );
        }
    }
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_string();
    };
    let Some((found, expected)) = rest.rsplit_once(", expected ") else {
        return message.to_string();
    };
    let expected = match expected {
        "i64" | "u64" | "i32" | "u32" | "usize" | "an integer" => "an integer",
        "a boolean" | "bool" => "true or false",
        "a string" | "a borrowed string" => "a string",
        "a sequence" => "an array",
        e if e.starts_with("struct ") || e == "a map" => "a table",
        e => e,
    };
    let found = match found.split_once(' ') {
        Some(("string", v)) => format!("a string {v}"),
        Some(("integer", v)) => format!("an integer {}", v.trim_matches('`')),
        Some(("boolean", v)) => format!("{} (true or false)", v.trim_matches('`')),
        Some(("floating", v)) => format!("a number {}", v.trim_start_matches("point ").trim_matches('`')),
        _ => match found {
            "sequence" => "an array".to_string(),
            "map" => "a table".to_string(),
            f => f.to_string(),
        },
    };
    format!("expected {expected}, found {found}")
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
    #[serde(default)]
    hosts: Vec<RawHost>,
    upstream: Option<RawUpstream>,
    #[serde(default)]
    headers: RawHeaders,
    admin: Option<RawAdmin>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    reload: RawReload,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawReload {
    watch: bool,
    debounce: String,
}

impl Default for RawReload {
    fn default() -> Self {
        RawReload {
            watch: true,
            debounce: "1s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default = "default_admin_address")]
    address: String,
}

fn default_admin_address() -> String {
    "127.0.0.1:9901".into()
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
    allow_peers: Vec<String>,
    max_connection_age: String,
    max_handshakes: i64,
    drain_timeout: String,
    shutdown_delay: String,
    proxy_protocol: ProxyProtocol,
    proxy_protocol_from: Vec<String>,
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
            allow_peers: Vec::new(),
            max_connection_age: "1h".into(),
            max_handshakes: 1024,
            drain_timeout: "30s".into(),
            shutdown_delay: "0s".into(),
            proxy_protocol: ProxyProtocol::Off,
            proxy_protocol_from: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate: String,
    private_key: String,
    #[serde(default)]
    min_version: MinVersion,
    #[serde(default)]
    session_resumption: SessionResumption,
    #[serde(default)]
    ticket_keys: String,
    #[serde(default)]
    key_exchange: KeyExchange,
}

/// `[client_auth]` and `[hosts.client_auth]`: every key optional, so a host falls back key by
/// key to the top level, and the top level to the documented defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientAuth {
    trust: Option<Vec<String>>,
    verify_depth: Option<i64>,
    crl: Option<Vec<String>>,
    crl_stale: Option<CrlStale>,
    verify_cache: Option<bool>,
    allow_subjects: Option<Vec<String>>,
    allow_dns_names: Option<Vec<String>>,
    allow_uris: Option<Vec<String>>,
    allow_spki_sha256: Option<Vec<String>>,
    allow_cert_sha256: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    server_names: Vec<String>,
    certificate: Option<String>,
    private_key: Option<String>,
    #[serde(default)]
    client_auth: RawClientAuth,
    upstream: Option<RawUpstream>,
}

/// `[upstream]`, and `[hosts.upstream]` whose keys fall back to `[upstream]` key by key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Option<String>,
    protocol: Option<String>,
    ca: Option<Vec<String>>,
    server_name: Option<String>,
    client_certificate: Option<String>,
    client_key: Option<String>,
    connect_timeout: Option<String>,
    response_timeout: Option<String>,
    max_idle_per_host: Option<i64>,
}

impl RawHost {
    /// `[[hosts]]` number `i`: its names, and each key falling back to the top-level one.
    fn resolve(
        self,
        file: &Path,
        i: usize,
        tls: &TlsConfig,
        client_auth: &ClientAuthConfig,
        upstream: &UpstreamConfig,
    ) -> Result<HostConfig, ConfigError> {
        let key = |k: &str| format!("hosts[{i}].{k}");
        if self.server_names.is_empty() {
            return Err(ConfigError::new(
                file,
                key("server_names"),
                "must name at least one host",
            ));
        }
        let server_names = (self.server_names.iter().enumerate())
            .map(|(n, name)| {
                server_name(name).map_err(|m| ConfigError::new(file, key(&format!("server_names[{n}]")), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HostConfig {
            server_names,
            certificate: match &self.certificate {
                Some(p) => non_empty_path(file, &key("certificate"), p)?,
                None => tls.certificate.clone(),
            },
            private_key: match &self.private_key {
                Some(p) => non_empty_path(file, &key("private_key"), p)?,
                None => tls.private_key.clone(),
            },
            client_auth: self.client_auth.resolve(file, &key("client_auth"), client_auth)?,
            upstream: match self.upstream {
                Some(raw) => Some(raw.resolve(file, &key("upstream"), Some(upstream))?),
                None => None,
            },
        })
    }
}

impl RawUpstream {
    /// `parent`: the `[upstream]` a `[hosts.upstream]` falls back to; `None` for `[upstream]`.
    fn resolve(
        mut self,
        file: &Path,
        prefix: &str,
        parent: Option<&UpstreamConfig>,
    ) -> Result<UpstreamConfig, ConfigError> {
        // INTERFACE.md writes the unset TLS keys as "" (and ca as []): empty means unset.
        for value in [
            &mut self.server_name,
            &mut self.client_certificate,
            &mut self.client_key,
        ] {
            if value.as_deref() == Some("") {
                *value = None;
            }
        }
        let key = |k: &str| format!("{prefix}.{k}");
        let target = match (&self.url, parent) {
            (Some(url), _) => upstream_target_at(file, &key("url"), url)?,
            (None, Some(parent)) => parent.target.clone(),
            (None, None) => {
                return Err(ConfigError::new(
                    file,
                    key("url"),
                    "missing: the backend to forward to, e.g. \"http://127.0.0.1:8080\"",
                ))
            }
        };
        let https = target.is_https();
        // protocol and the TLS keys mean something else for http:// and https://: a host
        // inherits them only from an upstream of its own kind.
        let same_kind = parent.filter(|p| p.target.is_https() == https);
        let protocol = match self.protocol.as_deref() {
            Some(p) => upstream_protocol(file, &key("protocol"), p, https)?,
            None => match same_kind {
                Some(parent) => parent.protocol,
                None if https => UpstreamProtocol::Alpn,
                None => UpstreamProtocol::Http1,
            },
        };
        let inherited = same_kind.map(|p| p.tls.clone()).unwrap_or_default();
        let tls = if https {
            let client_certificate = match (self.client_certificate, self.client_key) {
                (None, None) => inherited.client_certificate,
                (Some(cert), Some(key_file)) => Some((
                    non_empty_path(file, &key("client_certificate"), &cert)?,
                    non_empty_path(file, &key("client_key"), &key_file)?,
                )),
                (Some(_), None) => {
                    return Err(ConfigError::new(
                        file,
                        key("client_key"),
                        "missing: client_certificate needs its key",
                    ))
                }
                (None, Some(_)) => {
                    return Err(ConfigError::new(
                        file,
                        key("client_certificate"),
                        "missing: client_key needs its certificate",
                    ))
                }
            };
            UpstreamTls {
                ca: match self.ca {
                    Some(ca) => ca
                        .iter()
                        .enumerate()
                        .map(|(i, p)| non_empty_path(file, &key(&format!("ca[{i}]")), p))
                        .collect::<Result<_, _>>()?,
                    None => inherited.ca,
                },
                server_name: match self.server_name {
                    Some(name) if name.is_empty() => None,
                    Some(name) => {
                        rustls::pki_types::ServerName::try_from(name.as_str()).map_err(|_| {
                            ConfigError::new(
                                file,
                                key("server_name"),
                                format!("{name:?} is not a DNS name or IP address"),
                            )
                        })?;
                        Some(name)
                    }
                    None => inherited.server_name,
                },
                client_certificate,
                key: prefix.to_string(),
            }
        } else {
            let tls_keys = [
                ("ca", self.ca.as_ref().is_some_and(|c| !c.is_empty())),
                ("server_name", self.server_name.as_ref().is_some_and(|n| !n.is_empty())),
                ("client_certificate", self.client_certificate.is_some()),
                ("client_key", self.client_key.is_some()),
            ];
            if let Some((name, _)) = tls_keys.iter().find(|(_, set)| *set) {
                return Err(ConfigError::new(
                    file,
                    key(name),
                    "only applies to an https:// url (the url here is not https)",
                ));
            }
            UpstreamTls::default()
        };
        Ok(UpstreamConfig {
            target,
            protocol,
            tls,
            connect_timeout: match (&self.connect_timeout, parent) {
                (Some(d), _) => duration(file, &key("connect_timeout"), d)?,
                (None, Some(parent)) => parent.connect_timeout,
                (None, None) => Duration::from_secs(5),
            },
            response_timeout: match (&self.response_timeout, parent) {
                (Some(d), _) => duration(file, &key("response_timeout"), d)?,
                (None, Some(parent)) => parent.response_timeout,
                // Cloudflare gives up on an origin after 100 s.
                (None, None) => Duration::from_secs(100),
            },
            max_idle_per_host: match (self.max_idle_per_host, parent) {
                (Some(n), _) => in_range(file, &key("max_idle_per_host"), n, 0, 1 << 16)?,
                (None, Some(parent)) => parent.max_idle_per_host,
                (None, None) => 64,
            },
        })
    }
}

fn upstream_protocol(file: &Path, key: &str, value: &str, https: bool) -> Result<UpstreamProtocol, ConfigError> {
    match (value, https) {
        ("http1", _) => Ok(UpstreamProtocol::Http1),
        ("h2c", false) => Ok(UpstreamProtocol::H2c),
        ("h2c", true) => Err(ConfigError::new(
            file,
            key,
            "\"h2c\" is cleartext HTTP/2; with an https:// url ALPN chooses h2 or http/1.1 \
             (leave protocol unset), or set \"http1\" to offer only http/1.1",
        )),
        (other, _) => Err(ConfigError::new(
            file,
            key,
            format!("unsupported value {other:?} (expected \"http1\" or \"h2c\")"),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHeaders {
    client_cert: ClientCertHeaders,
    x_forwarded: bool,
    with_underscores: Underscores,
    strip: Vec<String>,
}

impl Default for RawHeaders {
    fn default() -> Self {
        RawHeaders {
            client_cert: ClientCertHeaders::default(),
            x_forwarded: true,
            with_underscores: Underscores::default(),
            strip: DEFAULT_STRIP.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: LogFormat,
    level: String,
    access_log: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: LogFormat::default(),
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
    /// Validates table by table; each `resolve` names its own keys.
    fn validate(self, file: &Path) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError::new(file, key, message);
        let listener = self.listener.resolve(file)?;
        let t = self.tls.ok_or_else(|| {
            err(
                "tls",
                "missing table: [tls] with certificate and private_key is required".into(),
            )
        })?;
        let tls = t.resolve(file)?;
        let defaults = ClientAuthConfig {
            trust: vec![TrustSource::Cloudflare],
            verify_depth: 1,
            crl: Vec::new(),
            crl_stale_refuse: false,
            allow: AllowLists::default(),
            verify_cache: true,
        };
        let client_auth = self.client_auth.resolve(file, "client_auth", &defaults)?;

        let u = self
            .upstream
            .ok_or_else(|| err("upstream", "missing table: [upstream] with url is required".into()))?;
        let upstream = u.resolve(file, "upstream", None)?;

        let hosts = (self.hosts.into_iter().enumerate())
            .map(|(i, h)| h.resolve(file, i, &tls, &client_auth, &upstream))
            .collect::<Result<Vec<_>, _>>()?;

        let headers = self.headers.resolve(file)?;
        let admin = match self.admin {
            None => None,
            Some(a) => Some(AdminConfig {
                address: a.address.parse().map_err(|_| {
                    err(
                        "admin.address",
                        format!(
                            "invalid socket address {:?} (expected e.g. \"127.0.0.1:9901\")",
                            a.address
                        ),
                    )
                })?,
            }),
        };

        let log = self.log.resolve(file)?;
        let reload = ReloadConfig {
            watch: self.reload.watch,
            debounce: duration(file, "reload.debounce", &self.reload.debounce)?,
        };

        Ok(Config {
            reload,
            file: file.to_path_buf(),
            listener,
            tls,
            client_auth,
            hosts,
            upstream,
            headers,
            admin,
            log,
        })
    }
}

impl RawListener {
    fn resolve(self, file: &Path) -> Result<ListenerConfig, ConfigError> {
        let err = |key: &str, message: String| ConfigError::new(file, key, message);
        let l = self;
        Ok(ListenerConfig {
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
            allow_peers: l
                .allow_peers
                .iter()
                .enumerate()
                .map(|(i, entry)| {
                    crate::peers::parse_peers(entry).map_err(|m| err(&format!("listener.allow_peers[{i}]"), m))
                })
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect(),
            embedded_cloudflare_ranges: l.allow_peers.iter().any(|p| p == "cloudflare"),
            peer_files: l
                .allow_peers
                .iter()
                .filter_map(|p| p.strip_prefix("file:"))
                .map(PathBuf::from)
                .collect(),
            max_connection_age: duration(file, "listener.max_connection_age", &l.max_connection_age)?,
            max_handshakes: in_range(file, "listener.max_handshakes", l.max_handshakes, 1, 1 << 20)?,
            drain_timeout: duration(file, "listener.drain_timeout", &l.drain_timeout)?,
            shutdown_delay: parse_duration(&l.shutdown_delay)
                .map_err(|m| ConfigError::new(file, "listener.shutdown_delay", m))?,
            proxy_protocol: l.proxy_protocol == ProxyProtocol::Required,
            proxy_protocol_from: l
                .proxy_protocol_from
                .iter()
                .enumerate()
                .map(|(i, entry)| {
                    crate::peers::parse_peers(entry).map_err(|m| err(&format!("listener.proxy_protocol_from[{i}]"), m))
                })
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect(),
        })
    }
}

impl RawTls {
    fn resolve(self, file: &Path) -> Result<TlsConfig, ConfigError> {
        let t = self;
        Ok(TlsConfig {
            certificate: non_empty_path(file, "tls.certificate", &t.certificate)?,
            private_key: non_empty_path(file, "tls.private_key", &t.private_key)?,
            min_version: t.min_version,
            session_resumption: t.session_resumption,
            ticket_keys: (!t.ticket_keys.is_empty()).then(|| PathBuf::from(&t.ticket_keys)),
            key_exchange: t.key_exchange,
        })
    }
}

impl RawHeaders {
    fn resolve(self, file: &Path) -> Result<HeadersConfig, ConfigError> {
        let err = |key: &str, message: String| ConfigError::new(file, key, message);
        Ok(HeadersConfig {
            client_cert: self.client_cert,
            x_forwarded: self.x_forwarded,
            with_underscores: self.with_underscores,
            strip: self
                .strip
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    // Stored in the `-` spelling: matching folds `_` into `-` anyway.
                    http::HeaderName::from_bytes(name.replace('_', "-").as_bytes()).map_err(|_| {
                        err(
                            &format!("headers.strip[{i}]"),
                            format!("{name:?} is not a valid header name"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        })
    }
}

impl RawLog {
    fn resolve(self, file: &Path) -> Result<LogConfig, ConfigError> {
        let err = |key: &str, message: String| ConfigError::new(file, key, message);
        Ok(LogConfig {
            format: self.format,
            level: {
                tracing_subscriber::EnvFilter::try_new(&self.level)
                    .map_err(|e| err("log.level", format!("invalid filter {:?}: {e}", self.level)))?;
                self.level
            },
            access_log: self.access_log,
        })
    }
}

impl RawClientAuth {
    /// Validates this table, taking unset keys from `parent` (key by key).
    fn resolve(self, file: &Path, prefix: &str, parent: &ClientAuthConfig) -> Result<ClientAuthConfig, ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let err = |k: String, message: String| ConfigError::new(file, k, message);
        let trust =
            match self.trust {
                None => parent.trust.clone(),
                Some(entries) if entries.is_empty() => return Err(err(
                    key("trust"),
                    "must name at least one CA (\"cloudflare\" or a PEM path): client certificates are always required"
                        .into(),
                )),
                Some(entries) => entries
                    .iter()
                    .enumerate()
                    .map(|(i, entry)| match entry.as_str() {
                        "cloudflare" => Ok(TrustSource::Cloudflare),
                        "" => Err(err(key(&format!("trust[{i}]")), "empty path".into())),
                        path => Ok(TrustSource::File(PathBuf::from(path))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
        if crate::tls::server::FIPS && trust.contains(&TrustSource::Cloudflare) {
            return Err(err(
                key("trust"),
                "this is a FIPS build: Cloudflare's shared AOP certificate (\"cloudflare\", also the \
                 default) is refused; FIPS-compliant AOP needs a zone-level or per-hostname \
                 certificate from your own CA: trust = [\"/path/to/your-aop-ca.pem\"]"
                    .into(),
            ));
        }
        let verify_depth = match self.verify_depth {
            None => parent.verify_depth,
            Some(d) => in_range(file, &key("verify_depth"), d, 1, MAX_VERIFY_DEPTH)?,
        };
        let crl = match self.crl {
            None => parent.crl.clone(),
            Some(paths) => paths
                .iter()
                .enumerate()
                .map(|(i, p)| non_empty_path(file, &key(&format!("crl[{i}]")), p))
                .collect::<Result<_, _>>()?,
        };
        let crl_stale_refuse = match self.crl_stale {
            None => parent.crl_stale_refuse,
            Some(stale) => stale == CrlStale::Refuse,
        };
        let p = &parent.allow;
        let allow = AllowLists {
            subjects: match self.allow_subjects {
                None => p.subjects.clone(),
                Some(v) => non_empty_entries(file, &key("allow_subjects"), v)?,
            },
            dns_names: match self.allow_dns_names {
                None => p.dns_names.clone(),
                Some(v) => v
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        crate::names::parse(n)
                            .map_err(|m| ConfigError::new(file, key(&format!("allow_dns_names[{i}]")), m))
                    })
                    .collect::<Result<_, _>>()?,
            },
            uris: match self.allow_uris {
                None => p.uris.clone(),
                Some(v) => non_empty_entries(file, &key("allow_uris"), v)?,
            },
            spki_sha256: match self.allow_spki_sha256 {
                None => p.spki_sha256.clone(),
                Some(v) => v
                    .iter()
                    .enumerate()
                    .map(|(i, pin)| base64_sha256(pin).map_err(|m| err(key(&format!("allow_spki_sha256[{i}]")), m)))
                    .collect::<Result<_, _>>()?,
            },
            cert_sha256: match self.allow_cert_sha256 {
                None => p.cert_sha256.clone(),
                Some(v) => v
                    .iter()
                    .enumerate()
                    .map(|(i, pin)| hex_sha256(pin).map_err(|m| err(key(&format!("allow_cert_sha256[{i}]")), m)))
                    .collect::<Result<_, _>>()?,
            },
        };
        Ok(ClientAuthConfig {
            trust,
            verify_depth,
            crl,
            crl_stale_refuse,
            allow,
            verify_cache: self.verify_cache.unwrap_or(parent.verify_cache),
        })
    }
}

fn non_empty_entries(file: &Path, key: &str, values: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if let Some(i) = values.iter().position(String::is_empty) {
        return Err(ConfigError::new(file, format!("{key}[{i}]"), "empty entry"));
    }
    Ok(values)
}

/// A `server_names` entry: a DNS name or `*.domain` (see [`crate::names`]).
fn server_name(name: &str) -> Result<String, String> {
    crate::names::parse(name)
}

fn base64_sha256(pin: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(pin)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| format!("{pin:?} is not a base64 SHA-256 (44 characters ending in '=')"))
}

fn hex_sha256(pin: &str) -> Result<[u8; 32], String> {
    let digits: String = pin.chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&digits, &mut out)
        .map_err(|_| format!("{pin:?} is not a hex SHA-256 (64 hex digits, colons optional)"))?;
    Ok(out)
}

fn upstream_target_at(file: &Path, key: &str, url: &str) -> Result<UpstreamTarget, ConfigError> {
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
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(ConfigError::new(
                file,
                key,
                format!("{url:?}: expected http://HOST:PORT, https://HOST:PORT or unix:/path"),
            ))
        }
    };
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(ConfigError::new(
            file,
            key,
            format!("{url:?}: a path prefix is not supported; give only the scheme, host and port"),
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| ConfigError::new(file, key, format!("{url:?}: missing host")))?;
    if authority.as_str().contains('@') {
        return Err(ConfigError::new(
            file,
            key,
            format!("{url:?}: credentials in the URL are not supported"),
        ));
    }
    // The connector needs the port: http's default is 80, https's 443, as in a browser.
    let authority = match authority.port_u16() {
        Some(_) => authority,
        None => {
            let port = if https { 443 } else { 80 };
            Authority::try_from(format!("{authority}:{port}").as_str())
                .map_err(|e| ConfigError::new(file, key, format!("{url:?}: {e}")))?
        }
    };
    Ok(if https {
        UpstreamTarget::Https(authority)
    } else {
        UpstreamTarget::Tcp(authority)
    })
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
pub(crate) fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|e| format!("invalid duration {value:?}: {e} (expected e.g. \"250ms\", \"10s\", \"1m30s\", \"1h\")"))
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
    #[cfg_attr(
        feature = "fips",
        ignore = "relies on the default trust = [\"cloudflare\"], which a FIPS build refuses"
    )]
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
    #[cfg_attr(
        feature = "fips",
        ignore = "relies on the default trust = [\"cloudflare\"], which a FIPS build refuses"
    )]
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
        assert_eq!(e.key, "tls.verify_clients", "{e}");
        assert!(e.message.contains("(line 3, column"), "{e}");
    }

    #[test]
    fn type_errors_name_the_key_path_in_plain_words() {
        let text = MINIMAL.replace("[tls]", "[listener]\nmax_connections = \"10000\"\n[tls]");
        let e = Config::from_toml(Path::new("/etc/og.toml"), &text).expect_err("type");
        assert_eq!(e.key, "listener.max_connections");
        assert!(
            e.message
                .starts_with("expected an integer, found a string \"10000\" (line 3, column"),
            "{e}"
        );
        let text = format!("{MINIMAL}\n[[hosts]]\nserver_names = [\"a\"]\n[[hosts]]\nserver_names = [\"b\"]\n[hosts.client_auth]\nverify_depth = \"2\"\n");
        let e = Config::from_toml(Path::new("t"), &text).expect_err("type");
        assert_eq!(e.key, "hosts[1].client_auth.verify_depth", "{e}");
        let text = MINIMAL.replace("[tls]", "[listener]\nhttp2 = \"yes\"\n[tls]");
        let e = Config::from_toml(Path::new("t"), &text).expect_err("type");
        assert!(
            e.message.starts_with("expected true or false, found a string \"yes\""),
            "{e}"
        );
    }

    #[test]
    fn a_fips_build_refuses_cloudflares_shared_certificate_and_only_then() {
        let own_ca = MINIMAL.replace("[upstream]", "[client_auth]\ntrust = [\"ca.pem\"]\n[upstream]");
        assert!(Config::from_toml(Path::new("t"), &own_ca).is_ok());
        let shared = Config::from_toml(Path::new("t"), MINIMAL);
        if crate::tls::server::FIPS {
            let e = shared.expect_err("a FIPS build accepted trust = [\"cloudflare\"]");
            assert_eq!(e.key, "client_auth.trust");
            assert!(e.message.contains("FIPS"), "{}", e.message);
        } else {
            shared.expect("not a FIPS build");
        }
    }

    #[test]
    #[cfg_attr(
        feature = "fips",
        ignore = "relies on the default trust = [\"cloudflare\"], which a FIPS build refuses"
    )]
    fn upstream_tls_keys() {
        let https = MINIMAL.replace(
            "[upstream]",
            "[upstream]\nca = [\"ca.pem\"]\nserver_name = \"app.internal\"",
        );
        let https = https.replace("http://", "https://");
        let c = Config::from_toml(Path::new("/etc/og.toml"), &https).expect("https upstream");
        assert_eq!(c.upstream.protocol, UpstreamProtocol::Alpn);
        assert_eq!(c.upstream.tls.ca, vec![PathBuf::from("ca.pem")]);
        assert_eq!(c.upstream.tls.server_name.as_deref(), Some("app.internal"));

        let plain = MINIMAL.replace("[upstream]", "[upstream]\nca = [\"ca.pem\"]");
        let e = Config::from_toml(Path::new("/etc/og.toml"), &plain).expect_err("ca on http");
        assert_eq!(e.key, "upstream.ca");
        let h2c = https.replace("[upstream]", "[upstream]\nprotocol = \"h2c\"");
        let e = Config::from_toml(Path::new("/etc/og.toml"), &h2c).expect_err("h2c on https");
        assert_eq!(e.key, "upstream.protocol");
        // They are files a reload re-reads, so the watcher follows them.
        let with_client = https.replace(
            "[upstream]",
            "[upstream]\nclient_certificate = \"c.pem\"\nclient_key = \"c.key\"",
        );
        let files = Config::from_toml(Path::new("/etc/og.toml"), &with_client)
            .expect("valid")
            .files();
        for f in ["ca.pem", "c.pem", "c.key"] {
            assert!(files.contains(&PathBuf::from(f)), "{f} not watched: {files:?}");
        }
        let half = https.replace("[upstream]", "[upstream]\nclient_certificate = \"c.pem\"");
        let e = Config::from_toml(Path::new("/etc/og.toml"), &half).expect_err("cert without key");
        assert_eq!(e.key, "upstream.client_key");
    }

    fn upstream_target(file: &Path, url: &str) -> Result<UpstreamTarget, ConfigError> {
        upstream_target_at(file, "upstream.url", url)
    }

    #[test]
    #[cfg_attr(
        feature = "fips",
        ignore = "relies on the default trust = [\"cloudflare\"], which a FIPS build refuses"
    )]
    fn enum_values_are_checked_by_serde_and_named_like_the_reference() {
        let text = MINIMAL.replace("[upstream]", "[headers]\nclient_cert = \"xfc\"\n[upstream]");
        let e = Config::from_toml(Path::new("t"), &text).expect_err("bad enum");
        assert_eq!(e.key, "headers.client_cert");
        assert!(
            e.message
                .starts_with(r#"unsupported value "xfc" (expected "xfcc", "rfc9440", "both", "none")"#),
            "{}",
            e.message
        );
        let text = MINIMAL.replace("[upstream]", "[log]\nformat = \"json\"\n[upstream]");
        assert_eq!(
            Config::from_toml(Path::new("t"), &text).map(|c| c.log.format).ok(),
            Some(LogFormat::Json)
        );
    }

    #[test]
    #[cfg_attr(
        feature = "fips",
        ignore = "relies on the default trust = [\"cloudflare\"], which a FIPS build refuses"
    )]
    fn the_interface_md_upstream_block_parses_as_written() {
        // INTERFACE.md's [upstream] example, unset TLS keys as "" and [], with both schemes.
        for url in ["http://127.0.0.1:8080", "https://app.internal:8443"] {
            let text = MINIMAL.replace(
                "url = \"http://127.0.0.1:8080\"",
                &format!(
                    "url = \"{url}\"\nca = []\nserver_name = \"\"\nclient_certificate = \"\"\nclient_key = \"\"\n\
                     connect_timeout = \"5s\"\nresponse_timeout = \"100s\"\nmax_idle_per_host = 64"
                ),
            );
            let c = Config::from_toml(Path::new("t"), &text).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(c.upstream.tls.client_certificate, None);
            assert_eq!(c.upstream.tls.server_name, None);
        }
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
        assert_eq!(
            upstream_target(p, "https://x").expect("https").to_string(),
            "https://x:443"
        );
        assert_eq!(upstream_target(p, "http://x").expect("http").to_string(), "http://x:80");
        assert!(upstream_target(p, "ftp://x:1").is_err());
        assert!(upstream_target(p, "https://u:p@x:1").is_err());
        assert!(upstream_target(p, "http://x:1/prefix").is_err());
        assert!(upstream_target(p, "unix:").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        for bad in ["", "s", "10", "-1s", "10 parsecs", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    #[cfg_attr(
        feature = "fips",
        ignore = "relies on the default trust = [\"cloudflare\"], which a FIPS build refuses"
    )]
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

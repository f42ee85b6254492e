//! `originguard cloudflare`: the Cloudflare side of Authenticated Origin Pulls, in the order that
//! cannot lock out your own traffic — the origin accepts first, then Cloudflare presents, and
//! only then does anything old go away.
//!
//! - `status`: the global toggle, the zone-level setting and certificates, per-hostname
//!   certificates and (with `--hostname`) their associations.
//! - `enable --global | --zone-cert CERT KEY | --hostname NAME --cert CERT --key KEY`: upload
//!   where needed, wait until the certificate is `active`, then turn the level on. Refuses
//!   unless the local config would accept the certificate Cloudflare will present (`--force`).
//! - `disable` the same levels.
//! - `rotate --cert CERT --key KEY [--hostname NAME]`: upload, wait until active, switch, then
//!   delete the old certificate(s) — never a moment without an active certificate.

pub mod api;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use http::Method;
use rustls::pki_types::UnixTime;
use serde_json::{json, Value};

use crate::audit::CertSummary;
use crate::config::Config;
use crate::tls::{load, PolicySet};
pub use api::Api;

/// Which AOP level a command acts on.
#[derive(Clone, Debug)]
pub enum Level {
    Global,
    /// Zone-level with your certificate (none for `disable`).
    Zone(Option<(PathBuf, PathBuf)>),
    /// Per-hostname with your certificate (none for `disable`).
    Hostname(String, Option<(PathBuf, PathBuf)>),
}

/// Options shared by the commands.
pub struct Session {
    pub api: Api,
    pub zone: String,
    pub json: bool,
    /// Longest wait for a certificate to become active.
    pub wait: Duration,
    pub poll_interval: Duration,
}

/// The zone's post-quantum key agreement towards the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PqSetting {
    /// Cloudflare sends an X25519 share and advertises X25519MLKEM768 (its default): an origin
    /// with `tls.key_exchange = "hybrid-preferred"` gets the hybrid by HelloRetryRequest.
    Supported,
    /// Cloudflare sends the hybrid share first.
    Preferred,
    /// Never.
    Off,
}

impl PqSetting {
    fn as_str(self) -> &'static str {
        match self {
            PqSetting::Supported => "supported",
            PqSetting::Preferred => "preferred",
            PqSetting::Off => "off",
        }
    }
}

/// `cloudflare pq status` and `cloudflare pq set`: the zone setting
/// `origin_post_quantum_encryption` (`GET`/`PUT /zones/{zone}/cache/origin_post_quantum_encryption`).
pub async fn pq(cx: &Session, set: Option<PqSetting>) -> anyhow::Result<()> {
    let path = format!("/zones/{}/cache/origin_post_quantum_encryption", cx.zone);
    let current = cx.api.call(Method::GET, &path, None).await?;
    let value = current
        .get("value")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let Some(wanted) = set else {
        match cx.json {
            true => println!("{}", serde_json::json!({ "origin_post_quantum_encryption": value })),
            false => println!("post-quantum key agreement to the origin (origin_post_quantum_encryption): {value}"),
        }
        return Ok(());
    };
    if value == wanted.as_str() {
        println!("origin_post_quantum_encryption is already {value}");
        return Ok(());
    }
    cx.api
        .call(
            Method::PUT,
            &path,
            Some(serde_json::json!({ "value": wanted.as_str() })),
        )
        .await?;
    match cx.api.dry_run() {
        true => println!(
            "dry-run: would set origin_post_quantum_encryption from {value} to {}",
            wanted.as_str()
        ),
        false => println!("origin_post_quantum_encryption: {value} -> {}", wanted.as_str()),
    }
    Ok(())
}

/// `cloudflare status`.
pub async fn status(cx: &Session, hostnames: &[String]) -> anyhow::Result<()> {
    let z = &cx.zone;
    let global = cx
        .api
        .call(Method::GET, &format!("/zones/{z}/settings/tls_client_auth"), None)
        .await?;
    let zone_settings = cx
        .api
        .call(
            Method::GET,
            &format!("/zones/{z}/origin_tls_client_auth/settings"),
            None,
        )
        .await?;
    let zone_certs = cx
        .api
        .call(Method::GET, &format!("/zones/{z}/origin_tls_client_auth"), None)
        .await?;
    let host_certs = cx
        .api
        .call(
            Method::GET,
            &format!("/zones/{z}/origin_tls_client_auth/hostnames/certificates"),
            None,
        )
        .await?;
    let mut associations = Vec::new();
    for hostname in hostnames {
        associations.push(
            cx.api
                .call(
                    Method::GET,
                    &format!("/zones/{z}/origin_tls_client_auth/hostnames/{hostname}"),
                    None,
                )
                .await?,
        );
    }
    if cx.json {
        let out = json!({
            "zone": z,
            "global": global.get("value"),
            "zone_level": { "enabled": zone_settings.get("enabled"), "certificates": zone_certs },
            "per_hostname": { "certificates": host_certs, "hostnames": associations },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("zone {z}");
    println!("global AOP (Cloudflare certificate): {}", text(global.get("value")));
    println!("zone-level AOP: {}", on_off(zone_settings.get("enabled")));
    print_certificates("zone-level certificates", &zone_certs);
    print_certificates("per-hostname certificates", &host_certs);
    for a in &associations {
        println!(
            "hostname {}: {} (certificate {}, status {})",
            text(a.get("hostname")),
            on_off(a.get("enabled")),
            text(a.get("cert_id")),
            text(a.get("status")),
        );
    }
    Ok(())
}

/// `cloudflare enable`.
pub async fn enable(cx: &Session, level: &Level, config: &Path, force: bool) -> anyhow::Result<()> {
    let z = &cx.zone;
    match level {
        Level::Global => {
            guard(config, force, None, &GuardCert::CloudflareShared)?;
            set_global(cx, true).await
        }
        Level::Zone(Some((cert, key))) => {
            guard(config, force, None, &GuardCert::File(cert.clone()))?;
            let id = upload(cx, &format!("/zones/{z}/origin_tls_client_auth"), cert, key).await?;
            wait_active(cx, &format!("/zones/{z}/origin_tls_client_auth/{id}"), &id).await?;
            set_zone(cx, true).await
        }
        Level::Hostname(hostname, Some((cert, key))) => {
            guard(config, force, Some(hostname), &GuardCert::File(cert.clone()))?;
            let base = format!("/zones/{z}/origin_tls_client_auth/hostnames/certificates");
            let id = upload(cx, &base, cert, key).await?;
            wait_active(cx, &format!("{base}/{id}"), &id).await?;
            associate(cx, hostname, &id, true).await
        }
        Level::Zone(None) | Level::Hostname(_, None) => {
            bail!("enable needs the certificate and key Cloudflare will present")
        }
    }
}

/// `cloudflare disable`.
pub async fn disable(cx: &Session, level: &Level) -> anyhow::Result<()> {
    match level {
        Level::Global => set_global(cx, false).await,
        Level::Zone(_) => set_zone(cx, false).await,
        Level::Hostname(hostname, _) => {
            let current = cx
                .api
                .call(
                    Method::GET,
                    &format!("/zones/{}/origin_tls_client_auth/hostnames/{hostname}", cx.zone),
                    None,
                )
                .await?;
            let id = current.get("cert_id").and_then(Value::as_str).unwrap_or("").to_string();
            associate(cx, hostname, &id, false).await
        }
    }
}

/// `cloudflare rotate`: upload, wait until active, switch, delete the old certificate(s).
pub async fn rotate(
    cx: &Session,
    hostname: Option<&str>,
    cert: &Path,
    key: &Path,
    config: &Path,
    force: bool,
) -> anyhow::Result<()> {
    let z = &cx.zone;
    guard(config, force, hostname, &GuardCert::File(cert.to_path_buf()))?;
    let base = match hostname {
        Some(_) => format!("/zones/{z}/origin_tls_client_auth/hostnames/certificates"),
        None => format!("/zones/{z}/origin_tls_client_auth"),
    };
    // What is there now: for a hostname, the associated certificate; for the zone, every
    // uploaded certificate (the newest active one is presented).
    let old: Vec<String> = match hostname {
        Some(h) => {
            let current = cx
                .api
                .call(
                    Method::GET,
                    &format!("/zones/{z}/origin_tls_client_auth/hostnames/{h}"),
                    None,
                )
                .await?;
            current
                .get("cert_id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .into_iter()
                .collect()
        }
        None => ids(&cx.api.call(Method::GET, &base, None).await?),
    };
    let id = upload(cx, &base, cert, key).await?;
    wait_active(cx, &format!("{base}/{id}"), &id).await?;
    if let Some(h) = hostname {
        associate(cx, h, &id, true).await?;
    }
    for old_id in old.iter().filter(|old_id| **old_id != id) {
        cx.api.call(Method::DELETE, &format!("{base}/{old_id}"), None).await?;
        say(cx, &format!("deleted the old certificate {old_id}"));
    }
    say(cx, &format!("rotated: certificate {id} is active"));
    Ok(())
}

async fn set_global(cx: &Session, on: bool) -> anyhow::Result<()> {
    let value = if on { "on" } else { "off" };
    cx.api
        .call(
            Method::PATCH,
            &format!("/zones/{}/settings/tls_client_auth", cx.zone),
            Some(json!({ "value": value })),
        )
        .await?;
    say(cx, &format!("global Authenticated Origin Pulls: {value}"));
    Ok(())
}

async fn set_zone(cx: &Session, enabled: bool) -> anyhow::Result<()> {
    cx.api
        .call(
            Method::PUT,
            &format!("/zones/{}/origin_tls_client_auth/settings", cx.zone),
            Some(json!({ "enabled": enabled })),
        )
        .await?;
    say(
        cx,
        &format!(
            "zone-level Authenticated Origin Pulls: {}",
            if enabled { "enabled" } else { "disabled" }
        ),
    );
    Ok(())
}

async fn associate(cx: &Session, hostname: &str, cert_id: &str, enabled: bool) -> anyhow::Result<()> {
    cx.api
        .call(
            Method::PUT,
            &format!("/zones/{}/origin_tls_client_auth/hostnames", cx.zone),
            Some(json!({ "config": [{ "hostname": hostname, "cert_id": cert_id, "enabled": enabled }] })),
        )
        .await?;
    say(
        cx,
        &format!(
            "per-hostname Authenticated Origin Pulls for {hostname}: {}",
            if enabled { "enabled" } else { "disabled" }
        ),
    );
    Ok(())
}

/// Uploads a certificate and key; returns the new certificate's id.
async fn upload(cx: &Session, path: &str, cert: &Path, key: &Path) -> anyhow::Result<String> {
    let certificate = std::fs::read_to_string(cert).with_context(|| format!("{}: cannot read", cert.display()))?;
    let private_key = std::fs::read_to_string(key).with_context(|| format!("{}: cannot read", key.display()))?;
    // The same checks the proxy applies to its own files, before anything is sent.
    load::certificates(cert)?;
    load::private_key(key)?;
    let body = json!({ "certificate": certificate, "private_key": private_key });
    let result = match cx.api.call(Method::POST, path, Some(body.clone())).await {
        Ok(result) => result,
        // A 4xx was refused; a lost answer or a 5xx may have been applied. Look before trying
        // again, so the certificate is never uploaded twice.
        Err(error) if !maybe_applied(&error) => return Err(error),
        Err(error) => {
            say(
                cx,
                &format!("the upload failed ({error:#}); checking whether it arrived"),
            );
            let listed = cx.api.call(Method::GET, path, None).await.with_context(|| {
                format!("after a failed upload ({error:#}), listing the certificates to check for it failed too")
            })?;
            match find_certificate(&listed, &certificate) {
                Some(found) => {
                    say(cx, "it did: using the uploaded certificate");
                    found
                }
                None => {
                    say(cx, "it did not: uploading once more");
                    cx.api.call(Method::POST, path, Some(body)).await?
                }
            }
        }
    };
    if cx.api.dry_run() {
        return Ok("<id of the uploaded certificate>".into());
    }
    let id = result
        .get("id")
        .and_then(Value::as_str)
        .context("Cloudflare returned no certificate id")?
        .to_string();
    say(
        cx,
        &format!("uploaded certificate {id} (status {})", text(result.get("status"))),
    );
    Ok(id)
}

/// Whether a failed write may have been applied: no answer, or a 5xx (a 4xx was refused).
fn maybe_applied(error: &anyhow::Error) -> bool {
    error.downcast_ref::<api::ApiError>().is_none_or(|e| e.status >= 500)
}

/// The listed certificate (a `result` array) whose PEM is `pem`, compared by content.
fn find_certificate(listed: &Value, pem: &str) -> Option<Value> {
    let der = |text: &str| -> Option<Vec<u8>> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::pem_slice_iter(text.as_bytes())
            .next()?
            .ok()
            .map(|c| c.to_vec())
    };
    let wanted = der(pem)?;
    listed
        .as_array()?
        .iter()
        .find(|c| c.get("certificate").and_then(Value::as_str).and_then(der).as_ref() == Some(&wanted))
        .cloned()
}

/// `originguard cloudflare ips`: Cloudflare's current IP ranges (`GET /ips`, no token), printed
/// or written atomically to `out` (one CIDR a line) for `listener.allow_peers = ["file:..."]`.
pub async fn ips(api: &Api, out: Option<&std::path::Path>, json: bool) -> anyhow::Result<()> {
    let result = api.call(Method::GET, "/ips", None).await?;
    let mut ranges = Vec::new();
    for key in ["ipv4_cidrs", "ipv6_cidrs"] {
        for cidr in result[key].as_array().map(Vec::as_slice).unwrap_or_default() {
            let cidr = cidr.as_str().unwrap_or_default();
            crate::peers::IpNet::parse(cidr).map_err(|e| anyhow::anyhow!("/ips: {e}"))?;
            ranges.push(cidr.to_string());
        }
    }
    if ranges.is_empty() {
        anyhow::bail!("/ips: no ranges in the answer");
    }
    match out {
        Some(path) => {
            let mut text = format!(
                "# Cloudflare IP ranges (GET /ips), written by originguard cloudflare ips on {}\n",
                time::OffsetDateTime::now_utc().date()
            );
            for range in &ranges {
                text.push_str(range);
                text.push('\n');
            }
            // Written beside the target and renamed over it: a reload never reads half a file.
            let tmp = path.with_file_name(format!(
                ".{}.tmp",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("cloudflare-ips")
            ));
            std::fs::write(&tmp, text).with_context(|| format!("{}: cannot write", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot replace", path.display()))?;
            println!("wrote {} ranges to {}", ranges.len(), path.display());
        }
        None if json => println!("{}", serde_json::json!({ "ranges": ranges })),
        None => {
            for range in &ranges {
                println!("{range}");
            }
        }
    }
    Ok(())
}

/// Polls a certificate until `active`, bounded by `cx.wait`.
async fn wait_active(cx: &Session, path: &str, id: &str) -> anyhow::Result<()> {
    if cx.api.dry_run() {
        println!("dry-run: wait until {id} is active (GET {path})");
        return Ok(());
    }
    let started = Instant::now();
    loop {
        let cert = cx.api.call(Method::GET, path, None).await?;
        let status = cert
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        match status.as_str() {
            "active" => {
                say(cx, &format!("certificate {id} is active"));
                return Ok(());
            }
            "pending_deployment" | "initializing" | "pending_validation" | "pending_issuance" => {}
            other => bail!("certificate {id} is {other}, not becoming active; nothing was switched"),
        }
        if started.elapsed() >= cx.wait {
            bail!(
                "certificate {id} still {status} after {:?}; nothing was switched",
                cx.wait
            );
        }
        say(
            cx,
            &format!(
                "waiting for certificate {id}: {status} ({:.0} s)",
                started.elapsed().as_secs_f64()
            ),
        );
        tokio::time::sleep(cx.poll_interval).await;
    }
}

/// What Cloudflare will present after the command.
enum GuardCert {
    /// The global AOP certificate, issued by the embedded origin-pull CA.
    CloudflareShared,
    File(PathBuf),
}

/// The lock-out guard: refuse unless the local config (the policy that will receive the
/// connections) would accept the certificate Cloudflare is about to present.
fn guard(config_path: &Path, force: bool, hostname: Option<&str>, cert: &GuardCert) -> anyhow::Result<()> {
    let verdict = (|| -> anyhow::Result<Result<(), String>> {
        let config = Config::load(config_path)?;
        let policies = PolicySet::build(&config)?;
        let policy = policies.select(hostname).1;
        let verdict = match cert {
            GuardCert::CloudflareShared => {
                let cloudflare = load::cloudflare_ca();
                match policy.cas.iter().any(|ca| {
                    cloudflare
                        .iter()
                        .any(|cf| cf.anchor.subject_public_key_info == ca.anchor.subject_public_key_info)
                }) {
                    true => Ok(()),
                    false => Err(format!(
                        "{} policy {} does not trust the Cloudflare origin-pull CA: add \"cloudflare\" to its \
                         client_auth.trust and reload originguard first",
                        config_path.display(),
                        policy.name
                    )),
                }
            }
            GuardCert::File(path) => {
                let chain = load::certificates(path)?;
                match policy.verifier.verify(&chain[0], &chain[1..], UnixTime::now()) {
                    Ok(_) => Ok(()),
                    Err((reason, error)) => Err(format!(
                        "{} policy {} would refuse {} (issuer {}): {reason}: {error}. Add the CA that issued it \
                         to client_auth.trust{} and reload originguard first",
                        config_path.display(),
                        policy.name,
                        path.display(),
                        issuer(&chain[0]),
                        hostname.map_or(String::new(), |h| format!(" of the [[hosts]] table for {h}")),
                    )),
                }
            }
        };
        Ok(verdict)
    })();
    match (verdict, force) {
        (Ok(Ok(())), _) => Ok(()),
        (Ok(Err(reason)), false) => {
            bail!("refusing: enabling this would lock out Cloudflare's requests. {reason}. (--force to do it anyway)")
        }
        (Err(error), false) => Err(error.context(format!(
            "cannot check {} before enabling (--config PATH, or --force)",
            config_path.display()
        ))),
        (Ok(Err(reason)), true) => {
            eprintln!("warning: --force: {reason}");
            Ok(())
        }
        (Err(error), true) => {
            eprintln!("warning: --force: local config not checked: {error:#}");
            Ok(())
        }
    }
}

fn issuer(der: &rustls::pki_types::CertificateDer<'_>) -> String {
    use x509_parser::prelude::FromDer;
    x509_parser::certificate::X509Certificate::from_der(der.as_ref())
        .map(|(_, c)| crate::tls::identity::rfc4514(c.issuer()))
        .unwrap_or_else(|_| CertSummary::of(der).subject)
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn print_certificates(title: &str, list: &Value) {
    let items = list.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("{title}: none");
        return;
    }
    println!("{title}:");
    println!("  {:<38} {:<20} {:<22} issuer", "id", "status", "expires_on");
    for c in items {
        println!(
            "  {:<38} {:<20} {:<22} {}",
            text(c.get("id")),
            text(c.get("status")),
            text(c.get("expires_on")),
            text(c.get("issuer"))
        );
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

fn on_off(value: Option<&Value>) -> &'static str {
    match value.and_then(Value::as_bool) {
        Some(true) => "enabled",
        Some(false) => "disabled",
        None => "unknown",
    }
}

/// A progress line on stderr (not with --json). In a dry run nothing happened, and the line
/// says so.
fn say(cx: &Session, line: &str) {
    use std::io::Write;
    if !cx.json {
        let _ = match cx.api.dry_run() {
            true => writeln!(std::io::stderr(), "dry-run, would: {line}"),
            false => writeln!(std::io::stderr(), "{line}"),
        };
    }
}

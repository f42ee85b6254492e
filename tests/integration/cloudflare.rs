//! `originguard cloudflare` and `pki custom-ca` / `pki client`, against an in-process fake of
//! Cloudflare's documented API (envelopes, `pending_deployment` -> `active`, 429s, permission
//! errors). Drives the real binary; asserts the calls made, their order, and that the token
//! never shows up in output.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::support::*;

const TOKEN: &str = "tok-SECRET-5f2d9c";
const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";

#[derive(Default)]
struct State {
    calls: Vec<(String, String)>,
    global: String,
    zone_enabled: bool,
    /// id -> (status, polls left before active)
    zone_certs: Vec<(String, String, u32)>,
    host_certs: Vec<(String, String, u32)>,
    associations: HashMap<String, (String, bool)>,
    next_id: u32,
    /// Respond 429 to this many requests first.
    busy: u32,
    /// Refuse writes to zone settings with a permission error.
    deny_settings: bool,
    uploaded_keys: Vec<String>,
    /// origin_post_quantum_encryption
    pq: String,
    /// Seconds sent in Retry-After with the busy answers.
    retry_after: Option<u64>,
    /// Answer this many POSTs with 503 without applying them.
    failing_posts: u32,
    /// Apply this many POSTs, then answer 503 (the answer to an upload lost on the way back).
    lost_answers: u32,
    /// Uploaded certificate PEMs by id, listed as Cloudflare lists them.
    pems: HashMap<String, String>,
}

struct FakeCloudflare {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCloudflare {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeCloudflare {
    async fn start(setup: impl FnOnce(&mut State)) -> FakeCloudflare {
        let mut state = State {
            global: "off".into(),
            pq: "supported".into(),
            ..State::default()
        };
        setup(&mut state);
        let state = Arc::new(Mutex::new(state));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |r| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(handle(r, &s).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeCloudflare { addr, state, task }
    }

    fn base(&self) -> String {
        format!("http://{}/client/v4", self.addr)
    }

    fn calls(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("lock")
            .calls
            .iter()
            .map(|(m, p)| format!("{m} {}", p.trim_start_matches(&format!("/client/v4/zones/{ZONE}"))))
            .collect()
    }

    fn writes(&self) -> Vec<String> {
        self.calls().into_iter().filter(|c| !c.starts_with("GET")).collect()
    }
}

fn envelope(status: StatusCode, result: Value) -> Response<Full<Bytes>> {
    let body = if status.is_success() {
        json!({ "success": true, "errors": [], "messages": [], "result": result })
    } else {
        json!({ "success": false, "errors": result, "messages": [], "result": null })
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}

/// A list entry: with the certificate's PEM, as Cloudflare's list endpoints return it.
fn listed(id: &str, status: &str, pems: &HashMap<String, String>) -> Value {
    let mut entry = cert_json(id, status);
    if let Some(pem) = pems.get(id) {
        entry["certificate"] = Value::String(pem.clone());
    }
    entry
}

fn cert_json(id: &str, status: &str) -> Value {
    json!({ "id": id, "status": status, "issuer": "CN=customer CA", "expires_on": "2027-11-01T00:00:00Z",
            "signature": "ECDSAWithSHA256", "uploaded_on": "2026-11-27T00:00:00Z" })
}

async fn handle(request: Request<Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let auth = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value =
        serde_json::from_slice(&request.into_body().collect().await.expect("body").to_bytes()).unwrap_or(Value::Null);
    let mut s = state.lock().expect("lock");
    s.calls.push((method.to_string(), path.clone()));
    if s.busy > 0 {
        s.busy -= 1;
        let mut answer = envelope(
            StatusCode::TOO_MANY_REQUESTS,
            json!([{ "code": 10429, "message": "rate limited" }]),
        );
        if let Some(seconds) = s.retry_after {
            answer
                .headers_mut()
                .insert("retry-after", http::HeaderValue::from(seconds));
        }
        return answer;
    }
    if method == Method::POST && s.failing_posts > 0 {
        s.failing_posts -= 1;
        return envelope(
            StatusCode::SERVICE_UNAVAILABLE,
            json!([{ "code": 10503, "message": "upstream unavailable" }]),
        );
    }
    // The one endpoint that needs no token.
    if method == Method::GET && path == "/client/v4/ips" {
        return envelope(
            StatusCode::OK,
            json!({ "ipv4_cidrs": ["173.245.48.0/20", "103.21.244.0/22"], "ipv6_cidrs": ["2400:cb00::/32"] }),
        );
    }
    if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        return envelope(
            StatusCode::FORBIDDEN,
            json!([{ "code": 10000, "message": "Authentication error" }]),
        );
    }
    let Some(rest) = path.strip_prefix(&format!("/client/v4/zones/{ZONE}")) else {
        return envelope(
            StatusCode::NOT_FOUND,
            json!([{ "code": 7003, "message": "Could not route" }]),
        );
    };
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (method.clone(), parts.as_slice()) {
        (Method::GET, ["cache", "origin_post_quantum_encryption"]) => envelope(
            StatusCode::OK,
            json!({ "id": "origin_post_quantum_encryption", "value": s.pq }),
        ),
        (Method::PUT, ["cache", "origin_post_quantum_encryption"]) => {
            match body["value"].as_str() {
                Some(v @ ("supported" | "preferred" | "off")) => s.pq = v.to_string(),
                _ => {
                    return envelope(
                        StatusCode::BAD_REQUEST,
                        json!([{ "code": 1007, "message": "invalid value" }]),
                    )
                }
            }
            envelope(
                StatusCode::OK,
                json!({ "id": "origin_post_quantum_encryption", "value": s.pq }),
            )
        }
        (Method::GET, ["settings", "tls_client_auth"]) => envelope(
            StatusCode::OK,
            json!({ "id": "tls_client_auth", "value": s.global, "editable": true }),
        ),
        (Method::PATCH, ["settings", "tls_client_auth"]) => {
            s.global = body["value"].as_str().unwrap_or("").to_string();
            envelope(StatusCode::OK, json!({ "id": "tls_client_auth", "value": s.global }))
        }
        (Method::GET, ["origin_tls_client_auth", "settings"]) => {
            envelope(StatusCode::OK, json!({ "enabled": s.zone_enabled }))
        }
        (Method::PUT, ["origin_tls_client_auth", "settings"]) => {
            if s.deny_settings {
                return envelope(
                    StatusCode::FORBIDDEN,
                    json!([{ "code": 9109, "message": "Unauthorized to access requested resource" }]),
                );
            }
            s.zone_enabled = body["enabled"].as_bool().unwrap_or(false);
            envelope(StatusCode::OK, json!({ "enabled": s.zone_enabled }))
        }
        (Method::PUT, ["origin_tls_client_auth", "hostnames"]) => {
            let mut out = Vec::new();
            for c in body["config"].as_array().cloned().unwrap_or_default() {
                let host = c["hostname"].as_str().unwrap_or("").to_string();
                let id = c["cert_id"].as_str().unwrap_or("").to_string();
                let enabled = c["enabled"].as_bool().unwrap_or(false);
                s.associations.insert(host.clone(), (id.clone(), enabled));
                out.push(json!({ "hostname": host, "cert_id": id, "enabled": enabled, "status": "active" }));
            }
            envelope(StatusCode::OK, Value::Array(out))
        }
        (Method::GET, ["origin_tls_client_auth", "hostnames", "certificates"]) => {
            let list: Vec<Value> = s.host_certs.iter().map(|(id, st, _)| listed(id, st, &s.pems)).collect();
            envelope(StatusCode::OK, Value::Array(list))
        }
        (Method::GET, ["origin_tls_client_auth", "hostnames", host]) => match s.associations.get(*host) {
            Some((id, enabled)) => envelope(
                StatusCode::OK,
                json!({ "hostname": host, "cert_id": id, "enabled": enabled, "status": "active" }),
            ),
            None => envelope(
                StatusCode::NOT_FOUND,
                json!([{ "code": 1551, "message": "hostname not found" }]),
            ),
        },
        (Method::GET, ["origin_tls_client_auth"]) => {
            let list: Vec<Value> = s.zone_certs.iter().map(|(id, st, _)| listed(id, st, &s.pems)).collect();
            envelope(StatusCode::OK, Value::Array(list))
        }
        (Method::POST, ["origin_tls_client_auth"])
        | (Method::POST, ["origin_tls_client_auth", "hostnames", "certificates"]) => {
            if !body["certificate"].as_str().unwrap_or("").contains("BEGIN CERTIFICATE") {
                return envelope(
                    StatusCode::BAD_REQUEST,
                    json!([{ "code": 1402, "message": "invalid certificate" }]),
                );
            }
            s.uploaded_keys
                .push(body["private_key"].as_str().unwrap_or("").to_string());
            s.next_id += 1;
            let hostname = parts.len() > 1;
            let id = format!("{}-cert-{}", if hostname { "host" } else { "zone" }, s.next_id);
            let entry = (id.clone(), "pending_deployment".to_string(), 2);
            match hostname {
                true => s.host_certs.push(entry),
                false => s.zone_certs.push(entry),
            }
            let pem = body["certificate"].as_str().unwrap_or("").to_string();
            s.pems.insert(id.clone(), pem);
            if s.lost_answers > 0 {
                s.lost_answers -= 1;
                return envelope(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!([{ "code": 10503, "message": "upstream unavailable" }]),
                );
            }
            envelope(StatusCode::OK, cert_json(&id, "pending_deployment"))
        }
        (m, ["origin_tls_client_auth", id]) | (m, ["origin_tls_client_auth", "hostnames", "certificates", id]) => {
            let id = id.to_string();
            let list = if parts.len() > 2 {
                &mut s.host_certs
            } else {
                &mut s.zone_certs
            };
            let Some(index) = list.iter().position(|(i, _, _)| *i == id) else {
                return envelope(
                    StatusCode::NOT_FOUND,
                    json!([{ "code": 1404, "message": "certificate not found" }]),
                );
            };
            match m {
                Method::GET => {
                    let entry = &mut list[index];
                    if entry.2 == 0 {
                        entry.1 = "active".into();
                    } else {
                        entry.2 -= 1;
                    }
                    envelope(StatusCode::OK, cert_json(&entry.0, &entry.1))
                }
                Method::DELETE => {
                    list.remove(index);
                    envelope(StatusCode::OK, json!({ "id": id }))
                }
                _ => envelope(
                    StatusCode::METHOD_NOT_ALLOWED,
                    json!([{ "code": 1000, "message": "method" }]),
                ),
            }
        }
        _ => envelope(
            StatusCode::NOT_FOUND,
            json!([{ "code": 7003, "message": "Could not route" }]),
        ),
    }
}

/// Runs `originguard cloudflare ARGS --zone ZONE --api-base BASE` with the token in the
/// environment; returns (exit code, stdout, stderr) after checking the token is in neither.
async fn cf(fake: &FakeCloudflare, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
        .arg("cloudflare")
        .args(args)
        .args(["--zone", ZONE, "--api-base", &fake.base()])
        // Only the commands that change something wait for certificates (status takes no such flags).
        .args(match args.iter().take(2).any(|a| *a == "status") {
            true => &[][..],
            false => &["--poll-interval", "20ms", "--wait", "10s"][..],
        })
        .env("CLOUDFLARE_API_TOKEN", TOKEN)
        .env("RUST_LOG", "trace")
        .output()
        .await
        .expect("run");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
        "the token leaked:\n{stdout}\n{stderr}"
    );
    (out.status.code(), stdout, stderr)
}

/// A customer CA and a client certificate from it (via the real `pki` commands), and a local
/// config that trusts the CA (or Cloudflare's CA).
struct Customer {
    fx: Fixture,
    dir: std::path::PathBuf,
    configs: std::sync::atomic::AtomicUsize,
}

impl Customer {
    async fn new() -> Customer {
        let fx = Fixture::new();
        let dir = fx.dir.path().join("aop");
        let run = |args: Vec<String>| async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
                .args(args)
                .output()
                .await
                .expect("run");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let d = dir.display().to_string();
        let printed = run(vec![
            "pki".into(),
            "custom-ca".into(),
            "--out".into(),
            format!("{d}/ca"),
            "--key-type".into(),
            "p256".into(),
        ])
        .await;
        assert!(
            printed.contains(&format!(
                "trust = [\"{}",
                std::fs::canonicalize(format!("{d}/ca")).expect("dir").display()
            )),
            "{printed}"
        );
        run(vec![
            "pki".into(),
            "client".into(),
            "--ca".into(),
            format!("{d}/ca"),
            "--out".into(),
            format!("{d}/client"),
        ])
        .await;
        Customer {
            fx,
            dir,
            configs: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn cert(&self) -> String {
        self.dir.join("client/client.pem").display().to_string()
    }

    fn key(&self) -> String {
        self.dir.join("client/client.key").display().to_string()
    }

    /// Writes a config whose default policy trusts `trust` (and a [[hosts]] table for
    /// app.example that trusts `host_trust`); returns its path.
    fn config(&self, trust: &str, host_trust: &str) -> String {
        let name = format!(
            "guard-{}.toml",
            self.configs.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.fx
            .toml("http://127.0.0.1:9")
            .set("client_auth", format!("trust = [{trust}]"))
            .append(&format!(
                "[[hosts]]\nserver_names = [\"app.example\"]\n[hosts.client_auth]\ntrust = [{host_trust}]"
            ))
            .write(&self.fx.path(&name))
            .display()
            .to_string()
    }

    fn ca_pem(&self) -> String {
        format!("\"{}\"", self.dir.join("ca/ca.pem").display())
    }
}

#[tokio::test]
async fn pki_custom_ca_and_client_make_a_depth_1_pair_and_never_overwrite_a_ca() {
    let c = Customer::new().await;
    let ca = std::fs::read_to_string(c.dir.join("ca/ca.pem")).expect("ca");
    let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca.as_bytes()).expect("der");
    let ca_cert = x509_parser::parse_x509_certificate(&ca_der as &rustls::pki_types::CertificateDer)
        .expect("x509")
        .1;
    assert!(ca_cert.is_ca());
    // The client leaf verifies directly under a policy that trusts the CA.
    let config =
        originguard::config::Config::load(std::path::Path::new(&c.config(&c.ca_pem(), &c.ca_pem()))).expect("config");
    let policies = originguard::tls::PolicySet::build(&config).expect("policies");
    let chain = originguard::tls::load::certificates(std::path::Path::new(&c.cert())).expect("client");
    assert_eq!(chain.len(), 1);
    assert!(policies
        .default
        .verifier
        .verify(&chain[0], &[], rustls::pki_types::UnixTime::now())
        .is_ok());
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
        .args(["pki", "custom-ca", "--out", c.dir.join("ca").to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
}

#[tokio::test]
async fn status_shows_every_level_as_text_and_json() {
    let fake = FakeCloudflare::start(|s| {
        s.global = "on".into();
        s.zone_enabled = true;
        s.zone_certs.push(("zone-cert-1".into(), "active".into(), 0));
        s.host_certs.push(("host-cert-9".into(), "active".into(), 0));
        s.associations
            .insert("app.example".into(), ("host-cert-9".into(), true));
    })
    .await;
    let (code, out, err) = cf(&fake, &["status", "--hostname", "app.example"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("global AOP (Cloudflare certificate): on"), "{out}");
    assert!(out.contains("zone-level AOP: enabled"), "{out}");
    assert!(
        out.contains("zone-cert-1") && out.contains("host-cert-9") && out.contains("2027-11-01"),
        "{out}"
    );
    assert!(
        out.contains("hostname app.example: enabled (certificate host-cert-9, status active)"),
        "{out}"
    );
    let (code, out, _) = cf(&fake, &["status", "--json"]).await;
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["global"], "on");
    assert_eq!(v["zone_level"]["certificates"][0]["id"], "zone-cert-1");
    assert!(
        fake.writes().is_empty(),
        "status changed something: {:?}",
        fake.writes()
    );
}

#[tokio::test]
async fn enable_global_only_when_the_origin_trusts_cloudflares_ca() {
    let c = Customer::new().await;
    let fake = FakeCloudflare::start(|_| {}).await;
    let untrusting = c.config(&c.ca_pem(), &c.ca_pem());
    let (code, _, err) = cf(&fake, &["enable", "--global", "--config", &untrusting]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("refusing") && err.contains("does not trust the Cloudflare origin-pull CA"),
        "{err}"
    );
    assert!(fake.writes().is_empty());

    let trusting = c.config("\"cloudflare\"", "\"cloudflare\"");
    let (code, _, err) = cf(&fake, &["enable", "--global", "--config", &trusting]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(fake.writes(), vec!["PATCH /settings/tls_client_auth"]);
    assert_eq!(fake.state.lock().expect("lock").global, "on");

    let (code, _, err) = cf(&fake, &["enable", "--global", "--config", &untrusting, "--force"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("warning: --force"));
}

#[tokio::test]
async fn enable_zone_level_uploads_waits_until_active_then_enables() {
    let c = Customer::new().await;
    let fake = FakeCloudflare::start(|_| {}).await;
    let config = c.config(&c.ca_pem(), &c.ca_pem());
    let (code, _, err) = cf(
        &fake,
        &["enable", "--zone-cert", &c.cert(), &c.key(), "--config", &config],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("waiting for certificate zone-cert-1: pending_deployment"),
        "{err}"
    );
    assert_eq!(
        fake.calls(),
        vec![
            "POST /origin_tls_client_auth",
            "GET /origin_tls_client_auth/zone-cert-1",
            "GET /origin_tls_client_auth/zone-cert-1",
            "GET /origin_tls_client_auth/zone-cert-1",
            "PUT /origin_tls_client_auth/settings",
        ]
    );
    let state = fake.state.lock().expect("lock");
    assert!(state.zone_enabled);
    assert!(state.uploaded_keys[0].contains("PRIVATE KEY"));
}

#[tokio::test]
async fn enable_per_hostname_checks_that_hosts_policy() {
    let c = Customer::new().await;
    let fake = FakeCloudflare::start(|_| {}).await;
    // The default policy trusts the customer CA, but app.example's [[hosts]] table does not.
    let wrong = c.config(&c.ca_pem(), "\"cloudflare\"");
    let (code, _, err) = cf(
        &fake,
        &[
            "enable",
            "--hostname",
            "app.example",
            "--cert",
            &c.cert(),
            "--key",
            &c.key(),
            "--config",
            &wrong,
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("policy hosts[0] would refuse") && err.contains("issuer CN=originguard origin-pull CA"),
        "{err}"
    );
    assert!(fake.writes().is_empty());

    let right = c.config("\"cloudflare\"", &c.ca_pem());
    let (code, _, err) = cf(
        &fake,
        &[
            "enable",
            "--hostname",
            "app.example",
            "--cert",
            &c.cert(),
            "--key",
            &c.key(),
            "--config",
            &right,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        fake.writes(),
        vec![
            "POST /origin_tls_client_auth/hostnames/certificates",
            "PUT /origin_tls_client_auth/hostnames"
        ]
    );
    assert_eq!(
        fake.state.lock().expect("lock").associations["app.example"],
        ("host-cert-1".to_string(), true)
    );

    let (code, _, err) = cf(&fake, &["disable", "--hostname", "app.example"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(!fake.state.lock().expect("lock").associations["app.example"].1);
}

#[tokio::test]
async fn rotate_switches_only_after_the_new_certificate_is_active_then_deletes_the_old() {
    let c = Customer::new().await;
    let config = c.config(&c.ca_pem(), &c.ca_pem());
    let fake = FakeCloudflare::start(|s| {
        s.zone_certs.push(("zone-cert-old".into(), "active".into(), 0));
        s.host_certs.push(("host-cert-old".into(), "active".into(), 0));
        s.associations
            .insert("app.example".into(), ("host-cert-old".into(), true));
    })
    .await;
    let (code, _, err) = cf(
        &fake,
        &["rotate", "--cert", &c.cert(), "--key", &c.key(), "--config", &config],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        fake.calls(),
        vec![
            "GET /origin_tls_client_auth",
            "POST /origin_tls_client_auth",
            "GET /origin_tls_client_auth/zone-cert-1",
            "GET /origin_tls_client_auth/zone-cert-1",
            "GET /origin_tls_client_auth/zone-cert-1",
            "DELETE /origin_tls_client_auth/zone-cert-old",
        ]
    );
    fake.state.lock().expect("lock").calls.clear();
    let (code, _, err) = cf(
        &fake,
        &[
            "rotate",
            "--hostname",
            "app.example",
            "--cert",
            &c.cert(),
            "--key",
            &c.key(),
            "--config",
            &config,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let calls = fake.calls();
    let switch = calls
        .iter()
        .position(|c| c == "PUT /origin_tls_client_auth/hostnames")
        .expect("switched");
    let active = calls
        .iter()
        .rposition(|c| c == "GET /origin_tls_client_auth/hostnames/certificates/host-cert-2")
        .expect("polled");
    let delete = calls
        .iter()
        .position(|c| c == "DELETE /origin_tls_client_auth/hostnames/certificates/host-cert-old")
        .expect("deleted");
    assert!(active < switch && switch < delete, "{calls:?}");
    assert_eq!(
        fake.state.lock().expect("lock").associations["app.example"].0,
        "host-cert-2"
    );
}

#[tokio::test]
async fn dry_run_sends_no_writes_and_redacts_the_key() {
    let c = Customer::new().await;
    let config = c.config(&c.ca_pem(), &c.ca_pem());
    let fake = FakeCloudflare::start(|_| {}).await;
    let (code, out, err) = cf(
        &fake,
        &[
            "enable",
            "--zone-cert",
            &c.cert(),
            &c.key(),
            "--config",
            &config,
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("dry-run: POST") && out.contains("/origin_tls_client_auth"),
        "{out}"
    );
    assert!(out.contains("\"private_key\":\"<redacted>\""), "{out}");
    assert!(
        out.contains("dry-run: PUT") && out.contains("{\"enabled\":true}"),
        "{out}"
    );
    assert!(!out.contains("PRIVATE KEY"), "{out}");
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
}

#[tokio::test]
async fn busy_answers_are_retried_and_errors_name_the_code_and_permission() {
    let fake = FakeCloudflare::start(|s| s.busy = 2).await;
    let (code, out, err) = cf(&fake, &["status"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("global AOP"));
    assert_eq!(
        fake.calls()
            .iter()
            .filter(|c| c.ends_with("/settings/tls_client_auth"))
            .count(),
        3
    );

    let c = Customer::new().await;
    let config = c.config("\"cloudflare\"", "\"cloudflare\"");
    let fake = FakeCloudflare::start(|s| s.deny_settings = true).await;
    let (code, _, err) = cf(&fake, &["disable", "--zone-level"]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cloudflare error 9109: Unauthorized to access requested resource"),
        "{err}"
    );
    assert!(err.contains("SSL and Certificates"), "{err}");
    let _ = config;

    // A wrong token: the envelope's error, and which permission is needed.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
        .args(["cloudflare", "status", "--zone", ZONE, "--api-base", &fake.base()])
        .env("CLOUDFLARE_API_TOKEN", "wrong")
        .output()
        .await
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cloudflare error 10000: Authentication error"), "{err}");
    assert!(err.contains("Zone Settings"), "{err}");
    // No token at all.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
        .args(["cloudflare", "status", "--zone", ZONE, "--api-base", &fake.base()])
        .env_remove("CLOUDFLARE_API_TOKEN")
        .output()
        .await
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("set CLOUDFLARE_API_TOKEN"));
}

#[tokio::test]
async fn https_api_bases_are_verified_against_the_system_trust_store() {
    // An HTTPS endpoint with a certificate from a private CA: refused, nothing sent in clear.
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
        .args(["cloudflare", "status", "--zone", ZONE])
        .args([
            "--api-base",
            &format!("https://localhost:{}/client/v4", proxy.addr.port()),
        ])
        .env("CLOUDFLARE_API_TOKEN", TOKEN)
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid peer certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    assert_eq!(backend.count(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn ips_are_fetched_without_a_token_and_written_for_allow_peers_file() {
    let fake = FakeCloudflare::start(|_| {}).await;
    let fx = Fixture::new();
    let out = fx.path("cloudflare-ips.txt");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
        .args([
            "cloudflare",
            "ips",
            "--api-base",
            &fake.base(),
            "--out",
            out.to_str().expect("utf-8"),
        ])
        .env_remove("CLOUDFLARE_API_TOKEN")
        .output()
        .await
        .expect("run");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(&out).expect("written");
    assert!(
        text.lines().any(|l| l == "173.245.48.0/20") && text.lines().any(|l| l == "2400:cb00::/32"),
        "{text}"
    );
    // The file is an allow_peers source: read and checked like the config.
    let config = |peers: &str| {
        fx.toml("http://127.0.0.1:9")
            .set("listener", format!("allow_peers = [\"{peers}\"]"))
            .text()
    };
    let check = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
            .args(["check", "--config", path.to_str().expect("utf-8")])
            .output()
            .expect("run")
    };
    let good = fx.write("good.toml", &config(&format!("file:{}", out.display())));
    let ok = check(&good);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("allow_peers: 3 networks"));
    let empty = fx.write("empty.txt", "# nothing yet\n");
    let bad = check(&fx.write("bad.toml", &config(&format!("file:{}", empty.display()))));
    assert_eq!(bad.status.code(), Some(78));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("listener.allow_peers[0]") && err.contains("would admit every peer"),
        "{err}"
    );
    assert_eq!(fake.calls(), vec!["GET /client/v4/ips".to_string()]);
}

#[tokio::test]
async fn pq_status_and_set_read_and_change_the_zone_setting() {
    let fake = FakeCloudflare::start(|_| {}).await;
    let (code, out, err) = cf(&fake, &["pq", "status", "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("\"origin_post_quantum_encryption\":\"supported\""),
        "{out}"
    );
    // A dry run changes nothing and says what it would do.
    let (code, out, err) = cf(&fake, &["pq", "set", "preferred", "--dry-run"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("would set origin_post_quantum_encryption from supported to preferred"),
        "{out}"
    );
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
    let (code, out, err) = cf(&fake, &["pq", "set", "preferred"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("supported -> preferred"), "{out}");
    assert_eq!(
        fake.writes(),
        vec!["PUT /cache/origin_post_quantum_encryption".to_string()]
    );
    // Setting what is already set sends nothing.
    let (code, _, _) = cf(&fake, &["pq", "set", "preferred"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(fake.writes().len(), 1);
    // Values outside the three are a usage error.
    let (code, _, _) = cf(&fake, &["pq", "set", "maybe"]).await;
    assert_eq!(code, Some(2));
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_failed_upload_is_looked_up_before_it_is_repeated() {
    let fake = FakeCloudflare::start(|s| {
        s.busy = 1;
        s.retry_after = Some(1);
    })
    .await;
    let started = std::time::Instant::now();
    let (code, _, err) = cf(&fake, &["status"]).await;
    assert_eq!(code, Some(0), "{err}");
    // The default backoff is 500 ms: a second means Retry-After was read.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );

    // An upload whose answer was lost: listed, found, used; never uploaded twice.
    let c = Customer::new().await;
    let fake = FakeCloudflare::start(|s| s.lost_answers = 1).await;
    let config = c.config(&c.ca_pem(), &c.ca_pem());
    let (code, out, err) = cf(
        &fake,
        &["enable", "--zone-cert", &c.cert(), &c.key(), "--config", &config],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let calls = fake.calls();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("POST")).count(),
        1,
        "the upload was repeated: {calls:?}"
    );
    assert_eq!(
        calls[..2],
        ["POST /origin_tls_client_auth", "GET /origin_tls_client_auth"]
    );
    assert!(err.contains("it did: using the uploaded certificate"), "{err}");

    // An upload that did not arrive: listed, not found, uploaded once more.
    let fake = FakeCloudflare::start(|s| s.failing_posts = 1).await;
    let (code, out, err) = cf(
        &fake,
        &["enable", "--zone-cert", &c.cert(), &c.key(), "--config", &config],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let calls = fake.calls();
    assert_eq!(
        calls[..3],
        [
            "POST /origin_tls_client_auth",
            "GET /origin_tls_client_auth",
            "POST /origin_tls_client_auth"
        ]
    );
    assert_eq!(fake.state.lock().expect("lock").zone_certs.len(), 1);
}

#[tokio::test]
async fn the_proxy_from_the_environment_is_used_except_for_no_proxy_and_loopback() {
    let fake = FakeCloudflare::start(|_| {}).await;
    // A name that resolves nowhere: only a proxy can reach it.
    let base = "http://api.cloudflare.invalid/client/v4";
    let status = |env: &[(&str, String)]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_originguard"));
        command
            .args(["cloudflare", "status", "--zone", ZONE, "--api-base", base])
            .env("CLOUDFLARE_API_TOKEN", TOKEN);
        for name in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "NO_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "no_proxy",
        ] {
            command.env_remove(name);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        command.output()
    };
    let proxy = format!("http://{}", fake.addr);
    let out = status(&[("HTTP_PROXY", proxy.clone())]).await.expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        fake.calls().iter().any(|c| c == "GET /settings/tls_client_auth"),
        "{:?}",
        fake.calls()
    );

    let before = fake.calls().len();
    let out = status(&[("HTTP_PROXY", proxy.clone()), ("NO_PROXY", "cloudflare.invalid".into())])
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "NO_PROXY ignored");
    assert_eq!(fake.calls().len(), before);

    // A loopback API base is reached directly even with a proxy set (as in Go's client).
    let (code, _, err) = {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
            .args(["cloudflare", "status", "--zone", ZONE, "--api-base", &fake.base()])
            .env("CLOUDFLARE_API_TOKEN", TOKEN)
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .output()
            .await
            .expect("run");
        (out.status.code(), (), String::from_utf8_lossy(&out.stderr).to_string())
    };
    assert_eq!(code, Some(0), "{err}");
}

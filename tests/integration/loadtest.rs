//! The load generator counts what actually happened: successes only with a 200, refusals by
//! alert, resumptions, requests.

use std::time::Duration;

use originguard::loadgen::{self, Options};

use crate::support::*;

fn options(fx: &Fixture, addr: std::net::SocketAddr, cert: &str, key: &str) -> Options {
    Options {
        server_name: Some("localhost".into()),
        ca: Some(fx.path("server-ca.pem")),
        connections: 2,
        duration: Duration::from_secs(30),
        handshakes: Some(20),
        ..Options::new(addr.to_string(), fx.path(cert), fx.path(key))
    }
}

fn write_client(fx: &Fixture, name: &str, client: &ClientCert) {
    fx.write(&format!("{name}.pem"), &client.pem);
    fx.write(&format!("{name}.key"), &client.key_pem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_successes_refusals_resumptions_and_requests() {
    let fx = Fixture::new();
    fx.write("server-ca.pem", &fx.server_ca.pem);
    write_client(&fx, "good", &fx.client);
    write_client(&fx, "stranger", &Ca::root("stranger").leaf(Leaf::client("x")));
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;

    let report = loadgen::run(options(&fx, proxy.addr, "good.pem", "good.key"))
        .await
        .expect("run");
    assert_eq!((report.attempts, report.successes), (20, 20), "{report:?}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.resumed, 0);
    assert_eq!(report.requests, 20);
    assert!(report.latency_us.p50 > 0 && report.latency_us.max >= report.latency_us.p99);
    assert!(report.bytes_sent > 0 && report.bytes_received > 0);

    // Refused under TLS 1.3: the handshake "completes" for the client, the first read fails.
    let report = loadgen::run(options(&fx, proxy.addr, "stranger.pem", "stranger.key"))
        .await
        .expect("run");
    assert_eq!(report.successes, 0);
    assert_eq!(
        report.failures.get("alert_unknown_ca"),
        Some(&20),
        "{:?}",
        report.failures
    );
    // Same with no requests at all: the read after close_notify still sees the alert.
    let mut no_requests = options(&fx, proxy.addr, "stranger.pem", "stranger.key");
    no_requests.requests_per_connection = 0;
    let report = loadgen::run(no_requests).await.expect("run");
    assert_eq!(report.successes, 0, "{report:?}");

    let mut resumed = options(&fx, proxy.addr, "good.pem", "good.key");
    resumed.resume = true;
    resumed.post_quantum = true;
    resumed.requests_per_connection = 3;
    let before = backend.count();
    let report = loadgen::run(resumed).await.expect("run");
    assert_eq!(report.successes, 20);
    assert!(report.resumed >= 16, "only {} of 20 resumed", report.resumed);
    assert_eq!(report.requests, 60);
    assert_eq!(
        backend.count() - before,
        60,
        "every counted request reached the backend"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn cli_prints_one_json_object() {
    let fx = Fixture::new();
    fx.write("server-ca.pem", &fx.server_ca.pem);
    write_client(&fx, "good", &fx.client);
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
        .args([
            "loadtest",
            "--target",
            &proxy.addr.to_string(),
            "--server-name",
            "localhost",
        ])
        .args(["--cert", fx.path("good.pem").to_str().expect("utf-8")])
        .args(["--key", fx.path("good.key").to_str().expect("utf-8")])
        .args(["--handshakes", "5", "--connections", "1", "--json"])
        .output()
        .await
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["successes"], 5);
    assert!(report["latency_us"]["p99"].as_u64().is_some());
    assert!(report["client_cpu_us_per_connection"].as_f64().is_some());
    proxy.stop().await;

    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
        .args([
            "loadtest",
            "--target",
            "127.0.0.1:1",
            "--cert",
            "/nonexistent.pem",
            "--key",
            "/nonexistent.key",
        ])
        .output()
        .await
        .expect("run");
    assert_eq!(bad.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.pem: cannot read"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_keeps_connections_open_until_the_end() {
    let fx = Fixture::new();
    fx.write("server-ca.pem", &fx.server_ca.pem);
    write_client(&fx, "good", &fx.client);
    let backend = Backend::tcp().await;
    let mut config = fx.config(&backend.url());
    config.admin = Some(originguard::config::AdminConfig {
        address: "127.0.0.1:0".parse().expect("addr"),
    });
    let proxy = spawn_proxy(config).await;
    let mut hold = options(&fx, proxy.addr, "good.pem", "good.key");
    hold.hold = true;
    hold.handshakes = None;
    hold.connections = 5;
    hold.duration = Duration::from_millis(1500);
    let run = tokio::spawn(loadgen::run(hold));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(proxy.metric("originguard_connections_open").await, 5.0);
    let report = run.await.expect("join").expect("run");
    assert_eq!(report.successes, 5);
    proxy.stop().await;
}

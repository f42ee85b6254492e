//! The load generator counts what actually happened: successes only with a 200, refusals by
//! alert, resumptions, requests.

use std::time::Duration;

use originguard::tools::loadgen::{self, Options, Stop};

use crate::support::*;

fn options(fx: &Fixture, addr: std::net::SocketAddr, cert: &str, key: &str) -> Options {
    Options {
        server_name: Some("localhost".into()),
        ca: Some(fx.path("server-ca.pem")),
        connections: 2,
        stop: Stop::Connections(20),
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
    // The session cache's view: every connection looked for a ticket; each resumed one found
    // one; the server sent tickets on every connection.
    let tickets = report.tickets.as_ref().expect("resumed mode counts tickets");
    assert_eq!(tickets.offered + tickets.none_to_offer, 20, "{tickets:?}");
    assert!(tickets.offered >= report.resumed, "{tickets:?}");
    assert!(tickets.received >= 20, "{tickets:?}");
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
    hold.connections = 5;
    hold.stop = Stop::After(Duration::from_millis(1500));
    let run = tokio::spawn(loadgen::run(hold));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(proxy.metric("originguard_connections_open").await, 5.0);
    let report = run.await.expect("join").expect("run");
    assert_eq!(report.successes, 5);
    proxy.stop().await;
}

fn loadtest_cli(fx: &Fixture, target: &str, cert: &str, extra: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_originguard"));
    command
        .args(["loadtest", "--target", target])
        .args(["--cert", fx.path(&format!("{cert}.pem")).to_str().expect("utf-8")])
        .args(["--key", fx.path(&format!("{cert}.key")).to_str().expect("utf-8")])
        .args(extra);
    command
}

#[tokio::test]
async fn pure_keep_alive_measures_requests_on_established_connections_only() {
    let fx = Fixture::new();
    write_client(&fx, "good", &fx.client);
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let pid = std::process::id().to_string();
    let out = loadtest_cli(
        &fx,
        &format!("https://localhost:{}/ka", proxy.addr.port()),
        "good",
        &[
            "--connections",
            "3",
            "--keep-alive",
            "--warmup",
            "200ms",
            "--duration",
            "1s",
            "--server-pid",
            &pid,
            "--json",
        ],
    )
    .output()
    .await
    .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    // Exactly three handshakes: the connections opened before the window.
    assert_eq!(report["successes"], 3, "{report}");
    let window = &report["window"];
    let requests = window["requests"].as_u64().expect("requests");
    assert!(requests > 0, "{report}");
    assert!(window["server_cpu_us"].as_u64().is_some(), "{report}");
    for key in ["min", "p50", "p90", "p99", "p999", "max", "mean", "stdev"] {
        assert!(window["request_latency_us"][key].is_number(), "{key} missing: {report}");
    }
    // The URL gave the server name and the path; the backend saw every request on /ka.
    assert!(backend.requests().iter().all(|seen| seen.uri == "/ka"));
    assert!(backend.count() as u64 >= requests + 3);
    // No terminal: progress goes to stderr as lines.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("req/s"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.stop().await;
}

/// `--keep-alive --rate`: requests start on the schedule the pacing thread keeps, shared by
/// the connections in turn — never more than the schedule holds, whatever the server does.
#[tokio::test]
async fn open_model_keep_alive_requests_follow_the_schedule() {
    let fx = Fixture::new();
    write_client(&fx, "good", &fx.client);
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let args = [
        "--server-name",
        "localhost",
        "--connections",
        "4",
        "--keep-alive",
        "--rate",
        "500",
        "--warmup",
        "200ms",
        "--duration",
        "1s",
        "--json",
    ];
    let started = std::time::Instant::now();
    let out = loadtest_cli(&fx, &proxy.addr.to_string(), "good", &args)
        .output()
        .await
        .expect("run");
    let wall = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(report["window"]["requests"].as_u64().expect("requests") > 0, "{report}");
    // The schedule starts inside the run: 500 a second for at most its wall time, plus one
    // opening request per connection and one start per connection taken as the window closed.
    let most = (500.0 * wall) as usize + 4 + 4;
    assert!(backend.count() <= most, "{} requests in {wall:.2} s", backend.count());
    proxy.stop().await;
}

#[tokio::test]
async fn open_model_starts_connections_on_schedule_and_failures_set_the_exit_status() {
    let fx = Fixture::new();
    write_client(&fx, "good", &fx.client);
    write_client(&fx, "stranger", &Ca::root("stranger").leaf(Leaf::client("x")));
    let backend = Backend::tcp().await;
    let proxy = spawn_proxy(fx.config(&backend.url())).await;
    let target = proxy.addr.to_string();
    let args = [
        "--server-name",
        "localhost",
        "--rate",
        "40",
        "--duration",
        "1s",
        "--connections",
        "8",
        "--json",
    ];
    let out = loadtest_cli(&fx, &target, "good", &args).output().await.expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    // Intended starts at 0, 25 ms, ... 975 ms: forty, whatever the server did.
    assert_eq!(report["attempts"], 40, "{report}");
    assert_eq!(report["successes"], 40, "{report}");

    // Every connection refused: exit 1, unless the failure rate is allowed.
    let refused = loadtest_cli(
        &fx,
        &target,
        "stranger",
        &[
            "--server-name",
            "localhost",
            "--handshakes",
            "3",
            "--tls-version",
            "1.2",
        ],
    )
    .output()
    .await
    .expect("run");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("3 of 3 connections failed"));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("alert_unknown_ca"));
    let tolerated = loadtest_cli(
        &fx,
        &target,
        "stranger",
        &[
            "--server-name",
            "localhost",
            "--handshakes",
            "3",
            "--max-failure-rate",
            "1",
        ],
    )
    .output()
    .await
    .expect("run");
    assert!(tolerated.status.success());

    // Connect errors keep their errno.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    let out = loadtest_cli(
        &fx,
        &closed_addr.to_string(),
        "good",
        &["--handshakes", "2", "--json", "--max-failure-rate", "1"],
    )
    .output()
    .await
    .expect("run");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["failures"]["connect_econnrefused"], 2, "{report}");
    proxy.stop().await;
}

#[test]
fn targets_and_groups_parse() {
    assert_eq!(
        loadgen::parse_target("https://api.example.com/x?y=1"),
        Ok((
            "api.example.com:443".into(),
            Some("api.example.com".into()),
            Some("/x?y=1".into())
        ))
    );
    assert_eq!(
        loadgen::parse_target("https://[::1]:8443"),
        Ok(("[::1]:8443".into(), Some("::1".into()), None))
    );
    assert_eq!(
        loadgen::parse_target("127.0.0.1:8443"),
        Ok(("127.0.0.1:8443".into(), None, None))
    );
    assert!(loadgen::parse_target("http://x:1").is_err());
    assert_eq!(
        loadgen::parse_group("X25519MLKEM768"),
        Ok(rustls::NamedGroup::X25519MLKEM768)
    );
    assert!(loadgen::parse_group("ffdhe2048").is_err());
}

//! Operator experience (issue 13): what `serve` writes to its log, what `/metrics` says, and
//! what the CLI refuses — read from the real binary.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn refused_handshakes_are_logged_at_warn_with_the_presented_certificate_once_a_second() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let served = serve(&fx, &backend.url(), "").await;
    let stranger = Ca::root("stranger CA").leaf(Leaf::client("intruder"));
    for _ in 0..5 {
        assert!(refusal(served.addr, fx.client_config(Some(&stranger))).await.is_some());
    }
    let line = served.wait_for_log(|l| l["message"] == "handshake refused").await;
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["reason"], "unknown_issuer");
    assert_eq!(line["sni"], "localhost");
    assert_eq!(line["subject"], "CN=intruder");
    assert_eq!(line["issuer"], "CN=stranger CA");
    assert_eq!(line["sha256"].as_str().map(str::len), Some(64));
    assert!(line["not_after"].as_str().is_some_and(|t| t.ends_with("UTC")), "{line}");
    assert!(
        line["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{line}"
    );
    // Five refusals within a second: one line (rate-limited), the rest counted.
    let lines = served
        .log()
        .into_iter()
        .filter(|l| l["message"] == "handshake refused")
        .count();
    assert!(lines < 5, "not rate-limited: {lines} lines");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(refusal(served.addr, fx.client_config(Some(&stranger))).await.is_some());
    let next = served
        .wait_for_log(|l| l["message"] == "handshake refused" && l["left_out"].as_u64() > Some(0))
        .await;
    assert_eq!(next["reason"], "unknown_issuer");
}

#[tokio::test]
async fn json_logs_use_arrays_and_rounded_durations_and_the_access_log_correlates_with_cloudflare() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    let served = serve_with(
        &fx,
        &backend.url(),
        ServeOptions {
            access_log: true,
            extra: "[[hosts]]\nserver_names = [\"a.example\", \"*.wild.example\"]\n",
            ..ServeOptions::default()
        },
    )
    .await;
    let policy = served
        .wait_for_log(|l| l["message"] == "client certificates required" && l["policy"] == "hosts[0]")
        .await;
    assert_eq!(
        policy["server_names"],
        serde_json::json!(["a.example", "*.wild.example"])
    );

    let request = http::Request::get("/x?y=1")
        .header("host", "localhost")
        .header("user-agent", "curl/8.0")
        .header("cf-ray", "8f00000000000000-AMS")
        .header("cf-connecting-ip", "198.51.100.7")
        .body(empty())
        .expect("request");
    let (status, _, _) = crate::support::request(served.addr, fx.client_config(Some(&fx.client)), request).await;
    assert_eq!(status, 200);
    let access = served.wait_for_log(|l| l["target"] == "originguard::access").await;
    for (key, value) in [
        ("http_version", serde_json::json!("1.1")),
        ("tls_version", serde_json::json!("1.3")),
        ("resumed", serde_json::json!(false)),
        ("user_agent", serde_json::json!("curl/8.0")),
        ("cf_ray", serde_json::json!("8f00000000000000-AMS")),
        ("cf_connecting_ip", serde_json::json!("198.51.100.7")),
        ("status", serde_json::json!(200)),
        ("path", serde_json::json!("/x")),
    ] {
        assert_eq!(access[key], value, "{key}: {access}");
    }
    let duration = access["duration_ms"].as_f64().expect("a number");
    assert_eq!(
        (duration * 1e3).round() / 1e3,
        duration,
        "not rounded to µs: {duration}"
    );
    // Text written to a pipe has no colour codes.
    assert!(
        !served.log().iter().any(|l| l.to_string().contains("\\u001b[")),
        "ANSI codes in the log"
    );
}

#[tokio::test]
async fn a_502_logs_the_bytes_it_sent_and_two_cas_with_one_subject_keep_two_series() {
    let fx = Fixture::new();
    // Two CAs with the same subject (the rotation recipe), in one bundle.
    let next = Ca::root("test client CA");
    fx.write("client-ca.pem", &format!("{}{}", fx.client_ca.pem, next.pem));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let served = serve_with(
        &fx,
        &dead,
        ServeOptions {
            access_log: true,
            ..ServeOptions::default()
        },
    )
    .await;
    let (status, _, body) = crate::support::request(served.addr, fx.client_config(Some(&fx.client)), get("/")).await;
    assert_eq!(status, 502);
    let access = served.wait_for_log(|l| l["target"] == "originguard::access").await;
    assert_eq!(access["bytes_out"].as_u64(), Some(body.len() as u64), "{access}");
    let (_, metrics) = served.admin("GET", "/metrics").await;
    let series = metrics
        .lines()
        .filter(|l| {
            l.starts_with("originguard_certificate_not_after_seconds{role=\"client_ca\",subject=\"CN=test client CA\"")
        })
        .count();
    assert_eq!(series, 2, "{metrics}");
}

#[test]
fn cli_help_has_examples_env_fallback_and_only_the_flags_a_command_uses() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_originguard"))
            .args(args)
            .output()
            .expect("run")
    };
    for command in [
        &["serve"][..],
        &["check"],
        &["demo"],
        &["pki", "dev"],
        &["cloudflare", "enable"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let help = String::from_utf8_lossy(&run(&args).stdout).into_owned();
        assert!(help.contains("Examples:"), "{command:?}: {help}");
    }
    let serve_help = String::from_utf8_lossy(&run(&["serve", "--help"]).stdout).into_owned();
    assert!(serve_help.contains("ORIGINGUARD_CONFIG"), "{serve_help}");
    // `status` changes nothing: it has no --dry-run.
    let status = run(&["cloudflare", "status", "--zone", "z", "--dry-run"]);
    assert_eq!(status.status.code(), Some(2));
    // `pki dev` never overwrites a CA key without --force.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8");
    assert!(run(&["pki", "dev", "--out", out]).status.success());
    let key = std::fs::read(dir.path().join("ca.key")).expect("ca.key");
    let again = run(&["pki", "dev", "--out", out]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read(dir.path().join("ca.key")).expect("ca.key"),
        key,
        "the CA key was replaced"
    );
    assert!(run(&["pki", "dev", "--out", out, "--force"]).status.success());
    assert_ne!(std::fs::read(dir.path().join("ca.key")).expect("ca.key"), key);
}

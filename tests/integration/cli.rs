//! The real binary: exit statuses and messages for config errors, `check`, `pki dev`, SIGTERM.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_originguard");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run originguard")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A complete config for the fixture's files, with these `[client_auth]` lines (they replace
/// the fixture's trust when they set one).
fn config_text(fx: &Fixture, client_auth: &str) -> String {
    fx.toml("http://127.0.0.1:9")
        .remove("client_auth", "trust")
        .lines("client_auth", client_auth)
        .text()
}

fn check(path: &Path) -> Output {
    run(&["check", "--config", path.to_str().expect("utf-8 path")])
}

#[test]
fn shipped_example_config_checks_clean() {
    let out = run(&["check", "--config", "config/originguard.toml"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("trusted CA: CN=origin-pull.cloudflare.net"), "{text}");
    assert!(text.contains("FIPS: off (build with --features fips"), "{text}");
    assert!(
        text.contains(
            "9A:1A:C2:B4:BE:15:F9:F2:7E:EE:20:A7:34:CB:A4:E9:89:8F:61:00:1B:3B:D7:C8:4B:69:B5:6A:3E:25:A2:B9"
        ),
        "{text}"
    );
    assert!(text.contains("not after: 2029-11-01 17:00:00 UTC"), "{text}");
    assert!(text.contains("key: RSA-4096"), "{text}");
    assert!(text.contains("key exchange: hybrid-preferred"), "{text}");
    assert!(
        text.contains("warning: default: only the shared Cloudflare origin-pull CA is trusted"),
        "{text}"
    );
}

#[test]
fn check_prints_policy_for_a_custom_ca() {
    let fx = Fixture::new();
    let path = fx.write(
        "og.toml",
        &config_text(&fx, &format!("trust = [\"{}\"]", fx.path("client-ca.pem").display())),
    );
    let out = check(&path);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("server certificate: CN=localhost"), "{text}");
    assert!(text.contains("trusted CA: CN=test client CA"), "{text}");
    assert!(text.contains("verify_depth 1"), "{text}");
    assert!(text.contains("warnings: none"), "{text}");
}

#[test]
fn unknown_key_exits_78_naming_file_and_key() {
    let fx = Fixture::new();
    let text = config_text(&fx, "trust = [\"cloudflare\"]\nverify_client = false");
    let path = fx.write("og.toml", &text);
    let out = check(&path);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("unknown field `verify_client`"), "{err}");
}

#[test]
fn bad_ca_file_exits_78_naming_key_and_path() {
    let fx = Fixture::new();
    let garbage = fx.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    let text = config_text(&fx, &format!("trust = [\"cloudflare\", \"{}\"]", garbage.display()));
    let out = check(&fx.write("og.toml", &text));
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(err.contains("client_auth.trust[1]"), "{err}");
    assert!(err.contains("garbage.pem"), "{err}");

    let missing = config_text(&fx, "trust = [\"/nonexistent/ca.pem\"]");
    let out = check(&fx.write("og2.toml", &missing));
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("client_auth.trust[0]: /nonexistent/ca.pem: cannot read"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn mismatched_key_and_bad_values_exit_78() {
    let fx = Fixture::new();
    let other = Ca::root("other").leaf(Leaf::server());
    fx.write("server.key", &other.key_pem);
    let out = check(&fx.write("og.toml", &config_text(&fx, "trust = [\"cloudflare\"]")));
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("tls.private_key"), "{}", stderr(&out));

    let fx = Fixture::new();
    let bad_depth = config_text(&fx, "trust = [\"cloudflare\"]\nverify_depth = 0");
    let out = check(&fx.write("og.toml", &bad_depth));
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("client_auth.verify_depth"), "{}", stderr(&out));

    let crl_from_stranger = fx.write("crl.pem", &Ca::root("stranger").crl(&[1]));
    let text = config_text(
        &fx,
        &format!("trust = [\"cloudflare\"]\ncrl = [\"{}\"]", crl_from_stranger.display()),
    );
    let out = check(&fx.write("og3.toml", &text));
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("client_auth.crl[0]"), "{}", stderr(&out));

    let out = run(&["check", "--config", "/nonexistent/originguard.toml"]);
    assert_eq!(out.status.code(), Some(78));
    let out = run(&["serve", "--config", "/nonexistent/originguard.toml"]);
    assert_eq!(out.status.code(), Some(78));
    let out = run(&["serve", "--bogus-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn warns_about_the_cloudflare_origin_ca_in_the_client_trust_store() {
    let fx = Fixture::new();
    let origin_ca = Ca::root("CloudFlare Origin SSL Certificate Authority");
    let path = fx.write("origin-ca.pem", &origin_ca.pem);
    let out = check(&fx.write(
        "og.toml",
        &config_text(&fx, &format!("trust = [\"{}\"]", path.display())),
    ));
    assert!(out.status.success());
    assert!(stdout(&out).contains("is the Cloudflare Origin CA"), "{}", stdout(&out));
}

#[test]
fn pki_dev_writes_a_usable_pki() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("pki");
    let out = run(&["pki", "dev", "--out", out_dir.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("NOT for production"));
    for file in originguard::tools::pki::DEV_FILES {
        assert!(out_dir.join(file).is_file(), "{file} missing");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out_dir.join("client.key"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private key readable by others");
    }
    let d = out_dir.display();
    let config = Toml::default()
        .set("tls", format!("certificate = \"{d}/server.pem\""))
        .set("tls", format!("private_key = \"{d}/server.key\""))
        .set("client_auth", format!("trust = [\"{d}/ca.pem\"]"))
        .set("upstream", "url = \"http://127.0.0.1:9\"")
        .write(&dir.path().join("og.toml"));
    let out = check(&config);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn serve_exits_0_on_sigterm() {
    let fx = Fixture::new();
    let path = fx.write("og.toml", &config_text(&fx, "trust = [\"cloudflare\"]"));
    let mut child = Command::new(BIN)
        .args(["serve", "--config", path.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait for the "listening" line.
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut all = String::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = stderr_pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
            if all.contains("listening") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(WAIT).expect("serve logs that it is listening");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(started.elapsed() < WAIT, "serve did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn check_describes_each_host_and_warns_about_overlaps_and_uncovered_names() {
    let fx = Fixture::new();
    let ca = fx.path("client-ca.pem");
    let text = format!(
        "{}\n[[hosts]]\nserver_names = [\"a.example\", \"*.wild.example\"]\n[hosts.client_auth]\ntrust = [\"{ca}\"]\n\
         allow_subjects = [\"CN=client-1\"]\n\
         [[hosts]]\nserver_names = [\"A.example\", \"nothere.test\"]\n",
        config_text(&fx, &format!("trust = [\"{}\"]", ca.display())),
        ca = ca.display()
    );
    let out = check(&fx.write("og.toml", &text));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("policy hosts[0] (a.example, *.wild.example):"), "{text}");
    assert!(text.contains("allow_subjects: CN=client-1"), "{text}");
    assert!(text.contains("policy hosts[1] (a.example, nothere.test):"), "{text}");
    assert!(
        text.contains("warning: server name \"a.example\" is listed by both hosts[0] and hosts[1]; hosts[0] wins"),
        "{text}"
    );
    assert!(
        text.contains("warning: hosts[1]: server certificate does not cover server name \"nothere.test\""),
        "{text}"
    );
    assert!(
        !text.contains("does not cover server name \"*.wild.example\""),
        "{text}"
    );
}

#[test]
fn host_errors_name_the_host_key() {
    let fx = Fixture::new();
    let text = format!(
        "{}\n[[hosts]]\nserver_names = [\"a.example\"]\n[hosts.client_auth]\ntrust = [\"/nonexistent/ca.pem\"]\n",
        config_text(&fx, "trust = [\"cloudflare\"]")
    );
    let out = check(&fx.write("og.toml", &text));
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("hosts[0].client_auth.trust[0]: /nonexistent/ca.pem"),
        "{}",
        stderr(&out)
    );

    let text = format!(
        "{}\n[[hosts]]\nserver_names = [\"bad name\"]\n",
        config_text(&fx, "trust = [\"cloudflare\"]")
    );
    let out = check(&fx.write("og2.toml", &text));
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("hosts[0].server_names[0]"), "{}", stderr(&out));

    let text = config_text(&fx, "trust = [\"cloudflare\"]\nallow_cert_sha256 = [\"abcd\"]");
    let out = check(&fx.write("og3.toml", &text));
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("client_auth.allow_cert_sha256[0]"),
        "{}",
        stderr(&out)
    );

    let text = config_text(&fx, "trust = [\"cloudflare\"]")
        .replace("[tls]", "allow_peers = [\"cloudflare\", \"10.0.0.0/33\"]\n[tls]");
    let out = check(&fx.write("og4.toml", &text));
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("listener.allow_peers[1]"), "{}", stderr(&out));
}

#[test]
fn warns_about_a_ca_expiring_within_30_days() {
    let fx = Fixture::new();
    let short = Ca::root_valid_for("short-lived CA", time::Duration::days(10));
    let path = fx.write("short.pem", &short.pem);
    let out = check(&fx.write(
        "og.toml",
        &config_text(&fx, &format!("trust = [\"{}\"]", path.display())),
    ));
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("warning: default: trusted CA CN=short-lived CA expires on"),
        "{text}"
    );
    assert!(text.contains("(within 30 days)"), "{text}");
}

#[tokio::test]
async fn json_access_log_parses_and_carries_the_identity() {
    let fx = Fixture::new();
    let backend = Backend::tcp().await;
    // Port 0: serve logs the address it bound, which serve_with reads.
    let served = serve_with(
        &fx,
        &backend.url(),
        ServeOptions {
            access_log: true,
            ..ServeOptions::default()
        },
    )
    .await;
    let (status, _, _) = request(served.addr, fx.client_config(Some(&fx.client)), get("/logged?q=1")).await;
    assert_eq!(status, 200);
    served.signal("TERM");
    served.wait_for_log(|v| v["target"] == "originguard::access").await;
    let lines = served.log();
    assert_eq!(served.wait(), Some(0));
    let stderr = lines.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n");
    let access = lines
        .iter()
        .find(|v| v["target"] == "originguard::access")
        .unwrap_or_else(|| panic!("no access log line in:\n{stderr}"));
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/logged");
    assert_eq!(access["status"], 200);
    assert_eq!(access["peer"], "127.0.0.1");
    assert_eq!(access["sni"], "localhost");
    assert_eq!(access["host"], "localhost");
    assert_eq!(access["subject"], "CN=client-1");
    assert_eq!(access["bytes_out"], 2);
    let sha = access["sha256"].as_str().expect("sha256");
    assert_eq!(sha.len(), 64);
    assert!(access["duration_ms"].as_f64().is_some() && access["upstream_ms"].as_f64().is_some());
}

#[test]
fn check_refuses_what_would_lock_every_client_out_and_strict_fails_on_warnings() {
    let fx = Fixture::new();
    // A client leaf where a CA belongs.
    let leaf = fx.write("leaf.pem", &fx.client.pem);
    let out = check(&fx.write(
        "leaf.toml",
        &config_text(&fx, &format!("trust = [\"{}\"]", leaf.display())),
    ));
    assert_eq!(out.status.code(), Some(78), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("client_auth.trust[0]") && stderr(&out).contains("is not a CA"),
        "{}",
        stderr(&out)
    );
    // Every trusted CA expired.
    let expired = Ca::root_valid_for("expired CA", time::Duration::seconds(-60));
    let path = fx.write("expired.pem", &expired.pem);
    let out = check(&fx.write(
        "expired.toml",
        &config_text(&fx, &format!("trust = [\"{}\"]", path.display())),
    ));
    assert_eq!(out.status.code(), Some(78), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("client_auth.trust: every trusted CA has expired"),
        "{}",
        stderr(&out)
    );
    // An expired server certificate.
    let old = fx.server_ca.leaf(Leaf {
        not_before: time::OffsetDateTime::now_utc() - time::Duration::days(10),
        not_after: time::OffsetDateTime::now_utc() - time::Duration::days(1),
        ..Leaf::server()
    });
    fx.write("server.pem", &old.pem);
    fx.write("server.key", &old.key_pem);
    let out = check(&fx.write("server.toml", &config_text(&fx, "trust = [\"cloudflare\"]")));
    assert_eq!(out.status.code(), Some(78), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("tls.certificate") && stderr(&out).contains("expired on"),
        "{}",
        stderr(&out)
    );
    // --strict: a warning (only the shared Cloudflare CA) fails the check; without it, it passes.
    let fresh = fx.server_ca.leaf(Leaf::server());
    fx.write("server.pem", &fresh.pem);
    fx.write("server.key", &fresh.key_pem);
    let path = fx.write("warn.toml", &config_text(&fx, "trust = [\"cloudflare\"]"));
    assert!(check(&path).status.success());
    let strict = run(&["check", "--strict", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(strict.status.code(), Some(1), "{}", stdout(&strict));
    assert!(stderr(&strict).contains("--strict"), "{}", stderr(&strict));
    // ORIGINGUARD_CONFIG is the fallback for --config.
    let env = Command::new(BIN)
        .arg("check")
        .env("ORIGINGUARD_CONFIG", &path)
        .output()
        .expect("run");
    assert!(env.status.success(), "{}", String::from_utf8_lossy(&env.stderr));
}

//! The real binary as a child process: `originguard serve` on port 0 (the bound addresses are
//! read back from its JSON log, so parallel tests never race for a "free" port), with its fds,
//! memory, metrics and signals at hand.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Fixture, ProxyHandle, WAIT};

pub const BIN: &str = env!("CARGO_BIN_EXE_originguard");

/// How to start the process.
#[derive(Default)]
pub struct ServeOptions<'a> {
    /// Extra lines for `[listener]`.
    pub listener_extra: &'a str,
    /// Extra tables appended to the config.
    pub extra: &'a str,
    pub access_log: bool,
    /// `ulimit -n` for the process.
    pub fd_limit: Option<u32>,
    /// Close our end of its stderr once it is listening (a log reader that went away).
    pub close_stderr: bool,
    /// `[reload] watch` (off by default in tests, so reload counts stay deterministic).
    pub watch: bool,
    /// `NOTIFY_SOCKET` for the process (systemd's readiness protocol).
    pub notify_socket: Option<&'a std::path::Path>,
}

pub struct Served {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Every stderr line (JSON) so far, unless `close_stderr`.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Starts `originguard serve` with the fixture's PKI; `listener_extra` goes into `[listener]`.
pub async fn serve(fx: &Fixture, upstream: &str, listener_extra: &str) -> Served {
    serve_with(
        fx,
        upstream,
        ServeOptions {
            listener_extra,
            ..ServeOptions::default()
        },
    )
    .await
}

pub async fn serve_with(fx: &Fixture, upstream: &str, options: ServeOptions<'_>) -> Served {
    let text = fx
        .toml(upstream)
        .lines("listener", options.listener_extra)
        .set("admin", "address = \"127.0.0.1:0\"")
        .set("log", "format = \"json\"")
        .set("log", "level = \"info\"")
        .set("log", format!("access_log = {}", options.access_log))
        .set("reload", format!("watch = {}", options.watch))
        .append(options.extra)
        .text();
    let path = fx.write("served.toml", &text);
    let mut command = match options.fd_limit {
        Some(limit) => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\""), BIN]);
            c
        }
        None => Command::new(BIN),
    };
    if let Some(socket) = options.notify_socket {
        command.env("NOTIFY_SOCKET", socket);
    }
    let mut child = command
        .args(["serve", "--config", path.to_str().expect("utf-8")])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn originguard");
    let stderr = child.stderr.take().expect("stderr");
    let close = options.close_stderr;
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        let (mut addr, mut admin) = (None, None);
        for line in lines.by_ref() {
            let Ok(line) = line else { return };
            sink.lock().expect("lock").push(line.clone());
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let address = json["address"].as_str().and_then(|a| a.parse::<SocketAddr>().ok());
            match json["message"].as_str() {
                Some("listening") => addr = address,
                Some("admin listening") => admin = address,
                _ => {}
            }
            if let (Some(addr), Some(admin)) = (addr, admin) {
                let _ = tx.send((addr, admin));
                break;
            }
        }
        if close {
            // Dropping the reader closes the pipe: the next log write gets EPIPE.
            return;
        }
        for line in lines.map_while(Result::ok) {
            let mut log = sink.lock().expect("lock");
            if log.len() < 100_000 {
                log.push(line);
            }
        }
    });
    let (addr, admin) = rx.recv_timeout(WAIT).expect("originguard logs its listening addresses");
    Served {
        child,
        addr,
        admin,
        log,
    }
}

impl Served {
    /// The JSON log lines written so far.
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The first log line `pred` accepts, waiting for it (bounded by `WAIT`).
    pub async fn wait_for_log(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + super::WAIT;
        loop {
            if let Some(line) = self.log().into_iter().find(|l| pred(l)) {
                return line;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no such log line in {:#?}",
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
    }

    pub async fn metric(&self, sample: &str) -> f64 {
        self.handle().metric(sample).await
    }

    pub async fn admin(&self, method: &str, path: &str) -> (http::StatusCode, String) {
        self.handle().admin(method, path).await
    }

    fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            addr: self.addr,
            admin: Some(self.admin),
            shutdown: tokio_util::sync::CancellationToken::new(),
            task: tokio::spawn(async {}),
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit and returns its exit code.
    pub fn wait(mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "originguard did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

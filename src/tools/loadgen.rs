//! `originguard loadtest`: a TLS handshake load generator with client certificates.
//!
//! N workers open connections as fast as they can: a full handshake each (or a resumed one with
//! `--resume`), then `--requests-per-connection` HTTP/1.1 requests. A connection counts as a
//! success only when its handshake completed *and* every request got a 200: a TLS 1.3 client
//! learns that its certificate was refused only on its first read after the handshake, so a
//! handshake-only count would report refused clients as successes. With 0 requests the worker
//! still reads (after sending close_notify) so such an alert is seen.
//!
//! Two load models. Closed (the default): each of `--connections` workers starts its next
//! connection when the previous one is done. Open (`--rate N`): connections (or, with
//! `--keep-alive`, requests) start on a fixed schedule whatever the server does, and latency is
//! measured from the *intended* start, so a stalled server shows up as latency instead of
//! silently lowering the offered load (coordinated omission).
//!
//! Its own cost is kept low: the client key is parsed once, the server certificate is not
//! verified unless `--ca` is given, and latency goes into per-worker HDR histograms merged at
//! the end. The report includes the generator's own CPU time per connection, so a run can show
//! whether the generator or the server was the bottleneck.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls::load;

/// How one connection may take at most.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub target: String,
    pub server_name: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub connections: usize,
    /// When the run ends.
    pub stop: Stop,
    pub resume: bool,
    pub requests_per_connection: u32,
    pub path: String,
    /// Offer X25519MLKEM768 first (rustls' default); otherwise X25519 only, like OpenSSL 3.0
    /// peers, so side-by-side runs compare the same key exchange. Cipher suites are offered in
    /// Cloudflare's order (AES-128-GCM first).
    pub post_quantum: bool,
    /// Keep each worker's first connection open (idle, after its requests) until the run ends,
    /// instead of opening more: to measure what idle connections cost the server.
    pub hold: bool,
    /// A progress line on stderr every second (rewritten in place on a terminal).
    pub progress: bool,
    /// Open model: connections per second (with `keep_alive`: requests per second).
    pub rate: Option<f64>,
    /// Protocol versions offered.
    pub tls_versions: TlsVersions,
    /// Key-exchange groups offered, in order (overrides `post_quantum`).
    pub groups: Option<Vec<rustls::NamedGroup>>,
    /// Pure keep-alive: open every connection first (handshake + one request), then send
    /// requests on them until the end; only the window after `warmup` is measured, so no
    /// handshake is inside any figure of [`Report::window`].
    pub keep_alive: bool,
    /// Keep-alive mode: how long requests run before the measuring window opens.
    pub warmup: Duration,
    /// Processes whose CPU time is read at the window's edges (the server under test, all its
    /// threads; list every worker process of a multi-process server).
    pub server_pids: Vec<u32>,
}

impl Options {
    /// A run of `--handshakes`-style defaults: one worker, 10 s, full handshakes, one request per
    /// connection, no server verification.
    pub fn new(target: impl Into<String>, cert: PathBuf, key: PathBuf) -> Options {
        Options {
            target: target.into(),
            server_name: None,
            ca: None,
            cert,
            key,
            connections: 1,
            stop: Stop::After(Duration::from_secs(10)),
            resume: false,
            requests_per_connection: 1,
            path: "/".into(),
            post_quantum: false,
            hold: false,
            progress: false,
            rate: None,
            tls_versions: TlsVersions::Both,
            groups: None,
            keep_alive: false,
            warmup: Duration::from_secs(1),
            server_pids: Vec::new(),
        }
    }
}

/// When a run ends (`--duration` or `--handshakes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long (`--hold` and `--keep-alive` runs: the measured window).
    After(Duration),
    /// After this many connections have been started, however long that takes (each
    /// connection is bounded by its own timeout).
    Connections(u64),
}

impl Stop {
    fn duration(self) -> Option<Duration> {
        match self {
            Stop::After(d) => Some(d),
            Stop::Connections(_) => None,
        }
    }

    fn count(self) -> Option<u64> {
        match self {
            Stop::After(_) => None,
            Stop::Connections(n) => Some(n),
        }
    }
}

impl TryFrom<crate::cli::LoadtestArgs> for Options {
    type Error = anyhow::Error;

    fn try_from(args: crate::cli::LoadtestArgs) -> anyhow::Result<Options> {
        let (target, url_host, url_path) = parse_target(&args.target).map_err(anyhow::Error::msg)?;
        Ok(Options {
            target,
            server_name: args.server_name.or(url_host),
            ca: args.ca,
            cert: args.cert,
            key: args.key,
            connections: args.connections,
            stop: match args.handshakes {
                Some(n) => Stop::Connections(n),
                None => Stop::After(args.duration),
            },
            resume: args.resume,
            requests_per_connection: args.requests_per_connection,
            path: url_path.unwrap_or(args.path),
            post_quantum: args.post_quantum,
            hold: args.hold,
            progress: !args.quiet,
            rate: args.rate,
            tls_versions: args.tls_version,
            groups: match args.cloudflare_hello {
                true => Some(vec![rustls::NamedGroup::X25519, rustls::NamedGroup::X25519MLKEM768]),
                false => args.groups,
            },
            keep_alive: args.keep_alive,
            warmup: args.warmup,
            server_pids: args.server_pid,
        })
    }
}

/// `--tls-version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsVersions {
    #[value(name = "1.2")]
    Tls12,
    #[value(name = "1.3")]
    Tls13,
    Both,
}

/// `--groups` names: `x25519`, `x25519mlkem768`, `secp256r1` (`p256`), `secp384r1` (`p384`).
pub fn parse_group(name: &str) -> Result<rustls::NamedGroup, String> {
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "x25519" => rustls::NamedGroup::X25519,
        "x25519mlkem768" => rustls::NamedGroup::X25519MLKEM768,
        "secp256r1" | "p256" | "p-256" => rustls::NamedGroup::secp256r1,
        "secp384r1" | "p384" | "p-384" => rustls::NamedGroup::secp384r1,
        other => {
            return Err(format!(
                "unknown group {other:?} (expected x25519, x25519mlkem768, secp256r1 or secp384r1)"
            ))
        }
    })
}

/// Splits `--target`: `HOST:PORT`, or `https://HOST[:PORT][/PATH]` (port 443 by default).
/// Returns the address to connect to, the host (for SNI and Host) when a URL gave it, and the
/// path when the URL had one.
pub fn parse_target(target: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let Some(rest) = target.strip_prefix("https://") else {
        if target.contains("://") {
            return Err(format!("--target {target}: only https:// URLs or HOST:PORT"));
        }
        return Ok((target.to_string(), None, None));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(rest[i..].to_string())),
        None => (rest, None),
    };
    let uri: http::uri::Authority = authority
        .parse()
        .map_err(|_| format!("--target {target}: invalid host or port"))?;
    let host = uri.host().trim_start_matches('[').trim_end_matches(']').to_string();
    let address = match uri.port_u16() {
        Some(_) => authority.to_string(),
        None => format!("{}:443", uri.host()),
    };
    Ok((address, Some(host), path))
}

/// The outcome of a run (`--json` prints it as is).
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub connections: usize,
    pub resume: bool,
    pub requests_per_connection: u32,
    pub elapsed_s: f64,
    pub attempts: u64,
    pub successes: u64,
    pub resumed: u64,
    pub handshakes_per_s: f64,
    pub requests: u64,
    pub requests_per_s: f64,
    /// Handshake latency (TCP connect + TLS handshake), microseconds.
    pub latency_us: Latency,
    pub failures: BTreeMap<String, u64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The generator's own CPU time per attempted connection (user + system).
    pub client_cpu_us_per_connection: f64,
    /// Keep-alive mode: the measuring window (established connections only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Resumed mode: the client's TLS 1.3 ticket traffic (why a connection did not resume).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tickets: Option<Tickets>,
}

/// TLS 1.3 session tickets as the generator's session cache saw them.
#[derive(Debug, Serialize)]
pub struct Tickets {
    /// NewSessionTicket messages received from the server.
    pub received: u64,
    /// Connections that found a ticket to offer.
    pub offered: u64,
    /// Connections that found none (and so made a full handshake).
    pub none_to_offer: u64,
}

/// What happened inside a keep-alive measuring window: requests on connections opened before
/// it, and nothing else.
#[derive(Debug, Serialize)]
pub struct Window {
    pub seconds: f64,
    pub requests: u64,
    pub requests_per_s: f64,
    /// Request latency (request written to response body read), microseconds.
    pub request_latency_us: Latency,
    /// CPU time of `server_pids` over the window (user + system, 10 ms resolution).
    pub server_cpu_us: Option<u64>,
    pub server_cpu_us_per_request: Option<f64>,
    /// The generator's own CPU time per request.
    pub client_cpu_us_per_request: f64,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
    pub stdev: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
            stdev: h.stdev(),
        }
    }

    fn text(&self) -> String {
        format!(
            "min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.0}  stdev {:.0}",
            self.min, self.p50, self.p90, self.p99, self.p999, self.max, self.mean, self.stdev
        )
    }
}

/// Runs the load and returns the report.
pub async fn run(options: Options) -> anyhow::Result<Report> {
    let target = resolve(&options.target).await?;
    let server_name = server_name(&options)?;
    let tickets = options.resume.then(|| Arc::new(TicketCounts::default()));
    let config = client_config(&options, tickets.clone())?;
    let connector = TlsConnector::from(config.clone());
    if options.keep_alive {
        return run_keep_alive(options, target, server_name, connector).await;
    }

    let shared = Arc::new(Shared {
        attempts: AtomicU64::new(0),
        successes: AtomicU64::new(0),
        failures_seen: AtomicU64::new(0),
    });
    if options.hold && options.stop.duration().is_none() {
        bail!("--hold runs for a duration, not a number of handshakes");
    }
    let deadline = options.stop.duration().map(|d| Instant::now() + d);
    let cpu_before = process_cpu_us();
    let started = Instant::now();

    let progress = options.progress.then(|| {
        let shared = shared.clone();
        spawn_progress(move || {
            let s = started.elapsed().as_secs_f64();
            let ok = shared.successes.load(Ordering::Relaxed);
            format!(
                "{s:6.1}s  {:9.0} conn/s  ok {ok}  failed {}",
                ok as f64 / s,
                shared.failures_seen.load(Ordering::Relaxed)
            )
        })
    });

    // Each closed-model worker is a client of its own, with its own session cache: one shared
    // cache holds at most 8 tickets per server (rustls' limit), which more concurrent workers
    // than that drain, turning resumptions into full handshakes the server never chose.
    let own_connector = || match &tickets {
        Some(counts) => {
            let mut own = (*config).clone();
            own.resumption = Resumption::store(Arc::new(CountingSessions {
                inner: rustls::client::ClientSessionMemoryCache::new(16),
                counts: counts.clone(),
            }));
            TlsConnector::from(Arc::new(own))
        }
        None => connector.clone(),
    };
    let worker = || Worker {
        target,
        server_name: server_name.clone(),
        connector: own_connector(),
        options: options.clone(),
        shared: shared.clone(),
        deadline,
    };
    let mut total = WorkerStats::new();
    if let Some(rate) = options.rate {
        // Open model: connection i is meant to start at `started + i / rate`; at most
        // `--connections` are in flight (beyond that a start waits, and the wait counts in its
        // latency, which runs from the intended start).
        let worker = Arc::new(worker());
        let in_flight = Arc::new(tokio::sync::Semaphore::new(options.connections.max(1)));
        let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
        let mut starts = pace(started, interval, 1, deadline, options.stop.count())?.remove(0);
        let mut tasks = Vec::new();
        while let Some(intended) = starts.recv().await {
            let permit = in_flight.clone().acquire_owned().await.expect("never closed");
            shared.attempts.fetch_add(1, Ordering::Relaxed);
            let worker = worker.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                let mut stats = WorkerStats::new();
                stats.attempts = 1;
                worker.one(&mut stats, intended).await;
                stats
            }));
        }
        for task in tasks {
            total.merge(task.await.context("load task panicked")?);
        }
    } else {
        // Closed model: each worker starts its next connection when the previous one is done.
        let workers: Vec<_> = (0..options.connections.max(1))
            .map(|_| tokio::spawn(worker().run()))
            .collect();
        for worker in workers {
            total.merge(worker.await.context("load worker panicked")?);
        }
    }
    end_progress(progress);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_us()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let attempts = shared.attempts.load(Ordering::Relaxed).min(total.attempts);
    let h = &total.latency;
    Ok(Report {
        target: options.target.clone(),
        connections: options.connections,
        resume: options.resume,
        requests_per_connection: options.requests_per_connection,
        elapsed_s: elapsed,
        attempts,
        successes: total.successes,
        resumed: total.resumed,
        handshakes_per_s: total.successes as f64 / elapsed,
        requests: total.requests,
        requests_per_s: total.requests as f64 / elapsed,
        latency_us: Latency::of(h),
        failures: total.failures,
        bytes_sent: total.bytes_sent.load(Ordering::Relaxed),
        bytes_received: total.bytes_received.load(Ordering::Relaxed),
        tickets: tickets.map(|t| t.report()),
        client_cpu_us_per_connection: match (cpu, attempts) {
            (Some(cpu), n) if n > 0 => cpu as f64 / n as f64,
            _ => 0.0,
        },
        window: None,
    })
}

/// The open model's schedule: start `i` is meant for `first + i × interval` and goes to lane
/// `i % lanes`, until `until` or `count` starts. A thread of its own keeps it: its
/// `std::thread::sleep` wakes within tens of microseconds, where tokio's timer rounds every sleep
/// up to the next millisecond — at 15,000 requests a second that was most of each measured
/// latency. A start that a lane cannot take yet waits in its channel (up to [`PACED_AHEAD`],
/// then the thread waits too), and the wait counts in its latency, which runs from the intended
/// start. The thread ends with the schedule or when a lane is dropped.
fn pace(
    first: Instant,
    interval: Duration,
    lanes: usize,
    until: Option<Instant>,
    count: Option<u64>,
) -> anyhow::Result<Vec<tokio::sync::mpsc::Receiver<Instant>>> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..lanes.max(1))
        .map(|_| tokio::sync::mpsc::channel(PACED_AHEAD))
        .unzip();
    let pacer = move || {
        for i in 0u64.. {
            let intended = first + interval.mul_f64(i as f64);
            if until.is_some_and(|d| intended >= d) || count.is_some_and(|n| i >= n) {
                break;
            }
            if let Some(wait) = intended.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let lane = (i % senders.len() as u64) as usize;
            if senders[lane].blocking_send(intended).is_err() {
                break;
            }
        }
    };
    std::thread::Builder::new()
        .name("loadtest-pacer".into())
        .spawn(pacer)
        .context("starting the thread that keeps the load schedule")?;
    Ok(receivers)
}

/// Start times a lane may hold before the schedule's thread waits for it.
const PACED_AHEAD: usize = 1024;

/// Pure keep-alive mode (see [`Options::keep_alive`]).
async fn run_keep_alive(
    options: Options,
    target: SocketAddr,
    server_name: ServerName<'static>,
    connector: TlsConnector,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let warm = Worker {
        target,
        server_name,
        connector,
        options: Options {
            requests_per_connection: 1,
            ..options.clone()
        },
        shared: Arc::new(Shared {
            attempts: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures_seen: AtomicU64::new(0),
        }),
        deadline: Some(started + CONNECTION_TIMEOUT),
    };
    let window = options
        .stop
        .duration()
        .context("--keep-alive measures a window of time, not a number of handshakes")?;
    let warm = Arc::new(warm);
    let stats = WorkerStats::new();
    let mut handshakes = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let mut failures = BTreeMap::new();
    let mut senders = Vec::new();
    let count = Arc::new(AtomicU64::new(0));
    let count_for_progress = count.clone();
    // Every connection is open before requests start, so the window holds no handshake.
    let opening: Vec<_> = (0..options.connections.max(1))
        .map(|_| {
            let (warm, stats) = (warm.clone(), stats.sharing_bytes());
            tokio::spawn(
                async move { tokio::time::timeout(CONNECTION_TIMEOUT, warm.open(&stats, Instant::now())).await },
            )
        })
        .collect();
    let mut resumed = 0;
    for opened in opening {
        match opened.await.context("connection task panicked")? {
            Ok(Ok((outcome, Held::Http(send, driver)))) => {
                let _ = handshakes.record(outcome.handshake_us.max(1));
                resumed += u64::from(outcome.resumed);
                senders.push((send, driver));
            }
            Ok(Ok((_, Held::None))) => {}
            Ok(Err(reason)) => *failures.entry(reason).or_default() += 1,
            Err(_) => *failures.entry("timeout".to_string()).or_default() += 1,
        }
    }
    let established = senders.len() as u64;
    let progress = options.progress.then(|| {
        let count = count_for_progress.clone();
        let start = Instant::now();
        spawn_progress(move || {
            let s = start.elapsed().as_secs_f64();
            format!("{s:6.1}s  {:9.0} req/s", count.load(Ordering::Relaxed) as f64 / s)
        })
    });

    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let authority = options.server_name.clone().unwrap_or_else(|| options.target.clone());
    let mut lanes = options
        .rate
        .map(|rate| {
            pace(
                Instant::now(),
                Duration::from_secs_f64(1.0 / rate.max(1e-3)),
                senders.len(),
                None,
                None,
            )
        })
        .transpose()?;
    let mut tasks = Vec::new();
    for (mut send, driver) in senders {
        let (count, measuring, stop) = (count.clone(), measuring.clone(), stop.clone());
        let (path, authority) = (options.path.clone(), authority.clone());
        // Open model: the connections take the schedule's start times in turn, each carrying
        // `rate / connections` requests a second; latency runs from each request's intended start.
        let mut starts = lanes.as_mut().map(|lanes| lanes.remove(0));
        tasks.push(tokio::spawn(async move {
            let _driver = driver;
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
            let mut failure = None;
            while !stop.load(Ordering::Relaxed) {
                let request = Request::get(path.as_str())
                    .header(http::header::HOST, authority.as_str())
                    .body(Empty::<Bytes>::new())
                    .expect("a GET with a path and a host is valid");
                let sent = match starts.as_mut() {
                    Some(starts) => match starts.recv().await {
                        Some(intended) => intended,
                        None => break,
                    },
                    None => Instant::now(),
                };
                let outcome = async {
                    let response = send.send_request(request).await.map_err(|e| classify_chain(&e))?;
                    let status = response.status();
                    response.into_body().collect().await.map_err(|e| classify_chain(&e))?;
                    match status {
                        http::StatusCode::OK => Ok(()),
                        other => Err(format!("http_{}", other.as_u16())),
                    }
                };
                match tokio::time::timeout(CONNECTION_TIMEOUT, outcome).await {
                    Ok(Ok(())) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        if measuring.load(Ordering::Relaxed) {
                            let _ =
                                latency.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
                        }
                    }
                    Ok(Err(reason)) => {
                        failure = Some(reason);
                        break;
                    }
                    Err(_) => {
                        failure = Some("timeout".to_string());
                        break;
                    }
                }
            }
            (latency, failure)
        }));
    }

    tokio::time::sleep(options.warmup).await;
    let server_before: Option<u64> = options.server_pids.iter().map(|p| cpu_us_of(&p.to_string())).sum();
    let client_before = process_cpu_us();
    let requests_before = count.load(Ordering::Relaxed);
    let window_start = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(window).await;
    measuring.store(false, Ordering::Relaxed);
    let seconds = window_start.elapsed().as_secs_f64();
    let requests = count.load(Ordering::Relaxed) - requests_before;
    let server_after: Option<u64> = options.server_pids.iter().map(|p| cpu_us_of(&p.to_string())).sum();
    let client_cpu = process_cpu_us()
        .zip(client_before)
        .map_or(0, |(a, b)| a.saturating_sub(b));
    stop.store(true, Ordering::Relaxed);
    end_progress(progress);

    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    for task in tasks {
        let (worker_latency, failure) = task.await.context("keep-alive worker panicked")?;
        let _ = latency.add(&worker_latency);
        if let Some(reason) = failure {
            *failures.entry(reason).or_default() += 1;
        }
    }
    let server_cpu = match (options.server_pids.is_empty(), server_before, server_after) {
        (false, Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Report {
        target: options.target.clone(),
        connections: options.connections,
        resume: options.resume,
        requests_per_connection: 0,
        elapsed_s: elapsed,
        attempts: options.connections as u64,
        successes: established,
        resumed,
        handshakes_per_s: established as f64 / elapsed,
        requests,
        requests_per_s: requests as f64 / seconds,
        latency_us: Latency::of(&handshakes),
        failures,
        bytes_sent: stats.bytes_sent.load(Ordering::Relaxed),
        bytes_received: stats.bytes_received.load(Ordering::Relaxed),
        client_cpu_us_per_connection: 0.0,
        tickets: None,
        window: Some(Window {
            seconds,
            requests,
            requests_per_s: requests as f64 / seconds,
            request_latency_us: Latency::of(&latency),
            server_cpu_us: server_cpu,
            server_cpu_us_per_request: server_cpu
                .filter(|_| requests > 0)
                .map(|cpu| cpu as f64 / requests as f64),
            client_cpu_us_per_request: if requests > 0 {
                client_cpu as f64 / requests as f64
            } else {
                0.0
            },
        }),
    })
}

impl Report {
    /// A human-readable summary.
    pub fn text(&self) -> String {
        let mut out = format!(
            "target {}  connections {}  mode {}  requests/connection {}\n\
             {:.1} s: {} attempts, {} ok ({} resumed), {:.0} conn/s, {:.0} req/s\n\
             handshake latency (µs): {}\n\
             bytes sent {}  received {}  client CPU {:.0} µs/connection\n",
            self.target,
            self.connections,
            match (self.window.is_some(), self.resume) {
                (true, _) => "keep-alive",
                (false, true) => "resumed",
                (false, false) => "full",
            },
            self.requests_per_connection,
            self.elapsed_s,
            self.attempts,
            self.successes,
            self.resumed,
            self.handshakes_per_s,
            self.requests_per_s,
            self.latency_us.text(),
            self.bytes_sent,
            self.bytes_received,
            self.client_cpu_us_per_connection,
        );
        if let Some(t) = &self.tickets {
            out.push_str(&format!(
                "TLS 1.3 tickets: {} received, {} connections offered one, {} had none to offer\n",
                t.received, t.offered, t.none_to_offer
            ));
        }
        if let Some(w) = &self.window {
            out.push_str(&format!(
                "keep-alive window {:.1} s: {} requests, {:.0} req/s\n\
                 request latency (µs): {}\n\
                 client CPU {:.1} µs/request",
                w.seconds,
                w.requests,
                w.requests_per_s,
                w.request_latency_us.text(),
                w.client_cpu_us_per_request,
            ));
            match w.server_cpu_us_per_request {
                Some(cpu) => out.push_str(&format!("  server CPU {cpu:.1} µs/request\n")),
                None => out.push('\n'),
            }
        }
        if self.failures.is_empty() {
            out.push_str("failures: none\n");
        }
        for (reason, count) in &self.failures {
            out.push_str(&format!("failures: {reason}: {count}\n"));
        }
        out
    }
}

struct Shared {
    attempts: AtomicU64,
    successes: AtomicU64,
    failures_seen: AtomicU64,
}

struct Worker {
    target: SocketAddr,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    options: Options,
    shared: Arc<Shared>,
    /// `None`: a count-bounded run.
    deadline: Option<Instant>,
}

struct WorkerStats {
    attempts: u64,
    successes: u64,
    resumed: u64,
    requests: u64,
    latency: Histogram<u64>,
    failures: BTreeMap<String, u64>,
    bytes_sent: Arc<AtomicU64>,
    bytes_received: Arc<AtomicU64>,
}

impl WorkerStats {
    fn new() -> WorkerStats {
        WorkerStats {
            attempts: 0,
            successes: 0,
            resumed: 0,
            requests: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            failures: BTreeMap::new(),
            bytes_sent: Arc::new(AtomicU64::new(0)),
            bytes_received: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Fresh counts that add their bytes to this one's.
    fn sharing_bytes(&self) -> WorkerStats {
        WorkerStats {
            bytes_sent: self.bytes_sent.clone(),
            bytes_received: self.bytes_received.clone(),
            ..WorkerStats::new()
        }
    }

    fn merge(&mut self, other: WorkerStats) {
        self.attempts += other.attempts;
        self.successes += other.successes;
        self.resumed += other.resumed;
        self.requests += other.requests;
        let _ = self.latency.add(&other.latency);
        for (reason, count) in other.failures {
            *self.failures.entry(reason).or_default() += count;
        }
        self.bytes_sent
            .fetch_add(other.bytes_sent.load(Ordering::Relaxed), Ordering::Relaxed);
        self.bytes_received
            .fetch_add(other.bytes_received.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

impl Worker {
    async fn run(self) -> WorkerStats {
        let mut stats = WorkerStats::new();
        loop {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if let Some(limit) = self.options.stop.count() {
                if self.shared.attempts.fetch_add(1, Ordering::Relaxed) >= limit {
                    break;
                }
            } else {
                self.shared.attempts.fetch_add(1, Ordering::Relaxed);
            }
            stats.attempts += 1;
            let started = Instant::now();
            if self.options.hold {
                match tokio::time::timeout(CONNECTION_TIMEOUT, self.open(&stats, started)).await {
                    Ok(Ok((outcome, held))) => {
                        stats.successes += 1;
                        stats.requests += u64::from(self.options.requests_per_connection);
                        let _ = stats.latency.record(outcome.handshake_us.max(1));
                        self.shared.successes.fetch_add(1, Ordering::Relaxed);
                        if let Some(deadline) = self.deadline {
                            tokio::time::sleep_until(deadline.into()).await;
                        }
                        drop(held);
                    }
                    Ok(Err(reason)) => *stats.failures.entry(reason).or_default() += 1,
                    Err(_) => *stats.failures.entry("timeout".into()).or_default() += 1,
                }
                break;
            }
            self.one(&mut stats, started).await;
        }
        stats
    }

    /// One connection started (or meant to start) at `started`, recorded in `stats`.
    async fn one(&self, stats: &mut WorkerStats, started: Instant) {
        match tokio::time::timeout(CONNECTION_TIMEOUT, self.connection(stats, started)).await {
            Ok(Ok(outcome)) => {
                stats.successes += 1;
                stats.resumed += u64::from(outcome.resumed);
                stats.requests += u64::from(self.options.requests_per_connection);
                let _ = stats.latency.record(outcome.handshake_us.max(1));
                self.shared.successes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(reason)) => {
                *stats.failures.entry(reason).or_default() += 1;
                self.shared.failures_seen.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                *stats.failures.entry("timeout".into()).or_default() += 1;
                self.shared.failures_seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn connection(&self, stats: &WorkerStats, started: Instant) -> Result<Outcome, String> {
        self.open(stats, started).await.map(|(outcome, _)| outcome)
    }

    /// One connection: handshake and requests. Returns what keeps the connection open.
    async fn open(&self, stats: &WorkerStats, started: Instant) -> Result<(Outcome, Held), String> {
        let tcp = TcpStream::connect(self.target).await.map_err(|e| connect_failure(&e))?;
        let _ = tcp.set_nodelay(true);
        let io = Counting {
            inner: tcp,
            sent: stats.bytes_sent.clone(),
            received: stats.bytes_received.clone(),
        };
        let mut tls = self
            .connector
            .connect(self.server_name.clone(), io)
            .await
            .map_err(|e| classify(&e))?;
        let handshake_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);

        if self.options.requests_per_connection == 0 {
            // Read once so a refused certificate (a TLS 1.3 alert after our Finished) is seen.
            let _ = tls.shutdown().await;
            let mut sink = [0u8; 512];
            loop {
                match tls.read(&mut sink).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(classify(&e)),
                }
            }
            return Ok((Outcome { handshake_us, resumed }, Held::None));
        }

        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| classify_chain(&e))?;
        let driver = tokio::spawn(conn);
        let authority = self
            .options
            .server_name
            .clone()
            .unwrap_or_else(|| self.options.target.clone());
        for _ in 0..self.options.requests_per_connection {
            let request = Request::get(self.options.path.as_str())
                .header(http::header::HOST, authority.as_str())
                .body(Empty::<Bytes>::new())
                .map_err(|_| "request".to_string())?;
            let response = send.send_request(request).await.map_err(|e| classify_chain(&e))?;
            let status = response.status();
            response.into_body().collect().await.map_err(|e| classify_chain(&e))?;
            if status != http::StatusCode::OK {
                return Err(format!("http_{}", status.as_u16()));
            }
        }
        Ok((Outcome { handshake_us, resumed }, Held::Http(send, DriverGuard(driver))))
    }
}

/// A connection kept open by `--hold` (dropping it closes the connection).
enum Held {
    None,
    Http(hyper::client::conn::http1::SendRequest<Empty<Bytes>>, DriverGuard),
}

/// Aborts the connection driver task when dropped.
struct DriverGuard(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Outcome {
    handshake_us: u64,
    resumed: bool,
}

/// `connect_<errno>` (`connect_econnrefused`), so a full backlog or an exhausted port range is
/// told apart from a refusal.
fn connect_failure(error: &std::io::Error) -> String {
    let name = match error.raw_os_error() {
        Some(111) => "econnrefused",
        Some(110) => "etimedout",
        Some(104) => "econnreset",
        Some(99) => "eaddrnotavail",
        Some(98) => "eaddrinuse",
        Some(24) => "emfile",
        Some(23) => "enfile",
        Some(101) => "enetunreach",
        Some(113) => "ehostunreach",
        Some(105) => "enobufs",
        Some(n) => return format!("connect_errno_{n}"),
        None => return format!("connect_{:?}", error.kind()).to_ascii_lowercase(),
    };
    format!("connect_{name}")
}

/// A progress line every second on stderr: rewritten in place on a terminal, one line per
/// second otherwise (logs, CI).
fn spawn_progress(line: impl Fn() -> String + Send + 'static) -> tokio::task::JoinHandle<()> {
    let terminal = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let mut err = std::io::stderr().lock();
            let _ = match terminal {
                true => write!(err, "\r{}   ", line()),
                false => writeln!(err, "{}", line()),
            };
        }
    })
}

fn end_progress(progress: Option<tokio::task::JoinHandle<()>>) {
    if let Some(progress) = progress {
        progress.abort();
        if std::io::stderr().is_terminal() {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// A failure label: `alert_<description>` for a TLS alert from the server, else a short kind.
fn classify(error: &std::io::Error) -> String {
    match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(alert)) => format!("alert_{}", alert_name(*alert)),
        Some(_) => "tls".into(),
        None => match error.kind() {
            std::io::ErrorKind::ConnectionReset => "reset".into(),
            std::io::ErrorKind::UnexpectedEof => "eof".into(),
            _ => "io".into(),
        },
    }
}

fn classify_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return classify(io);
        }
        if let Some(rustls::Error::AlertReceived(alert)) = e.downcast_ref::<rustls::Error>() {
            return format!("alert_{}", alert_name(*alert));
        }
        source = e.source();
    }
    "http".into()
}

fn alert_name(alert: rustls::AlertDescription) -> String {
    let debug = format!("{alert:?}");
    // CertificateRequired -> certificate_required
    let mut out = String::with_capacity(debug.len() + 4);
    let mut previous_lower = false;
    for c in debug.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('_');
        }
        previous_lower = c.is_ascii_lowercase();
        out.push(c.to_ascii_lowercase());
    }
    out
}

async fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("--target {target}: cannot resolve (expected HOST:PORT)"))?
        .next()
        .with_context(|| format!("--target {target}: no address"))
}

fn server_name(options: &Options) -> anyhow::Result<ServerName<'static>> {
    let name = match &options.server_name {
        Some(name) => name.clone(),
        None => options
            .target
            .rsplit_once(':')
            .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']').to_string())
            .unwrap_or_else(|| options.target.clone()),
    };
    ServerName::try_from(name.clone()).with_context(|| format!("--server-name {name}: not a DNS name or IP address"))
}

/// Counts what the client's session cache sees (resumed mode).
#[derive(Debug, Default)]
struct TicketCounts {
    received: AtomicU64,
    offered: AtomicU64,
    none: AtomicU64,
}

impl TicketCounts {
    fn report(&self) -> Tickets {
        Tickets {
            received: self.received.load(Ordering::Relaxed),
            offered: self.offered.load(Ordering::Relaxed),
            none_to_offer: self.none.load(Ordering::Relaxed),
        }
    }
}

/// rustls' in-memory session cache, counting TLS 1.3 tickets in and out.
#[derive(Debug)]
struct CountingSessions {
    inner: rustls::client::ClientSessionMemoryCache,
    counts: Arc<TicketCounts>,
}

impl rustls::client::ClientSessionStore for CountingSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: rustls::client::Tls12ClientSessionValue) {
        self.inner.set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: rustls::client::Tls13ClientSessionValue) {
        self.counts.received.fetch_add(1, Ordering::Relaxed);
        self.inner.insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<rustls::client::Tls13ClientSessionValue> {
        let ticket = self.inner.take_tls13_ticket(server_name);
        let counter = if ticket.is_some() {
            &self.counts.offered
        } else {
            &self.counts.none
        };
        counter.fetch_add(1, Ordering::Relaxed);
        ticket
    }
}

fn client_config(options: &Options, tickets: Option<Arc<TicketCounts>>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    match &options.groups {
        Some(groups) => {
            let all = rustls::crypto::aws_lc_rs::ALL_KX_GROUPS;
            provider.kx_groups = groups
                .iter()
                .map(|g| {
                    all.iter()
                        .find(|k| k.name() == *g)
                        .copied()
                        .with_context(|| format!("--groups: {g:?} is not available"))
                })
                .collect::<anyhow::Result<_>>()?;
        }
        None if !options.post_quantum => provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
        None => {}
    }
    // Offer AES-128-GCM first, as Cloudflare does towards origins (rustls would offer AES-256
    // first, which moves every peer onto the costlier SHA-384 key schedule).
    provider.cipher_suites.sort_by_key(|suite| match suite.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => 3,
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 4,
        _ => 5,
    });
    let provider = Arc::new(provider);
    let chain = load::certificates(&options.cert)?;
    let key = load::private_key(&options.key)?;
    let versions: &[&rustls::SupportedProtocolVersion] = match options.tls_versions {
        TlsVersions::Tls12 => &[&rustls::version::TLS12],
        TlsVersions::Tls13 => &[&rustls::version::TLS13],
        TlsVersions::Both => rustls::DEFAULT_VERSIONS,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .context("protocol versions")?;
    let builder = match &options.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for ca in load::trusted_cas(ca)? {
                roots.add(ca.der).context("--ca: unusable certificate")?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(UnverifiedServer(provider))),
    };
    let mut config = builder
        .with_client_auth_cert(chain, key)
        .with_context(|| format!("{}: does not match {}", options.key.display(), options.cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = match tickets {
        Some(counts) => Resumption::store(Arc::new(CountingSessions {
            inner: rustls::client::ClientSessionMemoryCache::new(4096),
            counts,
        })),
        None => Resumption::disabled(),
    };
    Ok(Arc::new(config))
}

/// Accepts any server certificate (still checking the handshake signature): a load generator
/// measuring the server's cost need not pay for verifying it. `--ca` turns verification on.
#[derive(Debug)]
struct UnverifiedServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for UnverifiedServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TCP stream that counts bytes both ways.
struct Counting {
    inner: TcpStream,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.received
            .fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counting {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// User + system CPU time of this process, microseconds (Linux `/proc`; USER_HZ is 100).
pub(crate) fn process_cpu_us() -> Option<u64> {
    // CLOCK_PROCESS_CPUTIME_ID: every thread, nanosecond resolution (getrusage's figure).
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    let nanos = u64::try_from(t.tv_sec).ok()? * 1_000_000_000 + u64::try_from(t.tv_nsec).ok()?;
    Some(nanos / 1_000)
}

/// User + system CPU time of process `pid` (all its threads), microseconds, from
/// `/proc/PID/stat` (clock-tick resolution: no syscall reads another process's usage).
pub(crate) fn cpu_us_of(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    Some((utime + stime) * 1_000_000 / ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_are_snake_case() {
        assert_eq!(
            alert_name(rustls::AlertDescription::CertificateRequired),
            "certificate_required"
        );
        assert_eq!(alert_name(rustls::AlertDescription::UnknownCA), "unknown_ca");
    }

    #[test]
    fn own_cpu_time_is_readable_both_ways() {
        let before = process_cpu_us().expect("clock");
        // Spin until this process has used 30 ms of CPU (bounded: 10 s of wall time).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut own = before;
        while own < before + 30_000 && std::time::Instant::now() < deadline {
            std::hint::black_box((0..1000u64).sum::<u64>());
            own = process_cpu_us().expect("clock");
        }
        assert!(own >= before + 30_000, "CPU clock did not advance: {before} -> {own}");
        let from_proc = cpu_us_of("self").expect("/proc");
        // The same quantity, the /proc figure at clock-tick resolution.
        assert!(from_proc > 0 && from_proc <= own + 20_000, "{from_proc} vs {own}");
    }
}

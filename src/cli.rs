//! Command-line interface (clap derive types only; `main.rs` gives them meaning).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "originguard",
    version,
    about = "mTLS-verifying reverse proxy for Cloudflare Authenticated Origin Pulls"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    #[command(
        after_help = "Examples:\n  originguard serve --config /etc/originguard/originguard.toml\n  \
        ORIGINGUARD_CONFIG=/etc/originguard/originguard.toml originguard serve\n\n\
        Signals: SIGHUP reloads (keeping the last good state on error); SIGTERM/SIGINT drain and exit 0."
    )]
    Serve {
        /// Configuration file.
        #[arg(long, short, default_value = "config/originguard.toml", env = "ORIGINGUARD_CONFIG")]
        config: PathBuf,
    },
    /// Run a self-contained demo: throwaway PKI, built-in echo backend, proxy on 127.0.0.1.
    #[command(
        after_help = "Examples:\n  originguard demo\n  originguard demo --listen 127.0.0.1:9443\n\n\
        It prints the curl commands that succeed (with the client certificate) and fail (without)."
    )]
    Demo {
        /// Address for the proxy.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
    },
    /// Validate a configuration exactly as `serve` would and print the effective policy.
    #[command(
        after_help = "Examples:\n  originguard check --config /etc/originguard/originguard.toml\n  \
        originguard check --strict      # in ExecStartPre= or CI: any warning fails\n\n\
        Exit status: 0 valid, 78 invalid configuration or certificate file, 1 warnings with --strict."
    )]
    Check {
        /// Configuration file.
        #[arg(long, short, default_value = "config/originguard.toml", env = "ORIGINGUARD_CONFIG")]
        config: PathBuf,
        /// Exit 1 when there is any warning (for ExecStartPre= and CI).
        #[arg(long)]
        strict: bool,
    },
    /// TLS handshake load generator (mTLS).
    Loadtest(LoadtestArgs),
    /// The Cloudflare side of Authenticated Origin Pulls, through its API.
    Cloudflare {
        #[command(subcommand)]
        command: CloudflareCommand,
    },
    /// Certificate helpers.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Write a development PKI (CA, server and client certificates). Never for production.
    #[command(after_help = "Examples:\n  originguard pki dev --out certs/dev\n  \
        originguard pki dev --out certs/dev --days 30 --force   # replace an existing one")]
    Dev {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// Overwrite existing files (by default an existing ca.key, or any other file, is kept and
        /// the command fails).
        #[arg(long)]
        force: bool,
    },
    /// Create or rotate a session-ticket key file shared by replicas (`tls.ticket_keys`).
    #[command(
        after_help = "Examples:\n  originguard pki ticket-keys --out /etc/originguard/ticket.keys\n  \
        originguard pki ticket-keys --out /etc/originguard/ticket.keys --keep 3   # rotate: new key first\n\n\
        Distribute the file to every replica (e.g. a Kubernetes Secret) and reload; the first key\n\
        encrypts, all decrypt. Written atomically with mode 0600."
    )]
    TicketKeys {
        /// The key file (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Keys kept in all, the new one included: older tickets stay readable until then.
        #[arg(long, default_value_t = 3)]
        keep: usize,
    },
    /// Make your own CA for zone-level / per-hostname Authenticated Origin Pulls.
    #[command(after_help = "Examples:\n  originguard pki custom-ca --out aop/ca\n  \
        originguard pki custom-ca --out aop/ca --key-type p256 --common-name \"Example origin-pull CA\"\n\n\
        Keep ca.key offline; it prints the trust = [...] line for the config.")]
    CustomCa {
        /// Output directory for ca.pem and ca.key (never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Key algorithm of the CA.
        #[arg(long, value_enum, default_value = "rsa4096")]
        key_type: crate::tools::pki::KeyType,
        /// The CA's common name (CN).
        #[arg(long, default_value = "originguard origin-pull CA")]
        common_name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a client certificate directly from a CA made by `pki custom-ca` (to upload to
    /// Cloudflare).
    #[command(after_help = "Examples:\n  originguard pki client --ca aop/ca --out aop/client\n  \
        originguard cloudflare enable --zone $ZONE --zone-cert aop/client/client.pem aop/client/client.key")]
    Client {
        /// Directory holding ca.pem and ca.key.
        #[arg(long)]
        ca: PathBuf,
        /// Output directory for client.pem and client.key.
        #[arg(long)]
        out: PathBuf,
        /// Key algorithm of the client certificate.
        #[arg(long, value_enum, default_value = "p256")]
        key_type: crate::tools::pki::KeyType,
        /// The client certificate's common name (CN).
        #[arg(long, default_value = "cloudflare-origin-pull")]
        common_name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
    },
}

/// `originguard cloudflare ...`
#[derive(Debug, Subcommand)]
pub enum CloudflareCommand {
    /// Fetch Cloudflare's current IP ranges (no token needed), for `listener.allow_peers`.
    #[command(after_help = "Examples:\n  originguard cloudflare ips\n  \
        originguard cloudflare ips --out /etc/originguard/cloudflare-ips.txt   # then allow_peers = [\"file:/etc/originguard/cloudflare-ips.txt\"]\n\n\
        Run it from a timer and reload: the file is replaced atomically.")]
    Ips {
        /// Write the ranges to this file (one CIDR a line, atomically) instead of printing them.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON instead of one range a line.
        #[arg(long)]
        json: bool,
        /// API base URL.
        #[arg(long, default_value = crate::tools::cloudflare::api::DEFAULT_BASE)]
        api_base: String,
    },
    /// Post-quantum key agreement between Cloudflare and the origin (the zone's
    /// origin_post_quantum_encryption setting).
    #[command(after_help = "Examples:\n  originguard cloudflare pq status --zone $ZONE\n  \
        originguard cloudflare pq set preferred --zone $ZONE --dry-run\n\n\
        supported (Cloudflare's default): an X25519 share, the hybrid advertised — the origin's\n\
        tls.key_exchange = \"hybrid-preferred\" gets X25519MLKEM768 by HelloRetryRequest;\n\
        preferred: the hybrid share first; off: never.")]
    Pq {
        #[command(subcommand)]
        command: PqCommand,
    },
    /// Show the zone's Authenticated Origin Pulls settings and certificates.
    #[command(
        after_help = "Examples:\n  CLOUDFLARE_API_TOKEN=... originguard cloudflare status --zone $ZONE\n  \
        originguard cloudflare status --zone $ZONE --hostname api.example.com --json"
    )]
    Status {
        #[command(flatten)]
        api: ApiArgs,
        /// Also show this hostname's per-hostname association (repeatable).
        #[arg(long)]
        hostname: Vec<String>,
    },
    /// Turn a level on: upload (and wait until active) where needed, after checking that the
    /// local config accepts the certificate Cloudflare will present.
    #[command(after_help = "Examples:\n  originguard cloudflare enable --zone $ZONE --global\n  \
        originguard cloudflare enable --zone $ZONE --zone-cert client.pem client.key --dry-run\n  \
        originguard cloudflare enable --zone $ZONE --hostname api.example.com --cert api.pem --key api.key")]
    Enable {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        change: ChangeArgs,
        #[command(flatten)]
        level: LevelArgs,
        #[command(flatten)]
        host_cert: HostCertArgs,
        #[command(flatten)]
        guard: GuardArgs,
    },
    /// Turn a level off.
    #[command(after_help = "Examples:\n  originguard cloudflare disable --zone $ZONE --global\n  \
        originguard cloudflare disable --zone $ZONE --hostname api.example.com")]
    Disable {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        change: ChangeArgs,
        #[command(flatten)]
        level: LevelArgs,
    },
    /// Replace the certificate Cloudflare presents: upload, wait until active, switch, delete the
    /// old one.
    #[command(
        after_help = "Examples:\n  originguard cloudflare rotate --zone $ZONE --cert new.pem --key new.key\n  \
        originguard cloudflare rotate --zone $ZONE --hostname api.example.com --cert new.pem --key new.key"
    )]
    Rotate {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        change: ChangeArgs,
        /// The new client certificate (PEM) Cloudflare will present.
        #[arg(long)]
        cert: PathBuf,
        /// Its private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// Rotate this hostname's per-hostname certificate (default: the zone-level one).
        #[arg(long)]
        hostname: Option<String>,
        #[command(flatten)]
        guard: GuardArgs,
    },
}

/// `originguard cloudflare pq ...`
#[derive(Debug, Subcommand)]
pub enum PqCommand {
    /// Show the setting.
    Status {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Change the setting.
    Set {
        /// supported | preferred | off
        #[arg(value_enum)]
        value: crate::tools::cloudflare::PqSetting,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Zone ID.
    #[arg(long)]
    pub zone: String,
    /// API base URL (for tests and proxies). The token comes from CLOUDFLARE_API_TOKEN.
    #[arg(long, default_value = crate::tools::cloudflare::api::DEFAULT_BASE)]
    pub api_base: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of the commands that change something at Cloudflare.
#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    /// Print the requests that would change something instead of sending them.
    #[arg(long)]
    pub dry_run: bool,
    /// Longest wait for an uploaded certificate to become active ("5m", "90s").
    #[arg(long, default_value = "300s", value_parser = crate::config::parse_duration)]
    pub wait: Duration,
    /// Pause between status checks while waiting.
    #[arg(long, default_value = "2s", value_parser = crate::config::parse_duration)]
    pub poll_interval: Duration,
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct LevelArgs {
    /// Global AOP: Cloudflare's shared certificate.
    #[arg(long)]
    pub global: bool,
    /// Zone-level AOP with your certificate and key (for `disable`: give no files, use --zone-level).
    #[arg(long, num_args = 2, value_names = ["CERT", "KEY"])]
    pub zone_cert: Option<Vec<PathBuf>>,
    /// Zone-level AOP (for `disable`).
    #[arg(long)]
    pub zone_level: bool,
    /// Per-hostname AOP for this hostname (with --cert/--key for `enable`).
    #[arg(long)]
    pub hostname: Option<String>,
}

/// The certificate and key for per-hostname `enable`.
#[derive(Debug, clap::Args)]
pub struct HostCertArgs {
    /// The per-hostname client certificate (PEM) to upload.
    #[arg(long, requires = "hostname")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "hostname")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct GuardArgs {
    /// The local config that must accept the certificate Cloudflare will present.
    #[arg(long, default_value = "config/originguard.toml", env = "ORIGINGUARD_CONFIG")]
    pub config: PathBuf,
    /// Skip the lock-out check.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct LoadtestArgs {
    /// Server address: HOST:PORT, or `https://HOST[:PORT][/PATH]` (sets the server name and the
    /// request path too).
    #[arg(long)]
    pub target: String,
    /// TLS server name (SNI) and Host header; default: the target's host.
    #[arg(long)]
    pub server_name: Option<String>,
    /// Verify the server certificate against this CA (default: not verified).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM).
    #[arg(long)]
    pub cert: PathBuf,
    /// Client private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// Concurrent workers, each opening one connection after another.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// How long to run ("10s", "1m30s").
    #[arg(long, default_value = "10s", conflicts_with = "handshakes", value_parser = crate::config::parse_duration)]
    pub duration: Duration,
    /// Stop after this many connections instead of after --duration.
    #[arg(long)]
    pub handshakes: Option<u64>,
    /// Resume TLS sessions (tickets) after the first handshake.
    #[arg(long)]
    pub resume: bool,
    /// HTTP/1.1 GET requests per connection; each must answer 200 for the connection to count.
    #[arg(long, default_value_t = 1)]
    pub requests_per_connection: u32,
    /// Request path.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Offer the X25519MLKEM768 hybrid key exchange first (default: X25519 only).
    #[arg(long)]
    pub post_quantum: bool,
    /// Keep each worker's connection open and idle until --duration ends (one per worker),
    /// to measure the memory idle connections cost the server.
    #[arg(long, conflicts_with = "handshakes")]
    pub hold: bool,
    /// Pure keep-alive: open --connections connections first, then send requests on them for
    /// --warmup plus --duration; only the --duration window is measured (no handshake in it).
    #[arg(long, conflicts_with_all = ["handshakes", "hold", "resume"])]
    pub keep_alive: bool,
    /// Keep-alive mode: requests before the measuring window opens.
    #[arg(long, default_value = "1s", requires = "keep_alive", value_parser = crate::config::parse_duration)]
    pub warmup: Duration,
    /// Keep-alive mode: read this process's CPU time (all threads) at the window's edges and
    /// report server CPU per request; repeat for multi-process servers (nginx workers).
    #[arg(long, requires = "keep_alive")]
    pub server_pid: Vec<u32>,
    /// Open model: start this many connections per second (with --keep-alive: requests per
    /// second) on a fixed schedule, whatever the server does; latency counts from each intended
    /// start. --connections caps how many are in flight. A thread of its own keeps the schedule
    /// (within tens of microseconds), so sub-millisecond latencies are the server's.
    #[arg(long, conflicts_with = "hold")]
    pub rate: Option<f64>,
    /// TLS versions to offer.
    #[arg(long, value_enum, default_value = "both")]
    pub tls_version: crate::tools::loadgen::TlsVersions,
    /// Key-exchange groups to offer, in order, comma-separated: x25519, x25519mlkem768,
    /// secp256r1, secp384r1 (default: x25519; with --post-quantum, rustls' default order).
    #[arg(long, value_delimiter = ',', value_parser = crate::tools::loadgen::parse_group)]
    pub groups: Option<Vec<rustls::NamedGroup>>,
    /// A ClientHello shaped like Cloudflare's default towards origins (zone setting
    /// origin_post_quantum_encryption = supported): an X25519 key share, X25519MLKEM768 only
    /// advertised; the same as --groups x25519,x25519mlkem768. Against tls.key_exchange =
    /// "hybrid-preferred" every handshake takes a HelloRetryRequest.
    #[arg(long, conflicts_with_all = ["groups", "post_quantum"])]
    pub cloudflare_hello: bool,
    /// Exit 1 when more than this fraction of connections (or keep-alive connections) failed;
    /// 0 (the default) fails the run on any failure.
    #[arg(long, default_value_t = 0.0)]
    pub max_failure_rate: f64,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Print one JSON object at the end instead of text.
    #[arg(long)]
    pub json: bool,
}

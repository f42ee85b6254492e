//! Command-line interface (clap derive types only; `main.rs` gives them meaning).

use std::net::SocketAddr;
use std::path::PathBuf;

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
    Serve {
        /// Configuration file.
        #[arg(long, short, default_value = "config/originguard.toml")]
        config: PathBuf,
    },
    /// Run a self-contained demo: throwaway PKI, built-in echo backend, proxy on 127.0.0.1.
    Demo {
        /// Address for the proxy.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
    },
    /// Validate a configuration exactly as `serve` would and print the effective policy.
    Check {
        #[arg(long, short, default_value = "config/originguard.toml")]
        config: PathBuf,
    },
    /// TLS handshake load generator (mTLS).
    Loadtest(LoadtestArgs),
    /// Certificate helpers.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Write a development PKI (CA, server and client certificates). Never for production.
    Dev {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
    },
}

#[derive(Debug, clap::Args)]
pub struct LoadtestArgs {
    /// Server address, HOST:PORT.
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
    /// How long to run ("10s", "1m").
    #[arg(long, default_value = "10s", conflicts_with = "handshakes")]
    pub duration: String,
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
    /// Print one JSON object at the end instead of text.
    #[arg(long)]
    pub json: bool,
}

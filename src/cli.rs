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

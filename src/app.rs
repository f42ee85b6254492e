//! Wiring: load and validate, log what is trusted, bind, serve until a signal, drain.

use std::sync::Arc;

use anyhow::Context;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::check;
use crate::config::{Config, ConfigError, LogConfig, LogFormat};
use crate::proxy::{self, Proxy};
use crate::tls::PolicySet;

/// Loads the config and builds the policy: every file read and checked, as `serve` needs it.
pub fn load(path: &std::path::Path) -> Result<(Config, PolicySet), ConfigError> {
    let config = Config::load(path)?;
    let policies = PolicySet::build(&config)?;
    Ok((config, policies))
}

/// Installs the global tracing subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub fn init_logging(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Runs the proxy for a loaded config until `shutdown` resolves, then drains.
pub async fn serve(
    config: Config,
    policies: PolicySet,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let address = config.listener.address;
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!(
            "cannot listen on {address} (listener.address in {})",
            config.file.display()
        )
    })?;
    log_policies(&config, &policies);
    info!(address = %listener.local_addr()?, upstream = %config.upstream.target, "listening");

    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    proxy::serve(listener, Arc::new(Proxy::new(&config, policies)), token).await;
    info!("stopped");
    Ok(())
}

fn log_policies(config: &Config, policies: &PolicySet) {
    for policy in policies.all() {
        for ca in &policy.cas {
            let s = check::CertSummary::of(&ca.der);
            info!(policy = %policy.name, subject = %s.subject, sha256 = %s.sha256, source = %ca.source, "trusting client CA");
        }
        info!(
            policy = %policy.name,
            server_names = ?policy.server_names,
            verify_depth = policy.verify_depth,
            crls = policy.crl_files.len(),
            allow_lists = !policy.allow.is_empty(),
            "client certificates required"
        );
    }
    if !config.listener.allow_peers.is_empty() {
        info!(
            networks = config.listener.allow_peers.len(),
            "peer gate on: listener.allow_peers"
        );
    }
    for warning in check::warnings(policies, OffsetDateTime::now_utc()) {
        warn!("{warning}");
    }
}

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
use crate::tls::Policy;

/// Loads the config and builds the policy: every file read and checked, as `serve` needs it.
pub fn load(path: &std::path::Path) -> Result<(Config, Policy), ConfigError> {
    let config = Config::load(path)?;
    let policy = Policy::build(&config)?;
    Ok((config, policy))
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
    policy: Policy,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let address = config.listener.address;
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!(
            "cannot listen on {address} (listener.address in {})",
            config.file.display()
        )
    })?;
    log_policy(&config, &policy);
    info!(address = %listener.local_addr()?, upstream = %config.upstream.target, "listening");

    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    proxy::serve(listener, Arc::new(Proxy::new(&config, policy)), token).await;
    info!("stopped");
    Ok(())
}

fn log_policy(config: &Config, policy: &Policy) {
    for ca in &policy.cas {
        let s = check::CertSummary::of(&ca.der);
        info!(subject = %s.subject, sha256 = %s.sha256, source = %ca.source, "trusting client CA");
    }
    info!(
        verify_depth = policy.verify_depth,
        crls = policy.crl_files.len(),
        certificate = %config.tls.certificate.display(),
        "client certificates required"
    );
    for warning in check::warnings(policy, OffsetDateTime::now_utc()) {
        warn!("{warning}");
    }
}

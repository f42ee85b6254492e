//! Wiring: load and validate, log what is trusted, bind, serve until a signal, drain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, ConfigError, LogConfig, LogFormat};
use crate::metrics::Metrics;
use crate::proxy::{self, Live, Proxy};
use crate::reload::Reloader;
use crate::tls::PolicySet;
use crate::{admin, check, signal};

/// Loads the config and builds the policy: every file read and checked, as `serve` needs it.
pub fn load(path: &std::path::Path) -> Result<(Config, PolicySet), ConfigError> {
    let config = Config::load(path)?;
    let policies = PolicySet::build(&config)?;
    Ok((config, policies))
}

/// Installs the global tracing subscriber. `RUST_LOG`, when set, overrides `log.level`.
///
/// Logging never takes the process down: a line that cannot be written (stderr piped into a
/// reader that went away, a full pipe to a crashed log shipper) is dropped and counted in
/// `originguard_log_dropped_total`, and tracing-subscriber's own fallback (`eprintln!`, which
/// panics when stderr is gone) is off.
pub fn init_logging(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(|| DroppingStderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// stderr, where a failed write is dropped and counted instead of reported.
struct DroppingStderr;

impl std::io::Write for DroppingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if std::io::stderr().lock().write_all(buf).is_err() {
            crate::metrics::LOG_DROPPED.inc();
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Binds the configured listeners and runs until `shutdown` resolves, then drains.
pub async fn serve(
    config: Config,
    policies: PolicySet,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });

    let address = config.listener.address;
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!(
            "cannot listen on {address} (listener.address in {})",
            config.file.display()
        )
    })?;
    let admin = match &config.admin {
        Some(admin) => Some(TcpListener::bind(admin.address).await.with_context(|| {
            format!(
                "cannot listen on {} (admin.address in {})",
                admin.address,
                config.file.display()
            )
        })?),
        None => None,
    };
    run(config, policies, listener, admin, token).await;
    Ok(())
}

/// Runs the proxy (and the admin endpoints) on bound listeners until `shutdown` is cancelled;
/// reloads on SIGHUP; warns daily about expiring certificates.
pub async fn run(
    config: Config,
    policies: PolicySet,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: CancellationToken,
) {
    log_policies(&config, &policies);
    if let Ok(address) = listener.local_addr() {
        info!(%address, upstream = %config.upstream.target, "listening");
    }
    let live = Live::new(Proxy::new(&config, policies), Metrics::new());
    let reloader = Arc::new(Reloader::new(config, live.clone()));

    let background = CancellationToken::new();
    tokio::spawn(reload_on_sighup(reloader.clone(), background.clone()));
    tokio::spawn(warn_daily_about_expiry(live.clone(), background.clone()));
    if let Some(admin) = admin {
        tokio::spawn(admin::serve(admin, live.clone(), reloader, background.clone()));
    }
    // The admin endpoints outlive the drain, so /readyz answers 503 while it runs.
    proxy::serve(listener, live, shutdown).await;
    background.cancel();
    info!("stopped");
}

async fn reload_on_sighup(reloader: Arc<Reloader>, stop: CancellationToken) {
    let Some(mut hangups) = signal::hangups() else {
        return;
    };
    loop {
        tokio::select! {
            _ = hangups.recv() => {
                info!("SIGHUP received: reloading");
                let reloader = reloader.clone();
                let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
            }
            () = stop.cancelled() => return,
        }
    }
}

async fn warn_daily_about_expiry(live: Arc<Live>, stop: CancellationToken) {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    loop {
        tokio::select! {
            () = tokio::time::sleep(DAY) => {}
            () = stop.cancelled() => return,
        }
        let proxy = live.current.load_full();
        for warning in check::warnings(&proxy.policies, OffsetDateTime::now_utc()) {
            warn!("{warning}");
        }
    }
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

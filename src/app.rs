//! Wiring: load and validate, log what is trusted, bind, serve until a signal, drain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::proxy::{self, Live, Proxy};
use crate::reload::Reloader;
use crate::tls::PolicySet;
use crate::{admin, audit, signal};

/// Loads the config and builds the policies and upstream clients: every file read and checked,
/// as `serve` needs it.
pub fn load(path: &std::path::Path) -> Result<(Config, Proxy), ConfigError> {
    let config = Config::load(path)?;
    let policies = PolicySet::build(&config)?;
    let proxy = Proxy::new(&config, policies)?;
    Ok((config, proxy))
}

/// Binds the configured listeners and runs until `shutdown` resolves, then drains.
pub async fn serve(
    config: Config,
    proxy: Proxy,
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
    run(config, proxy, listener, admin, token).await;
    Ok(())
}

/// Runs the proxy (and the admin endpoints) on bound listeners until `shutdown` is cancelled;
/// reloads on SIGHUP; warns daily about expiring certificates.
pub async fn run(
    config: Config,
    proxy: Proxy,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: CancellationToken,
) {
    log_policies(&config, &proxy.policies);
    if let Ok(address) = listener.local_addr() {
        info!(%address, upstream = %config.upstream.target, "listening");
    }
    let shutdown_delay = config.listener.shutdown_delay;
    let live = Live::new(proxy, Metrics::new());
    let watch = config.reload.watch.then(|| config.clone());
    let reloader = Arc::new(Reloader::new(config, live.clone()));

    let background = CancellationToken::new();
    tokio::spawn(reload_on_sighup(reloader.clone(), background.clone()));
    tokio::spawn(warn_daily_about_expiry(live.clone(), background.clone()));
    if let Some(config) = watch {
        tokio::spawn(crate::watch::run(config, reloader.clone(), background.clone()));
    }
    if let Some(admin) = admin {
        tokio::spawn(admin::serve(admin, live.clone(), reloader, background.clone()));
    }
    // On SIGTERM: /readyz turns 503 at once, serving goes on for shutdown_delay (so load
    // balancers and Kubernetes take the endpoint out first), then the listener closes and the
    // drain begins.
    let accepting = CancellationToken::new();
    {
        let (live, accepting, shutdown) = (live.clone(), accepting.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            live.ready.store(false, std::sync::atomic::Ordering::Release);
            crate::notify::notify("STOPPING=1");
            if !shutdown_delay.is_zero() {
                info!(
                    ?shutdown_delay,
                    "shutting down: not ready; still serving for listener.shutdown_delay"
                );
                tokio::time::sleep(shutdown_delay).await;
            }
            accepting.cancel();
        });
    }
    crate::notify::notify("READY=1");
    // The admin endpoints outlive the drain, so /readyz answers 503 while it runs.
    proxy::serve(listener, live, accepting).await;
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
        for warning in audit::warnings(&proxy.policies, OffsetDateTime::now_utc()) {
            warn!("{warning}");
        }
    }
}

fn log_policies(config: &Config, policies: &PolicySet) {
    for policy in policies.all() {
        for ca in &policy.cas {
            let s = audit::CertSummary::of(&ca.der);
            info!(policy = %policy.name, subject = %s.subject, sha256 = %s.sha256, key = %s.key, source = %ca.source, "trusting client CA");
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
    info!(
        key_exchange = config.tls.key_exchange.as_str(),
        fips = crate::tls::server::fips_status(),
        "TLS"
    );
    if !config.listener.allow_peers.is_empty() {
        info!(
            networks = config.listener.allow_peers.len(),
            "peer gate on: listener.allow_peers"
        );
    }
    let now = OffsetDateTime::now_utc();
    for warning in audit::config_warnings(config, now)
        .into_iter()
        .chain(audit::warnings(policies, now))
    {
        warn!("{warning}");
    }
}

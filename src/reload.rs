//! Live reload (SIGHUP, `POST /reload`): build and validate the complete new state first, then
//! swap it in for new connections; keep the last good state on any error.
//!
//! Everything the config names is re-read: certificates, keys, CAs, CRLs, allow-lists, hosts,
//! upstream, headers. Each reload builds new `ServerConfig`s, so every policy gets fresh session
//! ticket keys: a client verified under the old trust material cannot resume into the new one.
//! Established connections keep the generation they started with and are never dropped.
//! Settings that cannot change in a running process (listener address, max_connections, admin
//! address, logging) are reported and left as they are.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use tracing::{info, warn};

use crate::audit;
use crate::config::{Config, ConfigError};
use crate::proxy::{Live, Proxy};
use crate::tls::PolicySet;

/// Reloads `path` into `live`.
pub(crate) struct Reloader {
    path: PathBuf,
    live: Arc<Live>,
    /// The settings the process started with that a reload cannot change.
    started_with: Config,
    /// One reload at a time (SIGHUP and the admin endpoint may race).
    lock: Mutex<()>,
}

impl Reloader {
    pub(crate) fn new(started_with: Config, live: Arc<Live>) -> Reloader {
        Reloader {
            path: started_with.file.clone(),
            live,
            started_with,
            lock: Mutex::new(()),
        }
    }

    /// Reads, validates and swaps in the config; returns the changed settings that need a
    /// restart (reported, not applied). Blocking (file IO): call from a blocking context.
    pub(crate) fn reload(&self) -> Result<Vec<&'static str>, ConfigError> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        crate::notify::notify("RELOADING=1");
        let result = self.reload_locked();
        match &result {
            Ok(_) => crate::notify::notify("READY=1\nSTATUS=reloaded"),
            Err(error) => crate::notify::notify(&format!("READY=1\nSTATUS=reload failed: {error}")),
        }
        result
    }

    fn reload_locked(&self) -> Result<Vec<&'static str>, ConfigError> {
        let built = Config::load(&self.path).and_then(|config| {
            let proxy = Proxy::new(&config, PolicySet::build(&config)?)?;
            Ok((config, proxy))
        });
        let (config, proxy) = match built {
            Ok(built) => built,
            Err(error) => {
                self.live.metrics.reload(false);
                warn!(%error, "reload failed; keeping the running configuration");
                return Err(error);
            }
        };
        let fixed = self.fixed_changes(&config);
        for change in &fixed {
            warn!("reload: {change} cannot change while running; restart to apply it");
        }
        let now = OffsetDateTime::now_utc();
        for warning in audit::config_warnings(&config, now)
            .into_iter()
            .chain(audit::warnings(&proxy.policies, now))
        {
            warn!("{warning}");
        }
        self.live.metrics.set_certificates(&proxy.policies);
        let hosts = proxy.policies.hosts.len();
        self.live.publish(proxy);
        self.live.metrics.reload(true);
        info!(path = %self.path.display(), hosts, "reloaded");
        Ok(fixed)
    }

    fn fixed_changes(&self, new: &Config) -> Vec<&'static str> {
        let old = &self.started_with;
        let mut changes = Vec::new();
        if new.listener.address != old.listener.address {
            changes.push("listener.address");
        }
        if new.listener.max_connections != old.listener.max_connections {
            changes.push("listener.max_connections");
        }
        if new.admin.as_ref().map(|a| a.address) != old.admin.as_ref().map(|a| a.address) {
            changes.push("admin.address");
        }
        if new.log.format != old.log.format || new.log.level != old.log.level {
            changes.push("log.format / log.level");
        }
        changes
    }
}

//! Policy selection: SNI -> policy for the handshake (per-hostname AOP), and Host/:authority ->
//! policy for the per-request guard (421).
//!
//! Names match case-insensitively, exact names before `*.domain` wildcards; a wildcard matches
//! exactly one label (`*.example.com` matches `a.example.com`, not `example.com` nor
//! `a.b.example.com`). No SNI, or a name no `[[hosts]]` table lists, selects the default
//! (top-level) policy. When two tables list the same name, the first wins (`check` warns).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use super::{Keys, Policy};
use crate::config::{Config, ConfigError};

/// Which policy a name selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyId {
    Default,
    Host(usize),
}

/// The default policy and one per `[[hosts]]` table, with the name index.
#[derive(Debug)]
pub struct PolicySet {
    pub default: Arc<Policy>,
    pub hosts: Vec<Arc<Policy>>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
}

impl PolicySet {
    /// Builds and validates every policy in the config.
    pub fn build(config: &Config) -> Result<PolicySet, ConfigError> {
        let default = Arc::new(Policy::build(config)?);
        let mut hosts = Vec::with_capacity(config.hosts.len());
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, host) in config.hosts.iter().enumerate() {
            let keys = Keys {
                name: format!("hosts[{i}]"),
                certificate: format!("hosts[{i}].certificate"),
                private_key: format!("hosts[{i}].private_key"),
                client_auth: format!("hosts[{i}].client_auth"),
            };
            let policy = Policy::build_one(
                config,
                &keys,
                &host.certificate,
                &host.private_key,
                &host.client_auth,
                &host.server_names,
            )?;
            hosts.push(Arc::new(policy));
            for name in &host.server_names {
                let index = match name.strip_prefix("*.") {
                    Some(_) => &mut wildcard,
                    None => &mut exact,
                };
                let key = name.strip_prefix("*.").unwrap_or(name).to_string();
                index.entry(key).or_insert(i);
            }
        }
        Ok(PolicySet {
            default,
            hosts,
            exact,
            wildcard,
        })
    }

    /// A set with only a default policy.
    pub fn single(policy: Policy) -> PolicySet {
        PolicySet {
            default: Arc::new(policy),
            hosts: Vec::new(),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }

    /// Whether there is anything to select between.
    pub fn has_hosts(&self) -> bool {
        !self.hosts.is_empty()
    }

    /// The policy for a TLS server name (SNI).
    pub fn select(&self, server_name: Option<&str>) -> (PolicyId, &Arc<Policy>) {
        let id = server_name.map_or(PolicyId::Default, |name| self.lookup(name));
        (id, self.get(id))
    }

    /// The policy a request's `Host` / `:authority` (port allowed) would select.
    pub fn select_authority(&self, authority: &str) -> PolicyId {
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        };
        self.lookup(host)
    }

    pub fn get(&self, id: PolicyId) -> &Arc<Policy> {
        match id {
            PolicyId::Default => &self.default,
            PolicyId::Host(i) => &self.hosts[i],
        }
    }

    /// Every policy, default first.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Policy>> {
        std::iter::once(&self.default).chain(self.hosts.iter())
    }

    fn lookup(&self, name: &str) -> PolicyId {
        if self.hosts.is_empty() {
            return PolicyId::Default;
        }
        let name = name.strip_suffix('.').unwrap_or(name);
        let name: Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        if let Some(&i) = self.exact.get(name.as_ref()) {
            return PolicyId::Host(i);
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(&i) = self.wildcard.get(parent) {
                return PolicyId::Host(i);
            }
        }
        PolicyId::Default
    }
}

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
    names: NameIndex,
}

/// Server names (lowercase exact names and `*.domain` wildcards) -> host index.
#[derive(Debug, Default)]
pub struct NameIndex {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
}

impl NameIndex {
    /// Adds a validated, lowercase name for host `index`; an earlier host keeps a name.
    pub fn insert(&mut self, name: &str, index: usize) {
        match crate::names::wildcard_domain(name) {
            Some(domain) => self.wildcard.entry(domain.to_string()).or_insert(index),
            None => self.exact.entry(name.to_string()).or_insert(index),
        };
    }

    /// The host a name selects: exact names first, then a wildcard for exactly one more label.
    /// Case-insensitive; a trailing dot is ignored.
    pub fn lookup(&self, name: &str) -> Option<usize> {
        let name = name.strip_suffix('.').unwrap_or(name);
        let name: Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        if let Some(&i) = self.exact.get(name.as_ref()) {
            return Some(i);
        }
        match name.split_once('.') {
            Some((label, parent)) if !label.is_empty() => self.wildcard.get(parent).copied(),
            _ => None,
        }
    }
}

impl PolicySet {
    /// Builds and validates every policy in the config.
    pub fn build(config: &Config) -> Result<PolicySet, ConfigError> {
        let default = Arc::new(Policy::build(config)?);
        let mut hosts = Vec::with_capacity(config.hosts.len());
        let mut names = NameIndex::default();
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
                names.insert(name, i);
            }
        }
        Ok(PolicySet { default, hosts, names })
    }

    /// Whether there is anything to select between.
    pub(crate) fn has_hosts(&self) -> bool {
        !self.hosts.is_empty()
    }

    /// The policy for a TLS server name (SNI).
    pub(crate) fn select(&self, server_name: Option<&str>) -> (PolicyId, &Arc<Policy>) {
        let id = server_name.map_or(PolicyId::Default, |name| self.lookup(name));
        (id, self.get(id))
    }

    /// The policy a request's host (validated by `proxy::authority`, without port) selects.
    pub(crate) fn select_host(&self, host: &str) -> PolicyId {
        self.lookup(host)
    }

    pub(crate) fn get(&self, id: PolicyId) -> &Arc<Policy> {
        match id {
            PolicyId::Default => &self.default,
            PolicyId::Host(i) => &self.hosts[i],
        }
    }

    /// Every policy, default first.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Policy>> {
        std::iter::once(&self.default).chain(self.hosts.iter())
    }

    fn lookup(&self, name: &str) -> PolicyId {
        if self.hosts.is_empty() {
            return PolicyId::Default;
        }
        self.names.lookup(name).map_or(PolicyId::Default, PolicyId::Host)
    }
}

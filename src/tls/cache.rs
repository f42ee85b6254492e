//! The verified-chain cache: skip re-verifying CA signatures for a chain this policy has
//! already verified.
//!
//! Cloudflare's global AOP leaf is the same for every connection, and zone-level leaves change
//! rarely, so most handshakes present a chain the verifier has seen. A cache entry is keyed by
//! SHA-256 over the exact presented chain (leaf and every intermediate, length-prefixed) and
//! lives inside one policy's verifier: a reload builds new verifiers, so new CAs, CRLs or
//! allow-lists always start from an empty cache, and no policy can see another's entries.
//!
//! What a hit skips and why that is sound: path building, the CA signature checks, CRL lookups,
//! the depth and allow-list checks — all pure functions of (chain bytes, policy), and both are
//! fixed for the entry's lifetime. What a hit still checks: the validity window of every
//! certificate on the verified path against the current time (an expired chain falls through
//! to full verification and fails there with the right reason). The CertificateVerify signature
//! — the proof the client holds the key — is verified by rustls on every handshake regardless.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rustls::pki_types::{CertificateDer, UnixTime};

/// Entries per policy; the least recently used goes first.
pub(crate) const CAPACITY: usize = 4096;

/// Key of a presented chain.
pub(crate) type ChainKey = [u8; 32];

/// A bounded LRU (the `lru` crate) of verified chains with their validity windows.
#[derive(Debug)]
pub(crate) struct VerifiedCache {
    entries: Mutex<lru::LruCache<ChainKey, Window>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The intersection of the path's validity windows, Unix seconds, inclusive.
#[derive(Debug, Clone, Copy)]
struct Window {
    not_before: u64,
    not_after: u64,
}

impl VerifiedCache {
    pub(crate) fn new(capacity: usize) -> VerifiedCache {
        VerifiedCache {
            entries: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// SHA-256 over the presented chain, each certificate length-prefixed.
    pub(crate) fn key(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> ChainKey {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for cert in std::iter::once(end_entity).chain(intermediates) {
            ctx.update(&(cert.len() as u64).to_be_bytes());
            ctx.update(cert.as_ref());
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }

    /// Whether `key` was verified and its whole path is valid at `now`: the path's earliest
    /// notAfter (Unix seconds) when it is.
    pub(crate) fn hit(&self, key: &ChainKey, now: UnixTime) -> Option<u64> {
        let now = now.as_secs();
        let mut entries = self.lock();
        // Only a usable entry counts as used: an expired one is not promoted.
        let hit = match entries.peek(key) {
            Some(w) if w.not_before <= now && now <= w.not_after => Some(w.not_after),
            _ => None,
        };
        if hit.is_some() {
            entries.promote(key);
        }
        drop(entries);
        let counter = if hit.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        match hit {
            Some(_) => crate::metrics::VERIFY_CACHE_HITS.inc(),
            None => crate::metrics::VERIFY_CACHE_MISSES.inc(),
        };
        hit
    }

    /// Records a chain that just verified, with its path's validity window (see
    /// [`validity_window`]).
    pub(crate) fn insert(&self, key: ChainKey, (not_before, not_after): (u64, u64)) {
        self.lock().put(key, Window { not_before, not_after });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// (hits, misses) so far.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<ChainKey, Window>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The latest notBefore and earliest notAfter over a verified path (leaf first, without the
/// trust anchor), in Unix seconds.
pub(crate) fn validity_window<'a>(
    path: impl IntoIterator<Item = &'a x509_parser::certificate::X509Certificate<'a>>,
) -> Option<(u64, u64)> {
    let mut window = (0u64, u64::MAX);
    for cert in path {
        let validity = cert.validity();
        let not_before = u64::try_from(validity.not_before.timestamp()).unwrap_or(0);
        let not_after = u64::try_from(validity.not_after.timestamp()).ok()?;
        window = (window.0.max(not_before), window.1.min(not_after));
    }
    Some(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(days_valid: i64) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["x.test".to_string()]).expect("params");
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days_valid);
        params.self_signed(&key).expect("cert").der().clone()
    }

    fn window(path: &[CertificateDer<'_>]) -> (u64, u64) {
        let parsed: Vec<_> = path
            .iter()
            .map(|der| x509_parser::parse_x509_certificate(der.as_ref()).expect("parses").1)
            .collect();
        validity_window(&parsed).expect("window")
    }

    #[test]
    fn entries_expire_with_their_path_and_the_least_recently_used_is_evicted() {
        let cache = VerifiedCache::new(2);
        let (a, b, c) = (cert(10), cert(10), cert(10));
        let short = cert(1);
        let now = UnixTime::now();
        let key = |c: &CertificateDer<'_>| VerifiedCache::key(c, &[]);

        assert!(cache.hit(&key(&a), now).is_none());
        cache.insert(key(&a), window(std::slice::from_ref(&a)));
        assert!(cache.hit(&key(&a), now).is_some());
        // The window is the intersection over the path: the short-lived intermediate bounds it.
        cache.insert(key(&b), window(&[b.clone(), short.clone()]));
        let in_three_days = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.as_secs() + 3 * 86400));
        assert!(cache.hit(&key(&b), now).expect("hit") < in_three_days.as_secs());
        assert!(cache.hit(&key(&a), in_three_days).is_some());
        assert!(
            cache.hit(&key(&b), in_three_days).is_none(),
            "expired path served from the cache"
        );
        // Hits and misses so far: a miss, a hit, b's hit, a's hit, b's expired miss.
        assert_eq!(cache.stats(), (3, 2));
        // a was used last, so inserting c evicts b.
        cache.insert(key(&c), window(std::slice::from_ref(&c)));
        assert_eq!(cache.len(), 2);
        assert!(cache.hit(&key(&a), now).is_some());
        assert!(cache.hit(&key(&c), now).is_some());
        assert!(cache.hit(&key(&b), now).is_none());
        // Keys cover the whole presented chain.
        assert_ne!(
            VerifiedCache::key(&a, &[]),
            VerifiedCache::key(&a, std::slice::from_ref(&b))
        );
    }
}

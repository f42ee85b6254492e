//! Session-ticket keys shared by replicas (`tls.ticket_keys`, made and rotated by
//! `originguard pki ticket-keys`).
//!
//! The file holds base64 32-byte secrets, one a line, newest first: the first encrypts, all
//! decrypt, so a rotation (a new first line, the oldest dropped) never breaks tickets issued
//! just before it on another replica. Each policy's keys are *derived* from those secrets with
//! HKDF-SHA256 and a digest of the policy's trust material (CAs, CRLs, allow-lists, depth): replicas
//! with the same file and the same trust agree, while a ticket never resumes under another
//! policy, nor after the policy's trust changed — the promise of per-policy random keys, kept
//! across a fleet. (nginx's `ssl_session_ticket_key` and Envoy's `session_ticket_keys` share
//! keys but do not scope them.)
//!
//! A ticket is `key id (4) || nonce (12) || AES-256-GCM(state)`; the id is the first bytes of
//! SHA-256 of the derived key, so decryption tries one key.

use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf;
use base64::Engine;
use rustls::server::ProducesTickets;

use super::load::LoadError;

/// The secrets of a ticket-key file, newest first.
#[derive(Clone)]
pub(crate) struct TicketSecrets(Vec<[u8; 32]>);

impl std::fmt::Debug for TicketSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketSecrets({} keys)", self.0.len())
    }
}

impl TicketSecrets {
    /// Reads a ticket-key file: base64 32-byte keys, one a line, `#` comments.
    pub(crate) fn load(path: &Path) -> Result<TicketSecrets, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::at(path, format!("cannot read: {e}")))?;
        let secrets = parse(&text).map_err(|m| LoadError::at(path, m))?;
        if secrets.is_empty() {
            return Err(LoadError::at(
                path,
                "no keys (make one with `originguard pki ticket-keys --out FILE`)",
            ));
        }
        Ok(TicketSecrets(secrets))
    }

    /// The ticketer of one policy whose trust material digests to `trust`.
    pub(crate) fn ticketer(&self, trust: &[u8; 32]) -> SharedTickets {
        let keys = self
            .0
            .iter()
            .map(|secret| {
                let mut key = [0u8; 32];
                hkdf::Salt::new(hkdf::HKDF_SHA256, b"originguard session tickets v1")
                    .extract(secret)
                    .expand(&[trust], hkdf::HKDF_SHA256)
                    .and_then(|okm| okm.fill(&mut key))
                    .expect("HKDF-SHA256 yields 32 bytes");
                let digest = super::identity::sha256(&key);
                let id = [digest[0], digest[1], digest[2], digest[3]];
                let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte AES-256 key"));
                (id, aead)
            })
            .collect();
        SharedTickets { keys }
    }
}

/// Parses the key lines of a ticket-key file.
pub(crate) fn parse(text: &str) -> Result<Vec<[u8; 32]>, String> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i, line.split('#').next().unwrap_or("").trim()))
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            base64::engine::general_purpose::STANDARD
                .decode(line)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| format!("line {}: not a base64 32-byte key", i + 1))
        })
        .collect()
}

/// One policy's ticketer over shared keys (see the module doc).
pub(crate) struct SharedTickets {
    /// (key id, key), the first encrypts.
    keys: Vec<([u8; 4], LessSafeKey)>,
}

impl std::fmt::Debug for SharedTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedTickets({} keys)", self.keys.len())
    }
}

impl ProducesTickets for SharedTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        u32::try_from(super::server::TICKET_MAX_AGE.as_secs()).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let (id, key) = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut sealed = Vec::with_capacity(4 + NONCE_LEN + plain.len() + 16);
        sealed.extend_from_slice(id);
        sealed.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&id[..]), &mut body)
            .ok()?;
        sealed.extend_from_slice(&body);
        Some(sealed)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let id = cipher.get(..4)?;
        let nonce = <[u8; NONCE_LEN]>::try_from(cipher.get(4..4 + NONCE_LEN)?).ok()?;
        let (id, key) = self.keys.iter().find(|(key_id, _)| key_id == id)?;
        let mut body = cipher.get(4 + NONCE_LEN..)?.to_vec();
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&id[..]), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// Creates or rotates a ticket-key file: a new key first, at most `keep` in all, written to a
/// temporary file (mode 0600) and renamed over the old one.
pub fn rotate(path: &Path, keep: usize) -> anyhow::Result<usize> {
    use anyhow::Context;
    let mut secrets = match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    let mut fresh = [0u8; 32];
    aws_lc_rs::rand::fill(&mut fresh).map_err(|_| anyhow::anyhow!("no randomness"))?;
    secrets.insert(0, fresh);
    secrets.truncate(keep.max(1));
    let mut text = String::from(
        "# originguard session-ticket keys (tls.ticket_keys): newest first; the first encrypts, all decrypt.\n\
         # Rotate with `originguard pki ticket-keys --out FILE`; share with every replica; keep it secret.\n",
    );
    for secret in &secrets {
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(secret));
        text.push('\n');
    }
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("ticket-keys")
    ));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("{}: cannot create", tmp.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("{}: cannot write", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot replace", path.display()))?;
    Ok(secrets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(keys: &[[u8; 32]]) -> TicketSecrets {
        TicketSecrets(keys.to_vec())
    }

    #[test]
    fn same_secret_and_trust_agree_other_trust_or_rotated_out_keys_do_not() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let trust = [7u8; 32];
        let replica1 = secrets(&[a]).ticketer(&trust);
        let replica2 = secrets(&[a]).ticketer(&trust);
        let ticket = replica1.encrypt(b"session").expect("encrypt");
        assert_eq!(replica2.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        // Another policy (or changed trust) derives other keys.
        assert_eq!(secrets(&[a]).ticketer(&[8u8; 32]).decrypt(&ticket), None);
        // After a rotation the old key still decrypts; once dropped, it does not.
        assert!(secrets(&[b, a]).ticketer(&trust).decrypt(&ticket).is_some());
        assert_eq!(secrets(&[b]).ticketer(&trust).decrypt(&ticket), None);
        // Tampering is refused.
        let mut bad = ticket.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(replica2.decrypt(&bad), None);
        // Enabled, for the documented age; Debug never shows key material.
        assert!(replica1.enabled());
        assert_eq!(replica1.lifetime(), 3600);
        assert_eq!(format!("{replica1:?}"), "SharedTickets(1 keys)");
        assert_eq!(format!("{:?}", secrets(&[a, b])), "TicketSecrets(2 keys)");
    }

    #[test]
    fn rotate_refuses_a_file_it_cannot_read_instead_of_starting_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: not "missing", so not silently replaced.
        let e = rotate(dir.path(), 2).expect_err("unreadable");
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn rotation_puts_a_new_key_first_keeps_n_and_writes_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ticket.keys");
        assert_eq!(rotate(&path, 3).expect("create"), 1);
        let first = TicketSecrets::load(&path).expect("load").0;
        for expected in [2, 3, 3] {
            assert_eq!(rotate(&path, 3).expect("rotate"), expected);
        }
        let now = TicketSecrets::load(&path).expect("load").0;
        assert_eq!(now.len(), 3);
        assert!(!now.contains(&first[0]), "the oldest key was kept");
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

//! A look at the raw ClientHello before rustls reads it: which groups the client sent key
//! shares for. rustls' `Acceptor` shows the groups a client *supports*, not the shares it sent,
//! and `tls.key_exchange = "hybrid-if-sent"` must tell "sent a hybrid share" from "merely
//! supports the hybrid" (Cloudflare's default sends X25519 and advertises X25519MLKEM768).

use std::time::Duration;

use tokio::net::TcpStream;

/// Peeks (never consumes) the first TLS record and returns the key-share groups of the
/// ClientHello in it; `None` when it cannot be read in time or is not a whole ClientHello in one
/// record (rustls then decides as usual).
pub(crate) async fn peek_key_shares(stream: &TcpStream) -> Option<Vec<u16>> {
    let mut buf = vec![0u8; 5 + 16 * 1024];
    for attempt in 0..20u64 {
        let n = stream.peek(&mut buf).await.ok()?;
        if n >= 5 {
            let need = 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]]));
            if n >= need {
                return key_share_groups(&buf[..need]);
            }
        }
        if n == 0 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(attempt + 1)).await;
    }
    None
}

/// The key-share groups of a ClientHello record; `Some(empty)` for a hello without key shares.
pub(crate) fn key_share_groups(record: &[u8]) -> Option<Vec<u16>> {
    let u16_at =
        |b: &[u8], i: usize| -> Option<usize> { Some(usize::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))) };
    if *record.first()? != 22 {
        return None;
    }
    let body = record.get(5..5 + u16_at(record, 3)?)?;
    if *body.first()? != 1 {
        return None;
    }
    let len = (usize::from(*body.get(1)?) << 16) | u16_at(body, 2)?;
    let hello = body.get(4..4 + len)?;
    let mut p = 2 + 32;
    p += 1 + usize::from(*hello.get(p)?);
    p += 2 + u16_at(hello, p)?;
    p += 1 + usize::from(*hello.get(p)?);
    let end = p + 2 + u16_at(hello, p)?;
    p += 2;
    while p + 4 <= end {
        let (kind, len) = (u16_at(hello, p)?, u16_at(hello, p + 2)?);
        let data = hello.get(p + 4..p + 4 + len)?;
        if kind == 0x0033 {
            let shares_end = 2 + u16_at(data, 0)?;
            let mut groups = Vec::new();
            let mut q = 2;
            while q + 4 <= shares_end {
                groups.push(u16::try_from(u16_at(data, q)?).ok()?);
                q += 4 + u16_at(data, q + 2)?;
            }
            return Some(groups);
        }
        p += 4 + len;
    }
    Some(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first record a rustls client with `groups` (the first gets a key share) sends.
    fn client_hello(groups: &[&'static dyn rustls::crypto::SupportedKxGroup]) -> Vec<u8> {
        client_hello_of(groups, rustls::DEFAULT_VERSIONS)
    }

    fn client_hello_of(
        groups: &[&'static dyn rustls::crypto::SupportedKxGroup],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Vec<u8> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.kx_groups = groups.to_vec();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut client =
            rustls::ClientConnection::new(std::sync::Arc::new(config), "a.example".try_into().expect("name"))
                .expect("client");
        let mut out = Vec::new();
        client.write_tls(&mut out).expect("hello");
        out
    }

    #[test]
    fn finds_the_groups_a_client_sent_shares_for() {
        use rustls::crypto::aws_lc_rs::kx_group::{SECP256R1, X25519, X25519MLKEM768};
        let classical_share = client_hello(&[X25519, X25519MLKEM768]);
        assert_eq!(
            key_share_groups(&classical_share),
            Some(vec![u16::from(rustls::NamedGroup::X25519)])
        );
        let hybrid_first = client_hello(&[X25519MLKEM768, X25519, SECP256R1]);
        // rustls sends two shares then: the hybrid and X25519 (its classical fallback).
        assert_eq!(
            key_share_groups(&hybrid_first),
            Some(vec![
                u16::from(rustls::NamedGroup::X25519MLKEM768),
                u16::from(rustls::NamedGroup::X25519)
            ])
        );
        assert_eq!(key_share_groups(&classical_share[..40]), None);
        assert_eq!(key_share_groups(b"GET / HTTP/1.1\r\n"), None);
    }

    /// A TLS 1.2-only hello has no key_share extension: the walk over the extensions must stop
    /// at their end, not run past it.
    #[test]
    fn a_hello_without_key_shares_has_none() {
        let record = client_hello_of(
            &[rustls::crypto::aws_lc_rs::kx_group::X25519],
            &[&rustls::version::TLS12],
        );
        assert_eq!(key_share_groups(&record), Some(Vec::new()));
    }

    /// The peek waits for the whole first record (sent in two pieces), reads the shares and
    /// leaves every byte for rustls; a peer that closes first gives `None`.
    #[tokio::test]
    async fn peeks_a_split_hello_without_consuming_it() {
        use rustls::crypto::aws_lc_rs::kx_group::{X25519, X25519MLKEM768};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hello = client_hello(&[X25519, X25519MLKEM768]);
        let sent = hello.clone();
        let client = tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            tcp.write_all(&sent[..10]).await.expect("first piece");
            tokio::time::sleep(Duration::from_millis(30)).await;
            tcp.write_all(&sent[10..]).await.expect("second piece");
            tcp
        });
        let (mut server, _) = listener.accept().await.expect("accept");
        assert_eq!(
            peek_key_shares(&server).await,
            Some(vec![u16::from(rustls::NamedGroup::X25519)])
        );
        let _client = client.await.expect("client");
        let mut read = vec![0u8; hello.len()];
        server.read_exact(&mut read).await.expect("the hello is still there");
        assert_eq!(read, hello);

        let closing = tokio::spawn(async move { drop(tokio::net::TcpStream::connect(addr).await) });
        let (server, _) = listener.accept().await.expect("accept");
        closing.await.expect("closed");
        assert_eq!(peek_key_shares(&server).await, None);
    }
}

//! PROXY protocol (v1 text, v2 binary) in front of TLS, for an L4 load balancer
//! (`listener.proxy_protocol = "required"`): its source address becomes the peer for
//! `allow_peers`, `x-forwarded-for` and the logs. Parsing is the `ppp` crate's; this module
//! only finds the header's end without consuming a byte of the TLS stream behind it (it peeks,
//! then reads exactly the header).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// v2 signature (12 bytes), then version/command, family, and a 2-byte length.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header (spec: 107 bytes with CRLF).
const V1_MAX: usize = 107;
/// Longest v2 header accepted (addresses plus TLVs; the spec allows 64 KiB, nobody needs it).
const V2_MAX: usize = 16 + 2048;

/// Why a connection was refused before TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProxyHeaderError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header")]
    Malformed,
    #[error("connection closed before the PROXY protocol header was complete")]
    Closed,
}

/// Reads the PROXY header at the start of `stream`. `Some(source)` for a proxied connection;
/// `None` for a `LOCAL` (health check) or `UNKNOWN` one, which keeps the TCP peer.
pub(crate) async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut buf = vec![0u8; V2_MAX];
    let mut waited = 0u32;
    loop {
        let n = stream.peek(&mut buf).await.map_err(|_| ProxyHeaderError::Closed)?;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        let seen = &buf[..n];
        match header_len(seen)? {
            Some(len) => {
                let mut header = vec![0u8; len];
                stream
                    .read_exact(&mut header)
                    .await
                    .map_err(|_| ProxyHeaderError::Closed)?;
                return parse(&header);
            }
            None => {
                // Incomplete: the rest is on its way (the caller's deadline bounds the wait).
                waited += 1;
                tokio::time::sleep(Duration::from_millis(u64::from(waited.min(50)))).await;
            }
        }
    }
}

/// The header's length, if `seen` holds all of it; `Err` if it cannot be a header.
fn header_len(seen: &[u8]) -> Result<Option<usize>, ProxyHeaderError> {
    let prefix = seen.len().min(V2_SIGNATURE.len());
    if seen[..prefix] == V2_SIGNATURE[..prefix] {
        if seen.len() < 16 {
            return Ok(None);
        }
        let len = 16 + usize::from(u16::from_be_bytes([seen[14], seen[15]]));
        if len > V2_MAX {
            return Err(ProxyHeaderError::Malformed);
        }
        return Ok((seen.len() >= len).then_some(len));
    }
    let prefix = seen.len().min(6);
    if seen[..prefix] != b"PROXY "[..prefix] {
        return Err(ProxyHeaderError::Missing);
    }
    match seen.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end + 2 <= V1_MAX => Ok(Some(end + 2)),
        Some(_) => Err(ProxyHeaderError::Malformed),
        None if seen.len() >= V1_MAX => Err(ProxyHeaderError::Malformed),
        None => Ok(None),
    }
}

fn parse(header: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    if header.starts_with(V2_SIGNATURE) {
        let parsed = ppp::v2::Header::try_from(header).map_err(|_| ProxyHeaderError::Malformed)?;
        if parsed.command == ppp::v2::Command::Local {
            return Ok(None);
        }
        return Ok(match parsed.addresses {
            ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            _ => None,
        });
    }
    let parsed = ppp::v1::Header::try_from(header).map_err(|_| ProxyHeaderError::Malformed)?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_headers_are_delimited_and_parsed() {
        let v1 = b"PROXY TCP4 198.51.100.7 203.0.113.1 51000 443\r\n\x16\x03\x01";
        let len = header_len(v1).expect("header").expect("complete");
        assert_eq!(&v1[len..], b"\x16\x03\x01", "TLS bytes consumed");
        assert_eq!(parse(&v1[..len]), Ok(Some("198.51.100.7:51000".parse().expect("addr"))));
        assert_eq!(header_len(b"PROXY TCP4 198.51"), Ok(None));
        assert_eq!(header_len(b"\x16\x03\x01\x02\x00"), Err(ProxyHeaderError::Missing));
        assert_eq!(header_len(b"GET / HTTP/1.1\r\n"), Err(ProxyHeaderError::Missing));

        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0, 12]); // v2 PROXY, TCP over IPv4, 12 bytes
        v2.extend_from_slice(&[198, 51, 100, 7, 203, 0, 113, 1]);
        v2.extend_from_slice(&51000u16.to_be_bytes());
        v2.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(header_len(&v2[..10]), Ok(None));
        assert_eq!(header_len(&v2), Ok(Some(28)));
        assert_eq!(parse(&v2), Ok(Some("198.51.100.7:51000".parse().expect("addr"))));
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local), Ok(None));
        assert_eq!(parse(b"PROXY TCP4 nonsense\r\n"), Err(ProxyHeaderError::Malformed));
    }
}

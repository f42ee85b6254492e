//! A raw HTTP/1.1 backend that records every request exactly as it arrived on the wire (name
//! case, underscores, order, duplicates), the way a simple strict server would parse it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub struct WireRequest {
    pub line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WireRequest {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

pub struct RawBackend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<WireRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawBackend {
    pub async fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(raw_backend_conn(stream, s.clone()));
            }
        });
        RawBackend { addr, seen, task }
    }

    pub fn requests(&self) -> Vec<WireRequest> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn raw_backend_conn(mut stream: TcpStream, seen: Arc<Mutex<Vec<WireRequest>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // Parse as many complete requests as the buffer holds.
        while let Some((request, used)) = parse_request(&buf) {
            buf.drain(..used);
            seen.lock().expect("lock").push(request);
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .is_err()
            {
                return;
            }
        }
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
}

/// A strict parser: Content-Length or chunked (not both), no obs-fold.
fn parse_request(buf: &[u8]) -> Option<(WireRequest, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.trim().to_string()))
        .collect();
    let mut request = WireRequest {
        line,
        headers,
        body: Vec::new(),
    };
    let mut at = end + 4;
    let chunked = request
        .header("transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        loop {
            let rel = buf[at..].windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(std::str::from_utf8(&buf[at..at + rel]).ok()?.trim(), 16).ok()?;
            at += rel + 2;
            if size == 0 {
                // No trailers from this proxy in these tests: expect the final CRLF.
                if buf.len() < at + 2 {
                    return None;
                }
                at += 2;
                break;
            }
            if buf.len() < at + size + 2 {
                return None;
            }
            request.body.extend_from_slice(&buf[at..at + size]);
            at += size + 2;
        }
    } else if let Some(len) = request.header("content-length").first() {
        let len: usize = len.parse().ok()?;
        if buf.len() < at + len {
            return None;
        }
        request.body.extend_from_slice(&buf[at..at + len]);
        at += len;
    }
    Some((request, at))
}

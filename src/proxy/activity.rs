//! What one connection is doing, for its timeouts and the framing guard.
//!
//! Timeouts, as nginx has them (`client_header_timeout`, `keepalive_timeout`):
//! - after the handshake, the first request head must be complete within
//!   `listener.header_read_timeout` (a client that connects and says nothing is closed then);
//! - between requests an idle connection stays up to `listener.idle_timeout`;
//! - once the first byte of a later request head arrives, the head must be complete within
//!   `header_read_timeout` again (HTTP/1.x; an HTTP/2 connection reads pings and window
//!   updates, so there only the first two rules apply).
//!
//! hyper's own header timer cannot say this: it starts the moment the previous response is
//! done (closing idle keep-alive connections after `header_read_timeout`) and not at all before
//! the first request on an auto-detected connection. So [`Watched`] wraps the TLS stream and
//! notes when request-head bytes arrive, and the connection task enforces the deadlines.
//!
//! [`Watched`] also reads HTTP/1.x request heads for a `Content-Length` line: hyper drops a
//! Content-Length that comes with Transfer-Encoding before the request reaches the service, and
//! such a request must be refused, not forwarded (RFC 9112 §6.3). Heads that arrive while a
//! previous request is still in flight (pipelining) are not read; hyper then applies RFC 9112's
//! intermediary rule itself (length dropped, chunked body forwarded, connection closed after).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Request activity on one connection.
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Requests finished so far.
    done: AtomicU64,
    /// Milliseconds since `epoch` when the last request finished.
    last_done_ms: AtomicU64,
    /// Milliseconds since `epoch`, plus one, when the first byte of a not yet complete request
    /// head arrived; 0 when none is pending.
    head_started_ms: AtomicU64,
    /// The current head was fully read (stop scanning until the next request).
    head_complete: AtomicBool,
    /// The current head had a Content-Length line.
    saw_content_length: AtomicBool,
}

/// Which deadline a connection is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// A request head is due (`header_read_timeout`): the connection is dropped at once.
    Head,
    /// Idle between requests (`idle_timeout`): the connection is closed gracefully.
    Idle,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            done: AtomicU64::new(0),
            last_done_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
            head_complete: AtomicBool::new(false),
            saw_content_length: AtomicBool::new(false),
        })
    }

    /// A request head was parsed and its request begins.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started_ms.store(0, Ordering::Release);
        InFlight(self.clone())
    }

    /// Whether the head of the request being handled had a Content-Length line (read once).
    pub(crate) fn saw_content_length(&self) -> bool {
        self.saw_content_length.swap(false, Ordering::AcqRel)
    }

    /// The next deadline, or `None` while a request is in flight (the request's own timeouts
    /// bound it). `started` is when the handshake finished; `track_heads` is false for HTTP/2.
    pub(crate) fn deadline(
        &self,
        started: Instant,
        header: Duration,
        idle: Duration,
        track_heads: bool,
    ) -> Option<(Instant, Deadline)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let head = self.head_started_ms.load(Ordering::Acquire);
        if track_heads && head > 0 {
            return Some((self.at(head - 1) + header, Deadline::Head));
        }
        if self.done.load(Ordering::Acquire) == 0 {
            return Some((started + header, Deadline::Head));
        }
        Some((
            self.at(self.last_done_ms.load(Ordering::Acquire)) + idle,
            Deadline::Idle,
        ))
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }
}

/// Counts a request as in flight until dropped (with its response body, if forwarded).
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.last_done_ms.store(activity.now_ms(), Ordering::Release);
        activity.head_complete.store(false, Ordering::Release);
        activity.done.fetch_add(1, Ordering::AcqRel);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's stream, noting request-head bytes for [`Activity`].
pub(crate) struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
    /// HTTP/1.x: read heads (timing and Content-Length).
    heads: bool,
    scan: HeadScan,
    /// `Activity::done` when the scan last ran: a new request resets the scanner.
    scan_epoch: u64,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>, heads: bool) -> Watched<T> {
        Watched {
            inner,
            activity,
            heads,
            scan: HeadScan::default(),
            scan_epoch: 0,
        }
    }

    fn note(&mut self, bytes: &[u8]) {
        let activity = &self.activity;
        if bytes.is_empty() || activity.in_flight.load(Ordering::Acquire) > 0 {
            return;
        }
        if activity.head_started_ms.load(Ordering::Acquire) == 0 {
            activity.head_started_ms.store(activity.now_ms() + 1, Ordering::Release);
        }
        if !self.heads || activity.head_complete.load(Ordering::Acquire) {
            return;
        }
        let epoch = activity.done.load(Ordering::Acquire);
        if epoch != self.scan_epoch {
            self.scan = HeadScan::default();
            self.scan_epoch = epoch;
        }
        let (content_length, complete) = self.scan.feed(bytes);
        if content_length {
            activity.saw_content_length.store(true, Ordering::Release);
        }
        if complete {
            activity.head_complete.store(true, Ordering::Release);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let this = &mut *self;
            this.note(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads an HTTP/1.x request head line by line, across reads: was there a `Content-Length`
/// line, and did the head end (an empty line after the request line)?
#[derive(Debug, Default)]
struct HeadScan {
    /// Bytes of the current line, CR excluded.
    line_len: usize,
    /// How much of `content-length:` the current line starts with.
    matched: usize,
    /// A non-empty line (the request line) was seen.
    started: bool,
}

const CONTENT_LENGTH: &[u8] = b"content-length:";

impl HeadScan {
    fn feed(&mut self, bytes: &[u8]) -> (bool, bool) {
        let mut content_length = false;
        for &b in bytes {
            match b {
                b'\n' => {
                    if self.line_len == 0 && self.started {
                        return (content_length, true);
                    }
                    self.started |= self.line_len > 0;
                    self.line_len = 0;
                    self.matched = 0;
                }
                b'\r' => {}
                _ => {
                    if self.matched == self.line_len
                        && self.matched < CONTENT_LENGTH.len()
                        && b.to_ascii_lowercase() == CONTENT_LENGTH[self.matched]
                    {
                        self.matched += 1;
                        content_length |= self.matched == CONTENT_LENGTH.len();
                    }
                    self.line_len += 1;
                }
            }
        }
        (content_length, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_scan_finds_content_length_lines_across_reads() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n";
        for split in 0..head.len() {
            let mut scan = HeadScan::default();
            let (a, done_a) = scan.feed(&head[..split]);
            let (b, done_b) = if done_a {
                (false, true)
            } else {
                scan.feed(&head[split..])
            };
            assert!(a || b, "missed at split {split}");
            assert!(done_a || done_b);
        }
        let mut scan = HeadScan::default();
        assert_eq!(
            scan.feed(b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nHost: a\r\n\r\n"),
            (false, true)
        );
        let mut scan = HeadScan::default();
        assert_eq!(scan.feed(b"\r\nGET / HTTP/1.1\r\nhost: a\r\n"), (false, false));
    }

    #[test]
    fn deadlines_follow_the_connection_state() {
        let activity = Activity::new();
        let started = Instant::now();
        let (header, idle) = (Duration::from_secs(30), Duration::from_secs(900));
        let first = activity.deadline(started, header, idle, true).expect("deadline");
        assert_eq!(first, (started + header, Deadline::Head));
        let request = activity.begin();
        assert_eq!(activity.deadline(started, header, idle, true), None);
        drop(request);
        let (at, kind) = activity.deadline(started, header, idle, true).expect("deadline");
        assert_eq!(kind, Deadline::Idle);
        assert!(
            at + Duration::from_millis(5) >= started + idle,
            "idle counts from the last request"
        );
        let mut io = Watched::new(tokio::io::empty(), activity.clone(), true);
        io.note(b"G");
        assert_eq!(
            activity.deadline(started, header, idle, true).map(|d| d.1),
            Some(Deadline::Head)
        );
        assert_eq!(
            activity.deadline(started, header, idle, false).map(|d| d.1),
            Some(Deadline::Idle)
        );
    }
}

//! Upgraded connections (WebSocket): bytes both ways until either side closes, nothing has
//! moved in either direction for `listener.idle_timeout`, or what ends the connection it came
//! from ends it too (`proxy::Lifetime`: maximum age, certificate expiry, the drain's end, a
//! reload that refuses the client).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How a tunnel ended.
#[derive(Debug)]
pub enum Ended {
    /// One side closed (or failed): bytes copied (client to upstream, upstream to client).
    Closed(io::Result<(u64, u64)>),
    /// No bytes either way for the idle timeout.
    Idle,
    /// The connection's lifetime ended (the reason).
    Stopped(&'static str),
}

/// Copies between `client` and `upstream` until one of the ends in [`Ended`].
pub async fn pipe<A, B>(client: A, upstream: B, idle: Duration, stop: impl Future<Output = &'static str>) -> Ended
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::pin!(stop);
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Touched {
        inner: client,
        epoch,
        last: last.clone(),
    };
    let mut upstream = Touched {
        inner: upstream,
        epoch,
        last: last.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        let idle_at = epoch + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            result = &mut copy => return Ended::Closed(result),
            why = &mut stop => return Ended::Stopped(why),
            () = tokio::time::sleep_until(idle_at.into()) => {
                let idle_at = epoch + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
                if idle_at <= Instant::now() {
                    return Ended::Idle;
                }
            }
        }
    }
}

/// A stream that notes when bytes last moved through it.
struct Touched<T> {
    inner: T,
    epoch: Instant,
    last: Arc<AtomicU64>,
}

impl<T> Touched<T> {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Touched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Touched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

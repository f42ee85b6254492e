//! TLS 1.3 session tickets leave with the first response, not on their own.
//!
//! A TLS 1.3 server sends its tickets when the client's Finished arrives, and tokio-rustls
//! flushes them before the handshake future completes: one `writev`, one TCP segment and one
//! wake-up of the client for ~1.4 KB the client has no use for until its next connection. The
//! response follows a backend round trip later, in a second write. [`Coalesced`] sits under
//! rustls and holds those ticket records back until the next write — the response head (or
//! HTTP/2's SETTINGS) — so both leave in one `writev`: one system call and one client wake-up
//! fewer per new connection, full or resumed (benches/RESULTS.md has the measurement).
//!
//! Only TLS 1.3 tickets are held: the bytes must be written after a ticket was sealed in this
//! handshake (the ticketer says so in the handshake notes) and be an encrypted record
//! (content type 23). TLS 1.2's final flight (NewSessionTicket, ChangeCipherSpec, Finished —
//! the client waits for it) starts with a plaintext handshake record and goes out at once, and
//! so does everything outside a handshake. Held bytes go out first in the next write, or at
//! shutdown, so nothing is lost or reordered; a connection that never writes again (the client
//! sends nothing) keeps them until it closes — a client only needs them for its next
//! connection.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::verify::with_notes;

/// The TLS record content type of encrypted TLS 1.3 records (RFC 8446 §5.2).
const APPLICATION_DATA: u8 = 23;

/// A byte stream under rustls that holds back TLS 1.3 session tickets until the next write.
#[derive(Debug)]
pub struct Coalesced<T> {
    io: T,
    held: Vec<u8>,
}

impl<T> Coalesced<T> {
    pub fn new(io: T) -> Coalesced<T> {
        Coalesced { io, held: Vec::new() }
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Bytes held back, not yet written (for tests).
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// Whether these bytes are TLS 1.3 tickets of a handshake in progress.
fn tickets(bufs: &[IoSlice<'_>]) -> bool {
    let first = bufs.iter().find_map(|b| b.first().copied());
    first == Some(APPLICATION_DATA) && with_notes(|n| n.ticket_sealed()).unwrap_or(false)
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Writes what is held; `Ready(Ok)` once nothing is.
    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if tickets(bufs) {
            let mut n = 0;
            for buf in bufs {
                this.held.extend_from_slice(buf);
                n += buf.len();
            }
            return Poll::Ready(Ok(n));
        }
        // The held bytes first, then as much of `bufs` as fits in the same writev.
        while !this.held.is_empty() {
            let mut slices = Vec::with_capacity(bufs.len() + 1);
            slices.push(IoSlice::new(&this.held));
            slices.extend(bufs.iter().map(|b| IoSlice::new(b)));
            let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let held = this.held.len();
            this.held.drain(..n.min(held));
            if n > held {
                return Poll::Ready(Ok(n - held));
            }
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Not a barrier for held tickets: tokio-rustls flushes at the end of the handshake and
    /// hyper flushes on every turn of its loop, also with nothing to send (while the request
    /// is at the backend), and the tickets are exactly what should wait for the response.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_held(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::verify::with_handshake_notes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HANDSHAKE: [u8; 6] = [22, 3, 3, 0, 1, 9];
    const TICKET: [u8; 6] = [APPLICATION_DATA, 3, 3, 0, 1, 7];

    /// In a handshake that sealed a ticket, encrypted records wait (a flush does not push
    /// them), plaintext handshake records (TLS 1.2's final flight) do not; the next write after
    /// the handshake sends the held bytes first — also through a pipe that takes 3 bytes at a
    /// time (partial writes).
    #[tokio::test]
    async fn holds_tls13_tickets_until_the_next_write_in_order() {
        for capacity in [1024, 3] {
            let (a, mut b) = tokio::io::duplex(capacity);
            let reader = tokio::spawn(async move {
                let mut got = Vec::new();
                b.read_to_end(&mut got).await.expect("read");
                got
            });
            let mut a = Coalesced::new(a);
            let (written, _) = with_handshake_notes(async {
                a.write_all(&TICKET).await?;
                with_notes(|n| n.sealed_ticket());
                a.write_all(&HANDSHAKE).await?;
                a.write_all(&TICKET).await?;
                a.flush().await
            })
            .await;
            written.expect("writes");
            assert_eq!(a.held(), TICKET.len(), "capacity {capacity}");
            a.write_all(b"response").await.expect("response");
            assert_eq!(a.held(), 0);
            a.shutdown().await.expect("shutdown");
            let expected = [&TICKET[..], &HANDSHAKE, &TICKET, b"response"].concat();
            assert_eq!(reader.await.expect("reader"), expected, "capacity {capacity}");
        }
    }

    /// A connection that ends without another write still sends what was held.
    #[tokio::test]
    async fn shutdown_sends_what_is_held() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut a = Coalesced::new(a);
        let (written, _) = with_handshake_notes(async {
            with_notes(|n| n.sealed_ticket());
            a.write_all(&TICKET).await
        })
        .await;
        written.expect("write");
        assert_eq!(a.held(), TICKET.len());
        a.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, TICKET);
    }

    /// Outside a handshake nothing is held, whatever the bytes.
    #[tokio::test]
    async fn writes_through_outside_a_handshake() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Coalesced::new(a);
        a.write_all(&[APPLICATION_DATA, 3, 3, 0, 1, 0]).await.expect("write");
        assert_eq!(a.held(), 0);
        let mut got = [0u8; 6];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(got[0], APPLICATION_DATA);
        // Reads pass straight through.
        b.write_all(b"hello").await.expect("peer write");
        let mut read = [0u8; 5];
        a.read_exact(&mut read).await.expect("read through");
        assert_eq!(&read, b"hello");
    }
}

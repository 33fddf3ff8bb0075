//! A QUIC bidirectional stream as one `AsyncRead + AsyncWrite` value, so TCP-style code
//! (splicing, hyper) runs over it. Shutting down the write side finishes the stream,
//! which carries a TCP half-close to the other end.
//!
//! The stream header can be held back (`with_prefix`) and written together with the first
//! bytes of the payload: both then leave in one QUIC packet instead of two, which matters
//! for one-request HTTP streams (see BENCHMARKS.md).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Both halves of a QUIC stream.
#[derive(Debug)]
pub struct QuicIo {
    /// Sending half.
    pub send: quinn::SendStream,
    /// Receiving half.
    pub recv: quinn::RecvStream,
    /// Bytes to send before anything written through this value (the stream header).
    prefix: Vec<u8>,
}

impl QuicIo {
    /// A stream whose header was already written (or needs none).
    pub fn new(send: quinn::SendStream, recv: quinn::RecvStream) -> Self {
        Self::with_prefix(send, recv, Vec::new())
    }

    /// A stream that writes `prefix` just before the first payload bytes (or on flush).
    pub fn with_prefix(send: quinn::SendStream, recv: quinn::RecvStream, prefix: Vec<u8>) -> Self {
        Self { send, recv, prefix }
    }

    /// Writes what is left of the prefix; ready once it is all handed to quinn.
    fn poll_prefix(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.prefix.is_empty() {
            let n = ready!(AsyncWrite::poll_write(
                Pin::new(&mut self.send),
                cx,
                &self.prefix
            ))?;
            self.prefix.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for QuicIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // A reader waiting for the peer must not keep the header back.
        ready!(self.poll_prefix(cx))?;
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_prefix(cx))?;
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_prefix(cx))?;
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_prefix(cx))?;
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}

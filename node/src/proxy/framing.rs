//! Refusing ambiguous HTTP/1 framing before hyper sees it.
//!
//! hyper follows RFC 9112's lenient options: identical duplicate `Content-Length` values
//! are merged, and with both `Content-Length` and `Transfer-Encoding` it drops the former
//! and closes the connection afterwards. A mesh in front of other parsers must not pass
//! such requests on at all, so `FramingGuard` wraps an app connection, tracks message
//! boundaries (Content-Length and chunked bodies) and, when a request head has several
//! `Content-Length` headers or both framing headers, hands hyper a head that hyper itself
//! answers with `400 Bad Request` (and then end of stream). Nothing is forwarded.
//!
//! Because it holds a head back until the head is complete, the guard also owns the
//! header-read timer: a connection that has not completed its first request head, or has
//! started another and not finished it, within the timeout is closed (slowloris). hyper's
//! own timer cannot see those bytes, and hyper-util's protocol detection waits for them
//! without one.

use std::collections::VecDeque;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest request head tracked; a longer one is passed on for hyper to refuse (431).
const MAX_HEAD: usize = 64 * 1024;
/// A head hyper answers with 400 (a Transfer-Encoding other than chunked).
const POISON: &[u8] = b"POST / HTTP/1.1\r\nHost: weft\r\nTransfer-Encoding: refused\r\n\r\n";

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkCrlf(u8),
    Trailer,
    /// Stop inspecting (h2c preface, oversized head, or a refusal already made).
    Passthrough,
    Refused,
}

/// The framing state machine. Pure: bytes in, bytes to release out.
#[derive(Debug)]
pub struct FramingScanner {
    state: State,
    pending: Vec<u8>,
    /// Request heads completed so far.
    heads: u64,
}

impl Default for FramingScanner {
    fn default() -> Self {
        Self {
            state: State::Head,
            pending: Vec::new(),
            heads: 0,
        }
    }
}

/// What a head's framing headers say.
fn check_head(head: &[u8]) -> Result<Option<State>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        // Let hyper produce its own error for what it cannot parse.
        _ => return Ok(None),
    }
    let mut cls = Vec::new();
    let mut chunked = false;
    let mut te = false;
    // After CONNECT or an upgrade the connection carries another protocol.
    let tunnel = req.method == Some("CONNECT")
        || req
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            cls.push(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            chunked = std::str::from_utf8(h.value)
                .map(|v| {
                    v.rsplit(',')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .eq_ignore_ascii_case("chunked")
                })
                .unwrap_or(false);
        }
    }
    if cls.len() > 1 {
        return Err("duplicate Content-Length");
    }
    if te && !cls.is_empty() {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if tunnel {
        return Ok(Some(State::Passthrough));
    }
    if chunked {
        return Ok(Some(State::ChunkSize));
    }
    match cls.first() {
        Some(v) => {
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            Ok(Some(n.map_or(State::Passthrough, State::Body)))
        }
        None => Ok(Some(State::Head)),
    }
}

impl FramingScanner {
    /// Feeds bytes from the app; appends what may be passed to hyper to `out`. Returns
    /// the reason when a request was refused (the poison head is in `out` then, and
    /// nothing more ever is).
    pub fn feed(&mut self, mut data: &[u8], out: &mut VecDeque<u8>) -> Option<&'static str> {
        while !data.is_empty() {
            match self.state {
                State::Refused => return None,
                State::Passthrough => {
                    out.extend(data);
                    return None;
                }
                State::Head => {
                    if self.pending.is_empty() && data.starts_with(b"PRI * HTTP/2.0") {
                        self.state = State::Passthrough;
                        continue;
                    }
                    self.pending.extend_from_slice(data);
                    let Some(end) = find(&self.pending, b"\r\n\r\n") else {
                        if self.pending.len() > MAX_HEAD {
                            out.extend(self.pending.drain(..));
                            self.state = State::Passthrough;
                        }
                        return None;
                    };
                    let rest = self.pending.split_off(end + 4);
                    match check_head(&self.pending) {
                        Err(reason) => {
                            self.pending.clear();
                            out.extend(POISON);
                            self.state = State::Refused;
                            return Some(reason);
                        }
                        Ok(next) => {
                            self.heads += 1;
                            out.extend(self.pending.drain(..));
                            self.state = next.unwrap_or(State::Passthrough);
                            if self.state == State::Body(0) {
                                self.state = State::Head;
                            }
                        }
                    }
                    return self.feed(&rest, out);
                }
                State::Body(n) => {
                    let take = (n as usize).min(data.len());
                    out.extend(&data[..take]);
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                }
                State::ChunkSize | State::Trailer => {
                    let Some(i) = data.iter().position(|b| *b == b'\n') else {
                        self.pending.extend_from_slice(data);
                        out.extend(data);
                        if self.pending.len() > 4096 {
                            self.state = State::Passthrough;
                        }
                        return None;
                    };
                    self.pending.extend_from_slice(&data[..i]);
                    out.extend(&data[..=i]);
                    data = &data[i + 1..];
                    let line = std::mem::take(&mut self.pending);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    if self.state == State::Trailer {
                        if line.is_empty() {
                            self.state = State::Head;
                        }
                        continue;
                    }
                    let size = std::str::from_utf8(line)
                        .ok()
                        .map(|l| l.split(';').next().unwrap_or("").trim())
                        .and_then(|s| u64::from_str_radix(s, 16).ok());
                    self.state = match size {
                        Some(0) => State::Trailer,
                        Some(n) => State::ChunkData(n),
                        // Malformed chunking: hyper refuses it; stop tracking.
                        None => State::Passthrough,
                    };
                }
                State::ChunkData(n) => {
                    let take = (n as usize).min(data.len());
                    out.extend(&data[..take]);
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::ChunkCrlf(2)
                    } else {
                        State::ChunkData(left)
                    };
                }
                State::ChunkCrlf(k) => {
                    out.push_back(data[0]);
                    data = &data[1..];
                    self.state = if k == 1 {
                        State::ChunkSize
                    } else {
                        State::ChunkCrlf(k - 1)
                    };
                }
            }
        }
        None
    }

    /// How many bytes may pass without inspection from here: the rest of a
    /// Content-Length body, or everything once inspection stopped. None: bytes must be fed.
    fn direct_limit(&self) -> Option<u64> {
        match self.state {
            State::Passthrough => Some(u64::MAX),
            State::Body(n) => Some(n),
            _ => None,
        }
    }

    /// Accounts for `n` bytes passed without `feed` (at most `direct_limit`).
    fn passed_directly(&mut self, n: u64) {
        if let State::Body(left) = self.state {
            let left = left.saturating_sub(n);
            self.state = if left == 0 {
                State::Head
            } else {
                State::Body(left)
            };
        }
    }

    /// Whether a request was refused (the stream ends after the poison head).
    pub fn refused(&self) -> bool {
        self.state == State::Refused
    }

    /// Whether a request head is awaited against the clock: one has begun and is not
    /// complete yet, or the connection has not completed any.
    fn head_pending(&self) -> bool {
        self.state == State::Head && (self.heads == 0 || !self.pending.is_empty())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An app connection whose requests pass through `FramingScanner`.
pub struct FramingGuard<T> {
    inner: T,
    scanner: FramingScanner,
    out: VecDeque<u8>,
    on_refuse: Option<Box<dyn FnOnce(&'static str) + Send>>,
    /// Time allowed for a request head.
    head_timeout: std::time::Duration,
    /// Armed while a head is awaited (see `FramingScanner::head_pending`).
    head_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> FramingGuard<T> {
    /// Wraps `inner`; `on_refuse` is called once with the reason (for logs and metrics).
    /// A request head must arrive whole within `head_timeout` of its first byte (the
    /// first request's: of the connection).
    pub fn new(
        inner: T,
        head_timeout: std::time::Duration,
        on_refuse: impl FnOnce(&'static str) + Send + 'static,
    ) -> Self {
        Self {
            inner,
            scanner: FramingScanner::default(),
            out: VecDeque::new(),
            on_refuse: Some(Box::new(on_refuse)),
            head_timeout,
            head_deadline: None,
        }
    }

    /// Arms or disarms the head timer after the scanner moved; Err once it ran out.
    fn check_head_timer(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.scanner.head_pending() {
            self.head_deadline = None;
            return Ok(());
        }
        let timeout = self.head_timeout;
        let deadline = self
            .head_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not complete within the header-read timeout",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FramingGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let n = buf.remaining().min(this.out.len());
                let (a, b) = this.out.as_slices();
                let from_a = n.min(a.len());
                buf.put_slice(&a[..from_a]);
                buf.put_slice(&b[..n - from_a]);
                this.out.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.scanner.refused() {
                return Poll::Ready(Ok(())); // end of stream after the poison head
            }
            // Body bytes the caller's buffer cannot overrun, and everything after an
            // h2c preface or a tunnel: read straight into it, no copy.
            if this
                .scanner
                .direct_limit()
                .is_some_and(|n| n >= buf.remaining() as u64)
            {
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                this.scanner
                    .passed_directly((buf.filled().len() - before) as u64);
                return Poll::Ready(Ok(()));
            }
            let mut tmp = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => {
                    this.check_head_timer(cx)?;
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let filled = rb.filled();
                    if filled.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    if let Some(reason) = this.scanner.feed(filled, &mut this.out) {
                        if let Some(f) = this.on_refuse.take() {
                            f(reason);
                        }
                    }
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FramingGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(input: &[u8], split: usize) -> (Vec<u8>, Option<&'static str>) {
        let mut s = FramingScanner::default();
        let mut out = VecDeque::new();
        let split = split.min(input.len());
        let r1 = s.feed(&input[..split], &mut out);
        let r2 = s.feed(&input[split..], &mut out);
        (out.into_iter().collect(), r1.or(r2))
    }

    #[test]
    fn clean_requests_pass_unchanged() {
        let req = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
GET /d HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in [0, 1, 10, 40, 70, 100, req.len()] {
            assert_eq!(run(req, split), (req.to_vec(), None), "split {split}");
        }
    }

    #[test]
    fn ambiguous_framing_is_poisoned() {
        for (req, reason) in [
            (&b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"[..], "duplicate Content-Length"),
            (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "both Content-Length and Transfer-Encoding"),
        ] {
            let (out, r) = run(req, 7);
            assert_eq!(r, Some(reason));
            assert_eq!(out, POISON);
        }
        // A smuggled second request inside a body is only seen as a request if framing
        // says so: here the first is clean, the second ambiguous.
        let req = b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\nab";
        let (out, r) = run(req, 20);
        assert_eq!(r, Some("duplicate Content-Length"));
        assert!(out.ends_with(POISON));
    }

    #[test]
    fn connect_switches_to_passthrough() {
        let req = b"CONNECT echo:7 HTTP/1.1\r\nHost: echo:7\r\n\r\nraw bytes without framing";
        assert_eq!(run(req, 30), (req.to_vec(), None));
    }

    /// Reads what the guard releases until it errs or `dur` passes (paused clock).
    async fn read_for(
        guard: &mut FramingGuard<tokio::io::DuplexStream>,
        dur: std::time::Duration,
    ) -> io::Result<Vec<u8>> {
        use tokio::io::AsyncReadExt as _;
        let mut got = Vec::new();
        let until = tokio::time::Instant::now() + dur;
        loop {
            let mut buf = [0u8; 256];
            match tokio::time::timeout_at(until, guard.read(&mut buf)).await {
                Err(_) => return Ok(got),
                Ok(Ok(0)) => return Ok(got),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unfinished_head_is_cut_off_after_the_timeout() {
        use tokio::io::AsyncWriteExt as _;
        const T: std::time::Duration = std::time::Duration::from_secs(30);
        let (app, inner) = tokio::io::duplex(4096);
        let mut guard = FramingGuard::new(inner, T, |_| {});
        // Nothing at all: cut at 30 s.
        let r = read_for(&mut guard, T * 2).await;
        assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));

        // Trickled bytes do not restart the clock.
        let (mut app2, inner) = tokio::io::duplex(4096);
        let mut guard = FramingGuard::new(inner, T, |_| {});
        let start = tokio::time::Instant::now();
        let trickle = tokio::spawn(async move {
            app2.write_all(b"GET / HTTP/1.1\r\n").await.ok();
            for _ in 0..20 {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                if app2.write_all(b"X").await.is_err() {
                    break;
                }
            }
        });
        let r = read_for(&mut guard, T * 3).await;
        assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        assert_eq!(start.elapsed(), T);
        trickle.abort();

        // A head finished in time passes; an idle keep-alive after it is not cut; the
        // next head, once begun, is held to the clock again.
        drop(app);
        let (mut app, inner) = tokio::io::duplex(4096);
        let mut guard = FramingGuard::new(inner, T, |_| {});
        tokio::time::sleep(T - std::time::Duration::from_secs(2)).await;
        app.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        let got = read_for(&mut guard, T * 4)
            .await
            .expect("no timeout while idle");
        assert!(got.starts_with(b"GET / HTTP/1.1"));
        app.write_all(b"GET /next HTTP/1.1\r\n")
            .await
            .expect("write");
        let r = read_for(&mut guard, T * 2).await;
        assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
    }

    #[tokio::test]
    async fn bodies_read_directly_still_end_where_framing_says() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut input = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 20000\r\n\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 20_000));
        input.extend_from_slice(
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        );
        for chunk in [4096usize, 65536] {
            let (mut app, inner) = tokio::io::duplex(1 << 20);
            let refused = std::sync::Arc::new(std::sync::Mutex::new(None));
            let r = refused.clone();
            let mut guard =
                FramingGuard::new(inner, std::time::Duration::from_secs(30), move |why| {
                    *r.lock().expect("lock") = Some(why);
                });
            app.write_all(&input).await.expect("write");
            drop(app);
            let mut out = Vec::new();
            let mut buf = vec![0u8; chunk];
            loop {
                let n = guard.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(out.len(), input.len() - 58 + POISON.len(), "chunk {chunk}");
            assert!(out.ends_with(POISON), "chunk {chunk}");
            assert_eq!(
                *refused.lock().expect("lock"),
                Some("duplicate Content-Length")
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000), split in 0usize..2000) {
            let _ = run(&bytes, split);
        }
    }
}

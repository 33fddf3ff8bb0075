//! A chitchat `Transport` whose every datagram is sealed with the cluster gossip key.
//!
//! chitchat's message codec is private to it, so its public `UdpSocket` serves as the
//! codec through a loopback round trip:
//!
//! * send: chitchat's socket encodes the envelope and sends it to our `capture` socket
//!   on 127.0.0.1; we read the bytes back, seal them (splitting into at most
//!   `MAX_FRAGMENTS` fragments when sealing would pass the UDP limit) and send them from
//!   the real socket.
//! * receive: we open a datagram from the real socket and inject the plaintext into
//!   chitchat's socket from one of a few injection slots, followed by a sentinel (a
//!   `BadCluster` message) from that slot's second socket. chitchat's socket silently skips
//!   payloads it cannot decode, so the sentinel tells us when a payload was skipped; every
//!   datagram the codec hands back names its slot by its source address, so peers and
//!   payloads stay paired even if the loopback drops one of our own datagrams (a full
//!   receive buffer), and a slot whose datagrams were lost is freed after `CODEC_WAIT`.
//!
//! chitchat polls `recv` inside `select!` and drops it mid-way, so all receive state (which
//! peer sent the payload being decoded) lives in the socket, every await is cancel-safe, and
//! injection uses non-blocking sends. Only one payload is in flight at a time.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket as CodecSocket};
use chitchat::{ChitchatEnvelope, ChitchatMessage, ProtocolVersion};
use tracing::{debug, warn};

use crate::seal::{Keyring, SealError, Sealer, MAX_DATAGRAM, OVERHEAD};
use crate::stats::GossipStats;

/// Fragment header inside the sealed plaintext: message id (u16), index, count.
const FRAG_HEADER: usize = 4;
/// Largest plaintext chunk per datagram.
const MAX_CHUNK: usize = MAX_DATAGRAM - OVERHEAD - FRAG_HEADER;
/// A chitchat message never needs more than two; four leaves room.
const MAX_FRAGMENTS: usize = 4;
/// Injection slots (payload + sentinel socket pairs).
const SLOTS: usize = 4;
/// How long the codec may take to hand back an injected payload (a loopback round trip:
/// microseconds, unless one of the datagrams was lost).
const CODEC_WAIT: Duration = Duration::from_millis(250);
/// Partially received messages kept at once.
const MAX_PARTIALS: usize = 32;
/// How long a partial message waits for its other fragments.
const PARTIAL_TTL: Duration = Duration::from_secs(5);

/// The keyring shared by the agent (which may rotate it) and the gossip socket.
#[derive(Debug, Clone)]
pub struct SharedKeyring {
    inner: Arc<RwLock<Keyring>>,
    generation: Arc<AtomicU64>,
}

impl SharedKeyring {
    /// Wraps a keyring.
    pub fn new(ring: Keyring) -> Self {
        Self {
            inner: Arc::new(RwLock::new(ring)),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Replaces the keyring; sockets pick it up before their next datagram.
    pub fn replace(&self, ring: Keyring) -> Result<(), SealError> {
        Sealer::new(&ring)?;
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = ring;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// The current keyring.
    pub fn get(&self) -> Keyring {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn sealer(&self) -> Result<(u64, Sealer), SealError> {
        let generation = self.generation.load(Ordering::SeqCst);
        Ok((generation, Sealer::new(&self.get())?))
    }
}

/// Opens sealed UDP sockets for chitchat.
#[derive(Debug, Clone)]
pub struct SealedTransport {
    keyring: SharedKeyring,
    stats: Arc<GossipStats>,
    news: Arc<crate::fanout::News>,
}

impl SealedTransport {
    /// A transport sealing with `keyring` and counting into `stats`.
    pub fn new(keyring: SharedKeyring, stats: Arc<GossipStats>) -> Self {
        Self {
            keyring,
            stats,
            news: crate::fanout::News::new(),
        }
    }
}

impl crate::fanout::GossipTransport for SealedTransport {
    /// One node's transport: every socket it opens shares the node's news.
    fn news(&self, _listen: SocketAddr) -> Arc<crate::fanout::News> {
        self.news.clone()
    }
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(
            SealedSocket::open(
                listen_addr,
                self.keyring.clone(),
                self.stats.clone(),
                self.news.clone(),
            )
            .await?,
        ))
    }
}

struct Partial {
    from: SocketAddr,
    chunks: Vec<Option<Vec<u8>>>,
    started: Instant,
}

/// One way into the codec: a payload socket and a sentinel socket, and the peer whose
/// payload is in flight through them.
struct Slot {
    payload: tokio::net::UdpSocket,
    payload_addr: SocketAddr,
    sentinel: tokio::net::UdpSocket,
    sentinel_addr: SocketAddr,
    /// The peer whose payload was injected here, while the slot is in use.
    peer: Option<SocketAddr>,
    /// The codec already handed the payload back.
    returned: bool,
    /// The sentinel still has to be sent (the socket was busy).
    sentinel_owed: bool,
    since: Instant,
}

impl Slot {
    async fn open() -> anyhow::Result<Self> {
        let payload = tokio::net::UdpSocket::bind(LOOPBACK).await?;
        let sentinel = tokio::net::UdpSocket::bind(LOOPBACK).await?;
        Ok(Self {
            payload_addr: payload.local_addr()?,
            sentinel_addr: sentinel.local_addr()?,
            payload,
            sentinel,
            peer: None,
            returned: false,
            sentinel_owed: false,
            since: Instant::now(),
        })
    }
}

/// One sealed gossip socket. See the module documentation.
pub struct SealedSocket {
    wire: tokio::net::UdpSocket,
    codec: CodecSocket,
    codec_addr: SocketAddr,
    capture: tokio::net::UdpSocket,
    capture_addr: SocketAddr,
    slots: Vec<Slot>,
    sentinel_bytes: Vec<u8>,
    keyring: SharedKeyring,
    sealer_generation: u64,
    sealer: Sealer,
    partials: HashMap<(SocketAddr, u16), Partial>,
    next_message_id: u16,
    buf: Box<[u8]>,
    stats: Arc<GossipStats>,
    /// Which round-opening SYNs go out (`fanout`).
    thinning: crate::fanout::Thinning,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

impl SealedSocket {
    /// Binds the real socket on `listen_addr` and the loopback codec sockets.
    pub async fn open(
        listen_addr: SocketAddr,
        keyring: SharedKeyring,
        stats: Arc<GossipStats>,
        news: Arc<crate::fanout::News>,
    ) -> anyhow::Result<Self> {
        let wire = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("cannot bind gossip socket {listen_addr}/udp"))?;
        let codec = CodecSocket::open(LOOPBACK).await?;
        let codec_addr = codec.local_addr()?;
        let capture = tokio::net::UdpSocket::bind(LOOPBACK).await?;
        let capture_addr = capture.local_addr()?;
        let mut slots = Vec::with_capacity(SLOTS);
        for _ in 0..SLOTS {
            slots.push(Slot::open().await?);
        }
        let (sealer_generation, sealer) = keyring.sealer()?;
        let mut socket = Self {
            wire,
            codec_addr,
            capture,
            capture_addr,
            slots,
            sentinel_bytes: Vec::new(),
            keyring,
            sealer_generation,
            sealer,
            partials: HashMap::new(),
            next_message_id: rand::random(),
            thinning: crate::fanout::Thinning::new(news),
            buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
            stats,
            codec,
        };
        let bad_cluster = ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::BadCluster,
        };
        socket.sentinel_bytes = socket.encode(bad_cluster).await?;
        Ok(socket)
    }

    /// Encodes an envelope with chitchat's own codec via the capture socket.
    async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<Vec<u8>> {
        self.codec.send(self.capture_addr, envelope).await?;
        let deadline = tokio::time::Instant::now() + CODEC_WAIT;
        loop {
            let (len, from) =
                tokio::time::timeout_at(deadline, self.capture.recv_from(&mut self.buf))
                    .await
                    .context("gossip codec did not answer")??;
            if from == self.codec_addr {
                return Ok(self.buf[..len].to_vec());
            }
        }
    }

    fn refresh_sealer(&mut self) {
        let generation = self.keyring.generation.load(Ordering::SeqCst);
        if generation != self.sealer_generation {
            match self.keyring.sealer() {
                Ok((g, s)) => {
                    self.sealer_generation = g;
                    self.sealer = s;
                }
                Err(e) => warn!(error = %e, "new gossip keyring unusable; keeping the old one"),
            }
        }
    }

    /// Opens one datagram; returns a whole plaintext message when one is complete.
    fn accept_datagram(&mut self, len: usize, from: SocketAddr) -> Option<Vec<u8>> {
        self.refresh_sealer();
        let plain = match self.sealer.open(&self.buf[..len], now_ms()) {
            Ok(p) => p,
            Err(e) => {
                self.stats.count_drop(e);
                debug!(%from, error = %e, "dropped gossip datagram");
                return None;
            }
        };
        if plain.len() < FRAG_HEADER {
            self.stats.count_drop(SealError::Malformed);
            return None;
        }
        let id = u16::from_be_bytes([plain[0], plain[1]]);
        let (index, count) = (plain[2] as usize, plain[3] as usize);
        if count == 0 || count > MAX_FRAGMENTS || index >= count {
            self.stats.count_drop(SealError::Malformed);
            return None;
        }
        if count == 1 {
            return Some(plain[FRAG_HEADER..].to_vec());
        }
        let now = Instant::now();
        self.partials
            .retain(|_, p| now.duration_since(p.started) < PARTIAL_TTL);
        if self.partials.len() >= MAX_PARTIALS && !self.partials.contains_key(&(from, id)) {
            if let Some(oldest) = self
                .partials
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| *k)
            {
                self.partials.remove(&oldest);
            }
        }
        let partial = self.partials.entry((from, id)).or_insert_with(|| Partial {
            from,
            chunks: vec![None; count],
            started: now,
        });
        if partial.chunks.len() != count || partial.from != from {
            self.stats.count_drop(SealError::Malformed);
            self.partials.remove(&(from, id));
            return None;
        }
        partial.chunks[index] = Some(plain[FRAG_HEADER..].to_vec());
        if partial.chunks.iter().all(Option::is_some) {
            let done = self.partials.remove(&(from, id))?;
            return Some(done.chunks.into_iter().flatten().flatten().collect());
        }
        None
    }

    /// Hands a plaintext message to the codec through a free slot, followed by the
    /// slot's sentinel. Never awaits.
    fn inject(&mut self, plain: &[u8], from: SocketAddr) {
        self.expire_slots();
        let Some(slot) = self.slots.iter_mut().find(|s| s.peer.is_none()) else {
            self.stats.codec_lost.fetch_add(1, Ordering::Relaxed);
            warn!("every gossip codec slot is busy; datagram dropped");
            return;
        };
        if let Err(e) = slot.payload.try_send_to(plain, self.codec_addr) {
            warn!(error = %e, "gossip codec injection failed; datagram dropped");
            self.stats.codec_lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        slot.peer = Some(from);
        slot.returned = false;
        slot.sentinel_owed = true;
        slot.since = Instant::now();
        self.pay_sentinels();
    }

    fn pay_sentinels(&mut self) {
        for slot in &mut self.slots {
            if slot.sentinel_owed
                && slot
                    .sentinel
                    .try_send_to(&self.sentinel_bytes, self.codec_addr)
                    .is_ok()
            {
                slot.sentinel_owed = false;
            }
        }
    }

    /// Frees slots the codec has not finished with after `CODEC_WAIT`: one of their
    /// loopback datagrams was lost.
    fn expire_slots(&mut self) {
        let now = Instant::now();
        for slot in &mut self.slots {
            if slot.peer.is_some() && now.duration_since(slot.since) >= CODEC_WAIT {
                if !slot.returned {
                    self.stats.codec_lost.fetch_add(1, Ordering::Relaxed);
                    warn!("gossip codec lost an injected datagram");
                }
                slot.peer = None;
                slot.sentinel_owed = false;
            }
        }
    }
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.wire.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let syn = matches!(envelope.message, ChitchatMessage::Syn { .. });
        if syn {
            let boosted = self.thinning.boosted();
            let allowed = self.thinning.allow_syn();
            if self.thinning.boosted() > boosted {
                self.stats.news_rounds.fetch_add(1, Ordering::Relaxed);
            }
            if !allowed {
                self.stats.syns_skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(SendOutcome { num_bytes_sent: 0 });
            }
        } else {
            self.thinning.other_sent();
        }
        let plain = self.encode(envelope).await?;
        if syn {
            self.thinning.syn_sent(plain.len());
        }
        self.stats.wire.record(&plain);
        self.refresh_sealer();
        let chunks: Vec<&[u8]> = if plain.is_empty() {
            vec![&[]]
        } else {
            plain.chunks(MAX_CHUNK).collect()
        };
        if chunks.len() > MAX_FRAGMENTS {
            self.stats.oversize.fetch_add(1, Ordering::Relaxed);
            anyhow::bail!("gossip message of {} bytes is too large", plain.len());
        }
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1);
        let mut sent = 0;
        for (index, chunk) in chunks.iter().enumerate() {
            let mut framed = Vec::with_capacity(FRAG_HEADER + chunk.len());
            framed.extend_from_slice(&id.to_be_bytes());
            framed.push(index as u8);
            framed.push(chunks.len() as u8);
            framed.extend_from_slice(chunk);
            let sealed = self.sealer.seal(&framed, now_ms())?;
            sent += self
                .wire
                .send_to(&sealed, to)
                .await
                .with_context(|| format!("cannot send gossip to {to}"))?;
        }
        self.stats
            .datagrams_out
            .fetch_add(chunks.len() as u64, Ordering::Relaxed);
        self.stats
            .bytes_out
            .fetch_add(sent as u64, Ordering::Relaxed);
        Ok(SendOutcome {
            num_bytes_sent: sent,
        })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            self.pay_sentinels();
            self.expire_slots();
            if let Some(oldest) = self
                .slots
                .iter()
                .filter(|s| s.peer.is_some())
                .map(|s| s.since)
                .min()
            {
                let deadline = tokio::time::Instant::from_std(oldest + CODEC_WAIT);
                let Ok(out) = tokio::time::timeout_at(deadline, self.codec.recv()).await else {
                    continue;
                };
                let out = out?;
                if let Some(slot) = self
                    .slots
                    .iter_mut()
                    .find(|s| s.sentinel_addr == out.from_addr)
                {
                    if let Some(peer) = slot.peer.take() {
                        if !slot.returned {
                            self.stats
                                .dropped_undecodable
                                .fetch_add(1, Ordering::Relaxed);
                            debug!(%peer, "authentic gossip datagram did not decode");
                        }
                    }
                } else if let Some(slot) = self
                    .slots
                    .iter_mut()
                    .find(|s| s.payload_addr == out.from_addr)
                {
                    if let (Some(peer), false) = (slot.peer, slot.returned) {
                        slot.returned = true;
                        return Ok(RecvOutcome {
                            from_addr: peer,
                            envelope: out.envelope,
                            num_bytes_received: out.num_bytes_received,
                        });
                    }
                }
                continue;
            }
            let (len, from) = match self.wire.recv_from(&mut self.buf).await {
                Ok(r) => r,
                Err(e) => {
                    // Never return an error: chitchat would stop gossiping for good.
                    self.stats.recv_errors.fetch_add(1, Ordering::Relaxed);
                    debug!(error = %e, "gossip socket receive error");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
            if let Some(plain) = self.accept_datagram(len, from) {
                self.inject(&plain, from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::GossipKey;

    /// A sealed socket on a loopback port of its own, with no news.
    async fn socket(ring: &SharedKeyring, stats: &Arc<GossipStats>) -> SealedSocket {
        SealedSocket::open(
            LOOPBACK,
            ring.clone(),
            stats.clone(),
            crate::fanout::News::new(),
        )
        .await
        .expect("a loopback socket")
    }

    fn bad_cluster() -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::BadCluster,
        }
    }

    /// chitchat drops `recv` mid-way whenever its timer fires; nothing may be lost or
    /// attributed to the wrong peer when that happens at every possible point.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recv_survives_cancellation() {
        let ring = SharedKeyring::new(Keyring::single(GossipKey::generate()));
        let stats = Arc::new(GossipStats::default());
        let mut a = socket(&ring, &stats).await;
        let mut b = socket(&ring, &stats).await;
        let mut c = socket(&ring, &stats).await;
        let a_addr = a.local_addr().expect("addr");
        let (b_addr, c_addr) = (b.local_addr().expect("addr"), c.local_addr().expect("addr"));
        const N: usize = 200;
        let sender = tokio::spawn(async move {
            for i in 0..N {
                let s = if i % 2 == 0 { &mut b } else { &mut c };
                s.send(a_addr, bad_cluster()).await.expect("send");
                if i % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            (b, c)
        });
        let mut from_b = 0;
        let mut from_c = 0;
        let mut cancelled = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut round = 0u64;
        while from_b + from_c < N && Instant::now() < deadline {
            round += 1;
            // Mostly: poll `recv` once and drop it if it is not done, as chitchat's
            // select! does when its timer fires first. Now and then: wait for real.
            let outcome = if round % 4 != 0 {
                tokio::select! {
                    biased;
                    r = a.recv() => Some(r),
                    _ = std::future::ready(()) => None,
                }
            } else {
                tokio::time::timeout(Duration::from_millis(20), a.recv())
                    .await
                    .ok()
            };
            match outcome {
                Some(Ok(out)) => {
                    assert!(matches!(out.envelope.message, ChitchatMessage::BadCluster));
                    if out.from_addr == b_addr {
                        from_b += 1;
                    } else if out.from_addr == c_addr {
                        from_c += 1;
                    } else {
                        panic!("message attributed to {}", out.from_addr);
                    }
                }
                Some(Err(e)) => panic!("recv failed: {e}"),
                None => cancelled += 1,
            }
        }
        let _ = sender.await.expect("sender");
        assert_eq!(
            (from_b, from_c),
            (N / 2, N / 2),
            "after {cancelled} cancellations"
        );
        assert!(cancelled > 0, "the test must actually cancel");
    }

    /// A loopback datagram of our own lost (payload and sentinel, or only the sentinel)
    /// must neither stall the socket nor shift later payloads onto the wrong peer.
    #[tokio::test]
    async fn lost_codec_datagrams_do_not_stall_or_misattribute() {
        let ring = SharedKeyring::new(Keyring::single(GossipKey::generate()));
        let stats = Arc::new(GossipStats::default());
        let mut a = socket(&ring, &stats).await;
        let mut b = socket(&ring, &Arc::default()).await;
        let mut c = socket(&ring, &Arc::default()).await;
        let ghost: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        // Slot 0: payload and sentinel lost. Slot 1: payload returned, sentinel lost.
        for (slot, returned) in a.slots.iter_mut().zip([false, true]) {
            slot.peer = Some(ghost);
            slot.returned = returned;
            slot.since = Instant::now();
        }
        let a_addr = a.local_addr().expect("addr");
        let (b_addr, c_addr) = (b.local_addr().expect("addr"), c.local_addr().expect("addr"));
        for i in 0..20 {
            let (s, want) = if i % 2 == 0 {
                (&mut b, b_addr)
            } else {
                (&mut c, c_addr)
            };
            s.send(a_addr, bad_cluster()).await.expect("send");
            let out = tokio::time::timeout(Duration::from_secs(2), a.recv())
                .await
                .expect("not stalled")
                .expect("recv");
            assert_eq!(out.from_addr, want, "message {i}");
        }
        tokio::time::sleep(CODEC_WAIT).await;
        let _ = tokio::time::timeout(Duration::from_millis(50), a.recv()).await;
        assert!(a.slots.iter().all(|s| s.peer.is_none()), "lost slots freed");
        assert_eq!(stats.codec_lost.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn large_messages_are_fragmented_and_reassembled() {
        let ring = SharedKeyring::new(Keyring::single(GossipKey::generate()));
        let stats = Arc::new(GossipStats::default());
        let mut a = socket(&ring, &stats).await;
        // A plaintext larger than one sealed datagram takes two fragments.
        let big = vec![7u8; MAX_CHUNK + 100];
        let from: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let seal = |i: u8| {
            let mut framed = vec![0, 1, i, 2];
            let part = if i == 0 {
                &big[..MAX_CHUNK]
            } else {
                &big[MAX_CHUNK..]
            };
            framed.extend_from_slice(part);
            a.sealer.seal(&framed, now_ms()).expect("seal")
        };
        let (f0, f1) = (seal(0), seal(1));
        a.buf[..f1.len()].copy_from_slice(&f1);
        assert!(a.accept_datagram(f1.len(), from).is_none(), "incomplete");
        a.buf[..f0.len()].copy_from_slice(&f0);
        assert_eq!(a.accept_datagram(f0.len(), from), Some(big));
    }
}

//! An in-process chitchat transport with scripted link faults, so multi-node gossip tests
//! (partitions, one-way cuts, message loss) run inside one test process: no root, no
//! network namespace, no UDP port, and with tokio's paused clock when timing matters.
//!
//! It exists because `Gossip::start` speaks sealed UDP only; [`Gossip::start_with_transport`]
//! takes any chitchat [`Transport`], and [`MemoryNetwork`] is the one tests use. It is
//! public (not `cfg(test)`) so other crates' tests can build clusters on it too.
//!
//! Every socket opened on a network gets the address it asks for (any address works:
//! nothing is bound; port 0 picks a free port on that IP) and a bounded queue
//! ([`MemoryNetwork::DEFAULT_QUEUE`] envelopes unless set otherwise). A send is checked
//! against the link faults in force at that moment and then either queued for the receiver
//! or dropped and counted in [`MemoryStats`], like a UDP datagram: a full queue drops
//! (never grows), and sending to an address nobody holds succeeds and delivers nothing.
//! Envelopes already queued when a link is cut are still delivered, like datagrams in
//! flight.
//!
//! Envelopes are handed over as values: chitchat's codec is private, so by default nothing
//! is encoded, byte counts are reported as 0, and there is no MTU (chitchat sizes its
//! deltas for UDP itself). [`MemoryNetwork::measure_bytes`] turns on encoding: every
//! envelope goes through chitchat's own codec (its `ChannelTransport`, which encodes and
//! decodes in memory), its size is counted for the sender, and a message over the MTU is
//! dropped and counted, as the UDP socket would refuse it. Everything above the transport
//! (signed records, verification, failure detection) is the production code.
//!
//! [`Gossip::start_with_transport`]: crate::Gossip::start_with_transport

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::mpsc;

/// What happened to the envelopes sent on a [`MemoryNetwork`] so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Queued for their receiver.
    pub delivered: u64,
    /// Dropped because the link from sender to receiver was cut.
    pub cut: u64,
    /// Dropped by the random loss rate.
    pub lost: u64,
    /// Dropped because the receiver's queue was full.
    pub overflow: u64,
    /// Sent to an address no open socket holds.
    pub unreachable: u64,
    /// Encoded bytes sent (only with [`MemoryNetwork::measure_bytes`]).
    pub bytes: u64,
    /// Messages dropped because their encoding exceeded the MTU (only with
    /// [`MemoryNetwork::measure_bytes`]).
    pub oversize: u64,
    /// Round-opening SYNs not sent because the network is large (`fanout`).
    pub syns_skipped: u64,
    /// Rounds opened with all three live peers because of membership news (`fanout`).
    pub news_rounds: u64,
    /// The largest encoded message sent (only with [`MemoryNetwork::measure_bytes`]).
    pub largest: u64,
}

struct Endpoint {
    /// Tells this socket from an earlier one that held the same address.
    id: u64,
    tx: mpsc::Sender<RecvOutcome>,
}

struct Net {
    endpoints: HashMap<SocketAddr, Endpoint>,
    next_id: u64,
    /// Directed links that drop everything: (from, to).
    cuts: HashSet<(SocketAddr, SocketAddr)>,
    /// Probability that an envelope on an uncut link is dropped.
    loss: f64,
    rng: StdRng,
    queue: usize,
    stats: MemoryStats,
    /// Each address's membership news, read by the socket there (`fanout`).
    news: HashMap<SocketAddr, Arc<crate::fanout::News>>,
    /// The codec network and MTU when bytes are measured.
    codec: Option<(chitchat::transport::ChannelTransport, usize)>,
    /// Encoded bytes sent per sender address.
    sent: HashMap<SocketAddr, u64>,
}

/// An in-memory network of chitchat sockets with scriptable link cuts and loss; see the
/// module documentation. Clones share the same network.
///
/// Pass `&network` to [`Gossip::start_with_transport`](crate::Gossip::start_with_transport)
/// for every node, each with its own address as both `listen` and `advertise`.
#[derive(Clone)]
pub struct MemoryNetwork {
    net: Arc<Mutex<Net>>,
}

impl Default for MemoryNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let net = self.lock();
        f.debug_struct("MemoryNetwork")
            .field("sockets", &net.endpoints.len())
            .field("cut_links", &net.cuts.len())
            .field("loss", &net.loss)
            .field("queue", &net.queue)
            .field("stats", &net.stats)
            .finish()
    }
}

impl MemoryNetwork {
    /// Envelopes each socket's queue holds before further ones are dropped.
    pub const DEFAULT_QUEUE: usize = 256;

    /// An empty network: no cuts, no loss, queues of [`Self::DEFAULT_QUEUE`].
    pub fn new() -> Self {
        Self::with_queue_capacity(Self::DEFAULT_QUEUE)
    }

    /// An empty network whose sockets queue at most `capacity` envelopes (at least 1).
    pub fn with_queue_capacity(capacity: usize) -> Self {
        Self {
            net: Arc::new(Mutex::new(Net {
                endpoints: HashMap::new(),
                next_id: 0,
                cuts: HashSet::new(),
                loss: 0.0,
                rng: StdRng::seed_from_u64(0),
                queue: capacity.max(1),
                stats: MemoryStats::default(),
                news: HashMap::new(),
                codec: None,
                sent: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Net> {
        self.net.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts the link between `a` and `b` in both directions.
    pub fn cut(&self, a: SocketAddr, b: SocketAddr) {
        let mut net = self.lock();
        net.cuts.insert((a, b));
        net.cuts.insert((b, a));
    }

    /// Cuts the link from `from` to `to` only: `to` still reaches `from`.
    pub fn cut_one_way(&self, from: SocketAddr, to: SocketAddr) {
        self.lock().cuts.insert((from, to));
    }

    /// Cuts `node` off from every socket open now, both ways (sockets opened later are
    /// not cut; call again after opening them).
    pub fn isolate(&self, node: SocketAddr) {
        let mut net = self.lock();
        let others: Vec<SocketAddr> = net
            .endpoints
            .keys()
            .copied()
            .filter(|a| *a != node)
            .collect();
        for other in others {
            net.cuts.insert((node, other));
            net.cuts.insert((other, node));
        }
    }

    /// Cuts every link between a node of `side_a` and a node of `side_b`, both ways.
    pub fn partition(&self, side_a: &[SocketAddr], side_b: &[SocketAddr]) {
        let mut net = self.lock();
        for a in side_a {
            for b in side_b {
                if a != b {
                    net.cuts.insert((*a, *b));
                    net.cuts.insert((*b, *a));
                }
            }
        }
    }

    /// Restores the link between `a` and `b` in both directions.
    pub fn heal(&self, a: SocketAddr, b: SocketAddr) {
        let mut net = self.lock();
        net.cuts.remove(&(a, b));
        net.cuts.remove(&(b, a));
    }

    /// Restores the link from `from` to `to` only.
    pub fn heal_one_way(&self, from: SocketAddr, to: SocketAddr) {
        self.lock().cuts.remove(&(from, to));
    }

    /// Restores every link (the loss rate stays as set).
    pub fn heal_all(&self) {
        self.lock().cuts.clear();
    }

    /// Whether envelopes from `from` to `to` are dropped by a cut.
    pub fn is_cut(&self, from: SocketAddr, to: SocketAddr) -> bool {
        self.lock().cuts.contains(&(from, to))
    }

    /// Drops each envelope on an uncut link with probability `rate` (clamped to 0..=1),
    /// drawn from a generator seeded with `seed`. The seed fixes the sequence of drop
    /// decisions; which envelopes they hit depends on the order the nodes send in.
    pub fn set_loss(&self, rate: f64, seed: u64) {
        let mut net = self.lock();
        net.loss = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        net.rng = StdRng::seed_from_u64(seed);
    }

    /// From now on, sockets opened on this network encode every envelope with chitchat's
    /// codec: sizes are counted per sender ([`Self::bytes_sent`]) and a message larger
    /// than `mtu` bytes is dropped and counted ([`MemoryStats::oversize`]). Costs one
    /// encode and decode per message.
    pub fn measure_bytes(&self, mtu: usize) {
        self.lock().codec = Some((chitchat::transport::ChannelTransport::with_mtu(mtu), mtu));
    }

    /// Encoded bytes `addr` sent so far (0 unless [`Self::measure_bytes`] is on).
    pub fn bytes_sent(&self, addr: SocketAddr) -> u64 {
        self.lock().sent.get(&addr).copied().unwrap_or(0)
    }

    /// Counters of what happened to the envelopes sent so far.
    pub fn stats(&self) -> MemoryStats {
        self.lock().stats
    }

    /// Addresses of the sockets open now, sorted.
    pub fn open_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self.lock().endpoints.keys().copied().collect();
        addrs.sort();
        addrs
    }

    fn send(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
        bytes: Option<usize>,
    ) {
        let mut net = self.lock();
        if let Some(n) = bytes {
            net.stats.bytes += n as u64;
            net.stats.largest = net.stats.largest.max(n as u64);
            *net.sent.entry(from).or_insert(0) += n as u64;
        }
        if net.cuts.contains(&(from, to)) {
            net.stats.cut += 1;
            return;
        }
        if net.loss > 0.0 {
            let loss = net.loss;
            if net.rng.random_bool(loss) {
                net.stats.lost += 1;
                return;
            }
        }
        let outcome = net.endpoints.get(&to).map(|endpoint| {
            endpoint.tx.try_send(RecvOutcome {
                from_addr: from,
                envelope,
                num_bytes_received: bytes.unwrap_or(0),
            })
        });
        match outcome {
            None => net.stats.unreachable += 1,
            Some(Ok(())) => net.stats.delivered += 1,
            Some(Err(mpsc::error::TrySendError::Full(_))) => net.stats.overflow += 1,
            // The receiver is being dropped: as good as unbound.
            Some(Err(mpsc::error::TrySendError::Closed(_))) => net.stats.unreachable += 1,
        }
    }

    /// Takes `listen_addr` (port 0: a free one) for a new socket.
    #[allow(clippy::type_complexity)]
    fn register(
        &self,
        listen_addr: SocketAddr,
    ) -> anyhow::Result<(
        SocketAddr,
        u64,
        mpsc::Receiver<RecvOutcome>,
        Option<(chitchat::transport::ChannelTransport, usize)>,
    )> {
        let mut net = self.lock();
        let mut addr = listen_addr;
        if addr.port() == 0 {
            let port = (1..=u16::MAX)
                .find(|p| !net.endpoints.contains_key(&SocketAddr::new(addr.ip(), *p)))
                .context("no free port left on the in-memory network")?;
            addr.set_port(port);
        }
        anyhow::ensure!(
            !net.endpoints.contains_key(&addr),
            "address {addr} is already in use on the in-memory network"
        );
        let (tx, rx) = mpsc::channel(net.queue);
        let id = net.next_id;
        net.next_id += 1;
        net.endpoints.insert(addr, Endpoint { id, tx });
        Ok((addr, id, rx, net.codec.clone()))
    }

    fn close(&self, addr: SocketAddr, id: u64) {
        let mut net = self.lock();
        if net.endpoints.get(&addr).is_some_and(|e| e.id == id) {
            net.endpoints.remove(&addr);
        }
    }
}

#[async_trait]
impl Transport for MemoryNetwork {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let news = crate::fanout::GossipTransport::news(self, listen_addr);
        let (addr, id, rx, codec) = self.register(listen_addr)?;
        let codec = match codec {
            // The codec socket holds the same address on the codec's own network: an
            // envelope sent to itself comes back encoded, decoded and measured.
            Some((transport, _)) => Some(transport.open(addr).await?),
            None => None,
        };
        Ok(Box::new(MemorySocket {
            addr,
            id,
            network: self.clone(),
            rx,
            codec,
            thinning: crate::fanout::Thinning::new(news),
        }))
    }
}

impl crate::fanout::GossipTransport for MemoryNetwork {
    /// One per address as asked for (port 0 included), kept while the network lives.
    fn news(&self, listen: SocketAddr) -> Arc<crate::fanout::News> {
        self.lock()
            .news
            .entry(listen)
            .or_insert_with(crate::fanout::News::new)
            .clone()
    }
}

/// One socket of a [`MemoryNetwork`]; releases its address when dropped.
struct MemorySocket {
    addr: SocketAddr,
    id: u64,
    network: MemoryNetwork,
    rx: mpsc::Receiver<RecvOutcome>,
    codec: Option<Box<dyn Socket>>,
    /// Which round-opening SYNs go out, as on the sealed transport (`fanout`; only
    /// with [`MemoryNetwork::measure_bytes`], which gives it the SYN sizes).
    thinning: crate::fanout::Thinning,
}

#[async_trait]
impl Socket for MemorySocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.addr)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let syn = matches!(envelope.message, chitchat::ChitchatMessage::Syn { .. });
        if syn {
            let boosted = self.thinning.boosted();
            let allowed = self.thinning.allow_syn();
            if self.thinning.boosted() > boosted {
                self.network.lock().stats.news_rounds += 1;
            }
            if !allowed {
                self.network.lock().stats.syns_skipped += 1;
                return Ok(SendOutcome { num_bytes_sent: 0 });
            }
        } else {
            self.thinning.other_sent();
        }
        let Some(codec) = self.codec.as_mut() else {
            self.network.send(self.addr, to, envelope, None);
            return Ok(SendOutcome { num_bytes_sent: 0 });
        };
        if codec.send(self.addr, envelope).await.is_err() {
            // chitchat's codec refuses a message over the MTU, as UDP would.
            self.network.lock().stats.oversize += 1;
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        let back = codec.recv().await?;
        let n = back.num_bytes_received;
        if syn {
            self.thinning.syn_sent(n);
        }
        self.network.send(self.addr, to, back.envelope, Some(n));
        Ok(SendOutcome { num_bytes_sent: n })
    }

    /// Cancel-safe: chitchat drops this future whenever its gossip timer fires first.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        // The sender lives in the network until this socket is dropped, so this only
        // ends if the network's state was torn down under us.
        self.rx
            .recv()
            .await
            .context("in-memory gossip socket closed")
    }
}

impl Drop for MemorySocket {
    fn drop(&mut self) {
        self.network.close(self.addr, self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chitchat::{ChitchatMessage, ProtocolVersion};

    use super::*;

    fn envelope() -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::BadCluster,
        }
    }

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 7946))
    }

    /// Whether `socket` has an envelope waiting, and from whom.
    async fn next(socket: &mut Box<dyn Socket>) -> Option<SocketAddr> {
        tokio::time::timeout(Duration::from_millis(20), socket.recv())
            .await
            .ok()
            .map(|r| r.expect("recv").from_addr)
    }

    #[tokio::test]
    async fn cuts_drop_by_direction_and_heal_restores() {
        let net = MemoryNetwork::new();
        let mut a = net.open(addr(1)).await.expect("a");
        let mut b = net.open(addr(2)).await.expect("b");
        a.send(addr(2), envelope()).await.expect("send");
        assert_eq!(next(&mut b).await, Some(addr(1)));

        net.cut_one_way(addr(1), addr(2));
        assert!(net.is_cut(addr(1), addr(2)) && !net.is_cut(addr(2), addr(1)));
        a.send(addr(2), envelope()).await.expect("send");
        b.send(addr(1), envelope()).await.expect("send");
        assert_eq!(next(&mut b).await, None, "a -> b is cut");
        assert_eq!(next(&mut a).await, Some(addr(2)), "b -> a still flows");

        net.heal_one_way(addr(1), addr(2));
        net.cut(addr(1), addr(2));
        a.send(addr(2), envelope()).await.expect("send");
        b.send(addr(1), envelope()).await.expect("send");
        assert_eq!((next(&mut a).await, next(&mut b).await), (None, None));

        net.heal(addr(2), addr(1));
        a.send(addr(2), envelope()).await.expect("send");
        assert_eq!(next(&mut b).await, Some(addr(1)));

        let _c = net.open(addr(3)).await.expect("c");
        net.isolate(addr(3));
        net.partition(&[addr(1)], &[addr(2)]);
        assert!(net.is_cut(addr(3), addr(1)) && net.is_cut(addr(2), addr(3)));
        assert!(net.is_cut(addr(1), addr(2)) && net.is_cut(addr(2), addr(1)));
        net.heal_all();
        assert!(!net.is_cut(addr(3), addr(1)) && !net.is_cut(addr(1), addr(2)));

        let stats = net.stats();
        assert_eq!((stats.delivered, stats.cut), (3, 3), "{stats:?}");
    }

    #[tokio::test]
    async fn full_queue_drops_instead_of_growing() {
        let net = MemoryNetwork::with_queue_capacity(2);
        let mut a = net.open(addr(1)).await.expect("a");
        let mut b = net.open(addr(2)).await.expect("b");
        for _ in 0..5 {
            a.send(addr(2), envelope()).await.expect("send");
        }
        assert_eq!(next(&mut b).await, Some(addr(1)));
        assert_eq!(next(&mut b).await, Some(addr(1)));
        assert_eq!(next(&mut b).await, None);
        let stats = net.stats();
        assert_eq!((stats.delivered, stats.overflow), (2, 3), "{stats:?}");
    }

    #[tokio::test]
    async fn loss_is_reproducible_from_the_seed() {
        async fn delivered(rate: f64, seed: u64) -> u64 {
            let net = MemoryNetwork::with_queue_capacity(1000);
            let mut a = net.open(addr(1)).await.expect("a");
            let _b = net.open(addr(2)).await.expect("b");
            net.set_loss(rate, seed);
            for _ in 0..1000 {
                a.send(addr(2), envelope()).await.expect("send");
            }
            let stats = net.stats();
            assert_eq!(stats.delivered + stats.lost, 1000);
            stats.delivered
        }
        let half = delivered(0.5, 7).await;
        assert_eq!(half, delivered(0.5, 7).await, "same seed, same drops");
        assert!(
            (400..600).contains(&half),
            "{half} of 1000 delivered at 50% loss"
        );
        assert_eq!(delivered(0.0, 1).await, 1000);
        assert_eq!(delivered(1.0, 1).await, 0);
        assert_eq!(delivered(f64::NAN, 1).await, 1000);
    }

    #[tokio::test]
    async fn addresses_are_exclusive_and_released_on_drop() {
        let net = MemoryNetwork::new();
        let a = net.open(addr(1)).await.expect("a");
        assert!(net.open(addr(1)).await.is_err(), "address in use");
        let any = net
            .open(SocketAddr::from(([10, 0, 0, 1], 0)))
            .await
            .expect("port 0");
        assert_ne!(any.local_addr().expect("addr"), addr(1));
        assert_eq!(net.open_addrs().len(), 2);
        drop(a);
        let mut again = net.open(addr(1)).await.expect("reopened after drop");
        let mut other = net.open(addr(2)).await.expect("other");
        other.send(addr(1), envelope()).await.expect("send");
        assert_eq!(next(&mut again).await, Some(addr(2)));
        other
            .send(addr(9), envelope())
            .await
            .expect("send to nobody is fine");
        assert_eq!(net.stats().unreachable, 1);
    }
}

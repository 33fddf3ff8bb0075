//! Fewer peers per round as the cluster grows: a byte budget for digests.
//!
//! chitchat opens every round with a SYN to three live peers (its `GOSSIP_COUNT`, a
//! constant it does not let us set), and every SYN and every answer carries the digest of
//! every member. At 50 members a digest is ~450 bytes; at 1 000 it is ~9 KB and most of
//! what a node sends (BENCHMARKS.md, "Gossip at fleet scale"). Each SYN a node sends costs
//! one digest, and (everyone doing the same) it answers about as many SYNs with another,
//! so it sends about `2 × SYNs per round × digest size` per round. The transport keeps
//! that under [`DIGEST_BUDGET`]: it lets `budget / (2 × digest bytes × rounds per second)`
//! of the three live-peer SYNs go out per round (fractions carried over to later rounds:
//! below one, a node opens a round with a live peer only every few rounds), never fewer
//! than [`MIN_SYNS_PER_ROUND`] and never more than chitchat's three, and skips the
//! others before they are encoded. Spreading then takes more rounds in very large
//! clusters instead of bytes growing with the member count. chitchat keeps no state about a SYN, so a skipped one is
//! exactly a peer not chosen; scuttlebutt's push-pull exchange spreads news fast with one
//! peer per round. The SYNs chitchat adds after the three (to a dead member, which is how
//! partitions heal, and to a seed) always go out. Small clusters are never thinned.
//!
//! A round's SYNs leave back to back from one task with no other message between them,
//! so a burst of SYNs is one round; the digest size is that of the last SYN sent (the
//! SYN is a digest and the cluster id), the round length the time between bursts.
//!
//! News is spread at full speed. Thinning slows everything a digest carries, and what
//! matters most is how fast a member that just appeared (a join, a restart, a member back
//! from a partition) is seen alive everywhere: every node must observe three increasing
//! heartbeats of it (chitchat ignores the first), which travel only in digests. So when a
//! node learns of a member it did not know ([`spawn_watch`] marks [`News`]), it gossips with
//! all three live peers a round for [`NEWS_BOOST`]; the nodes it tells do the same, and
//! the news spreads as in a small cluster. Those extra SYNs are paid from a bucket of
//! bytes that fills at [`NEWS_BUDGET`] up to [`NEWS_BURST`], so whatever the churn a node
//! never spends more than `DIGEST_BUDGET + NEWS_BUDGET` on digests on average, and a quiet
//! cluster spends nothing from it. A member coming back alive is not news: counting it
//! fed itself at 1 000 nodes (full-fanout rounds shorten the intervals observers record,
//! the next ordinary gap crosses phi, the member's return is news again).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chitchat::transport::Transport;
use chitchat::{Chitchat, ChitchatHandle};
use tokio::time::Instant;

/// SYNs chitchat sends to live peers each round.
pub const CHITCHAT_LIVE_SYNS: usize = 3;

/// Bytes per second a node may spend on digests before it gossips with fewer peers per
/// round (leaving room for deltas under the 120 KB/s a node may send at 1 000 members).
pub const DIGEST_BUDGET: f64 = 96_000.0;

/// The fewest live-peer SYNs per round, on average: one every four rounds. Below this
/// the budget is exceeded rather than spreading news and heartbeats slower still.
pub const MIN_SYNS_PER_ROUND: f64 = 0.25;

/// How long after news a node opens every round with all three live peers.
pub const NEWS_BOOST: Duration = Duration::from_secs(1);

/// Bytes per second the bucket for news fills with: what news may add to
/// [`DIGEST_BUDGET`] on average (the two stay under 120 KB/s with the deltas).
pub const NEWS_BUDGET: f64 = 16_000.0;

/// The most the bucket for news holds (and holds when a node starts): at 1 000 members
/// about three seconds of full fanout.
pub const NEWS_BURST: f64 = 1_000_000.0;

/// A gap longer than this between two SYNs starts a new round.
const BURST_GAP: Duration = Duration::from_millis(20);

/// Live-peer SYNs per round within the budget, for SYNs of `syn_bytes` every `round`.
pub fn syns_per_round(syn_bytes: usize, round: Duration) -> f64 {
    let per_round_cost = 2.0 * syn_bytes as f64;
    if per_round_cost == 0.0 || round.is_zero() {
        return CHITCHAT_LIVE_SYNS as f64;
    }
    let rounds_per_s = 1.0 / round.as_secs_f64();
    (DIGEST_BUDGET / (per_round_cost * rounds_per_s))
        .clamp(MIN_SYNS_PER_ROUND, CHITCHAT_LIVE_SYNS as f64)
}

/// When a node last had news about membership: set by [`spawn_watch`], read by the
/// node's transport ([`Thinning`]). Shared between the two, one per node.
#[derive(Debug)]
pub struct News {
    base: Instant,
    /// Milliseconds after `base` of the last news, plus one (0: never).
    last: AtomicU64,
}

impl News {
    /// No news yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    /// Something new about membership happened now.
    pub fn mark(&self) {
        let ms = Instant::now()
            .saturating_duration_since(self.base)
            .as_millis() as u64;
        self.last.store(ms + 1, Ordering::Relaxed);
    }

    /// Whether the last news is at most `within` old.
    pub fn within(&self, within: Duration) -> bool {
        match self.last.load(Ordering::Relaxed) {
            0 => false,
            at => {
                let now = Instant::now().saturating_duration_since(self.base);
                now.saturating_sub(Duration::from_millis(at - 1)) <= within
            }
        }
    }
}

/// A chitchat transport whose sockets thin SYNs: it hands out the [`News`] the socket
/// at an address reads, so whoever runs chitchat on it can feed it ([`spawn_watch`]).
pub trait GossipTransport: Transport {
    /// The news of the socket opened (or to be opened) on `listen`.
    fn news(&self, listen: SocketAddr) -> Arc<News>;
}

/// Watches a node's membership for news (see [`spawn_watch`]); stops the watch when
/// dropped.
#[derive(Debug)]
pub struct MembersWatch(tokio::task::JoinHandle<()>);

impl Drop for MembersWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Marks `news` whenever the node of `handle` learns of a member it did not know,
/// checking once every `round`. The task ends by
/// itself once the node shuts down (its chitchat dropped), or when the returned guard is
/// dropped.
pub fn spawn_watch(handle: &ChitchatHandle, news: Arc<News>, round: Duration) -> MembersWatch {
    MembersWatch(tokio::spawn(watch_members(
        Arc::downgrade(&handle.chitchat()),
        news,
        round,
    )))
}

async fn watch_members(
    chitchat: Weak<tokio::sync::Mutex<Chitchat>>,
    news: Arc<News>,
    round: Duration,
) {
    let mut known = 0usize;
    loop {
        let Some(c) = chitchat.upgrade() else { return };
        let k = c.lock().await.node_states().len();
        drop(c);
        if k > known {
            news.mark();
        }
        known = k;
        tokio::time::sleep(round).await;
    }
}

/// Decides, SYN by SYN, which ones go out; see the module documentation.
#[derive(Debug)]
pub struct Thinning {
    last_syn: Option<Instant>,
    round_started: Option<Instant>,
    /// Smoothed round length.
    round: Duration,
    /// Encoded size of the last SYN sent.
    syn_bytes: usize,
    position: usize,
    /// SYNs this round may send.
    allowed: usize,
    /// Fractions of a SYN carried to later rounds.
    credit: f64,
    /// This node's news.
    news: Arc<News>,
    /// Bytes left for full fanout on news, and when it was last topped up.
    news_bucket: f64,
    news_refilled: Instant,
    /// Rounds opened at full fanout because of news.
    boosted: u64,
}

impl Thinning {
    /// Thinning for the node whose news is `news`.
    pub fn new(news: Arc<News>) -> Self {
        Self {
            last_syn: None,
            round_started: None,
            round: Duration::ZERO,
            syn_bytes: 0,
            position: 0,
            allowed: 0,
            credit: 0.0,
            news,
            news_bucket: NEWS_BURST,
            news_refilled: Instant::now(),
            boosted: 0,
        }
    }

    /// Rounds opened at full fanout because of news so far.
    pub fn boosted(&self) -> u64 {
        self.boosted
    }

    /// Whether a SYN about to be sent goes out.
    pub fn allow_syn(&mut self) -> bool {
        let now = Instant::now();
        let same_round = self
            .last_syn
            .is_some_and(|t| now.saturating_duration_since(t) <= BURST_GAP);
        self.last_syn = Some(now);
        if same_round {
            self.position += 1;
        } else {
            self.position = 0;
            if let Some(prev) = self.round_started {
                let last = now.saturating_duration_since(prev);
                self.round = if self.round.is_zero() {
                    last
                } else {
                    (self.round * 7 + last) / 8
                };
            }
            self.round_started = Some(now);
            self.credit += syns_per_round(self.syn_bytes, self.round);
            self.allowed = (self.credit.floor() as usize).min(CHITCHAT_LIVE_SYNS);
            self.credit = (self.credit - self.allowed as f64).max(0.0);
            self.boost_on_news(now);
        }
        self.position >= CHITCHAT_LIVE_SYNS || self.position < self.allowed
    }

    /// At the start of a round: all three live peers if there is news and the bucket
    /// pays for the extra SYNs.
    fn boost_on_news(&mut self, now: Instant) {
        let since = now.saturating_duration_since(self.news_refilled);
        self.news_refilled = now;
        self.news_bucket = (self.news_bucket + since.as_secs_f64() * NEWS_BUDGET).min(NEWS_BURST);
        if self.allowed >= CHITCHAT_LIVE_SYNS || !self.news.within(NEWS_BOOST) {
            return;
        }
        let cost = ((CHITCHAT_LIVE_SYNS - self.allowed) * 2 * self.syn_bytes) as f64;
        if cost <= self.news_bucket {
            self.news_bucket -= cost;
            self.allowed = CHITCHAT_LIVE_SYNS;
            self.boosted += 1;
        }
    }

    /// A SYN of `bytes` encoded bytes went out.
    pub fn syn_sent(&mut self, bytes: usize) {
        self.syn_bytes = bytes;
    }

    /// Any other message was sent: the round's SYNs are over.
    pub fn other_sent(&mut self) {
        self.last_syn = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUND: Duration = Duration::from_millis(200);

    #[test]
    fn small_digests_keep_three_large_ones_one() {
        assert_eq!(syns_per_round(450, ROUND), 3.0);
        assert_eq!(syns_per_round(0, ROUND), 3.0);
        let at_1000 = syns_per_round(9_000, ROUND);
        assert!((1.0..1.1).contains(&at_1000), "{at_1000}");
        assert_eq!(syns_per_round(200_000, ROUND), MIN_SYNS_PER_ROUND);
    }

    async fn round(t: &mut Thinning, syns: usize, bytes: usize) -> Vec<bool> {
        tokio::time::advance(ROUND).await;
        let out = (0..syns).map(|_| t.allow_syn()).collect();
        t.syn_sent(bytes);
        out
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_the_first_live_syns_and_everything_after_the_three() {
        let mut t = Thinning::new(News::new());
        // Small digests: all of chitchat's SYNs.
        for _ in 0..3 {
            assert!(round(&mut t, 5, 450).await.iter().all(|a| *a));
        }
        // Large digests (from the next round on): one live peer; the dead-member and
        // seed SYNs still go.
        round(&mut t, 5, 9_000).await;
        let r = round(&mut t, 5, 9_000).await;
        assert_eq!(r, [true, false, false, true, true]);
        // An answer sent between SYNs ends the burst.
        tokio::time::advance(ROUND).await;
        assert!(t.allow_syn());
        t.other_sent();
        assert!(t.allow_syn());
    }

    #[tokio::test(start_paused = true)]
    async fn fractions_carry_over_so_the_average_meets_the_budget() {
        // 1.6 SYNs per round, then 0.6 (a live peer only some rounds).
        for bytes in [6_000, 16_000] {
            let mut t = Thinning::new(News::new());
            round(&mut t, 3, bytes).await;
            let mut sent = 0;
            for _ in 0..100 {
                sent += round(&mut t, 3, bytes).await.iter().filter(|a| **a).count();
            }
            let want = syns_per_round(bytes, ROUND) * 100.0;
            assert!(
                (sent as f64 - want).abs() <= 2.0,
                "{bytes}: {sent} vs {want}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn news_opens_rounds_with_all_three_until_the_bucket_is_spent() {
        let news = News::new();
        let mut t = Thinning::new(news.clone());
        let live = |r: Vec<bool>| r[..CHITCHAT_LIVE_SYNS].iter().filter(|a| **a).count();
        round(&mut t, 3, 16_000).await;
        // Quiet: under one live peer a round on average.
        let mut quiet = 0;
        for _ in 0..10 {
            quiet += live(round(&mut t, 3, 16_000).await);
        }
        assert!(quiet <= 7, "{quiet}");
        // News: every round opens with all three for NEWS_BOOST, then back to thinning.
        news.mark();
        let boost_rounds = (NEWS_BOOST.as_millis() / ROUND.as_millis()) as usize;
        for i in 0..boost_rounds {
            assert_eq!(live(round(&mut t, 3, 16_000).await), 3, "round {i}");
        }
        assert_eq!(t.boosted(), boost_rounds as u64);
        for _ in 0..2 {
            round(&mut t, 3, 16_000).await;
        }
        let mut after = 0;
        for _ in 0..10 {
            after += live(round(&mut t, 3, 16_000).await);
        }
        assert!(after <= 7, "{after}");
        // Endless news: the bucket runs dry and the average stays within both budgets.
        let mut sent = 0;
        let rounds = 600;
        for _ in 0..rounds {
            news.mark();
            sent += live(round(&mut t, 3, 16_000).await);
        }
        let spent = sent as f64 * 2.0 * 16_000.0;
        let allowed =
            (DIGEST_BUDGET + NEWS_BUDGET) * rounds as f64 * ROUND.as_secs_f64() + NEWS_BURST;
        assert!(spent <= allowed, "{spent} > {allowed}");
        assert!(sent < 3 * rounds, "never thinned again");
    }
}

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

use std::time::Duration;

use tokio::time::Instant;

/// SYNs chitchat sends to live peers each round.
pub const CHITCHAT_LIVE_SYNS: usize = 3;

/// Bytes per second a node may spend on digests before it gossips with fewer peers per
/// round (leaving room for deltas under the 120 KB/s a node may send at 1 000 members).
pub const DIGEST_BUDGET: f64 = 96_000.0;

/// The fewest live-peer SYNs per round, on average: one every four rounds. Below this
/// the budget is exceeded rather than spreading news and heartbeats slower still.
pub const MIN_SYNS_PER_ROUND: f64 = 0.25;

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

/// Decides, SYN by SYN, which ones go out; see the module documentation.
#[derive(Debug, Default)]
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
}

impl Thinning {
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
        }
        self.position >= CHITCHAT_LIVE_SYNS || self.position < self.allowed
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
        let mut t = Thinning::default();
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
            let mut t = Thinning::default();
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
}

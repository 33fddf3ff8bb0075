//! Counters of the gossip transport, read by `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::seal::SealError;

/// Datagram and drop counters. Every dropped datagram is counted under one reason.
#[derive(Debug, Default)]
pub struct GossipStats {
    /// Datagrams received on the gossip port.
    pub datagrams_in: AtomicU64,
    /// Datagrams sent.
    pub datagrams_out: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Too short, unknown version or bad framing.
    pub dropped_malformed: AtomicU64,
    /// Sealed with a key not in the keyring.
    pub dropped_unknown_key: AtomicU64,
    /// Failed authentication.
    pub dropped_bad_tag: AtomicU64,
    /// Outside the time window.
    pub dropped_stale: AtomicU64,
    /// Replayed.
    pub dropped_replay: AtomicU64,
    /// Authentic but not a chitchat message.
    pub dropped_undecodable: AtomicU64,
    /// Authentic datagrams lost inside this process's codec round trip (loopback drop).
    pub codec_lost: AtomicU64,
    /// Outgoing messages too large to send.
    pub oversize: AtomicU64,
    /// Socket receive errors.
    pub recv_errors: AtomicU64,
    /// Node records ignored because their signature or certificate did not verify.
    pub rejected_records: AtomicU64,
    /// Records claiming the CA role without the root's proof (the claim is ignored).
    pub false_ca_claims: AtomicU64,
    /// Round-opening SYNs not sent because the cluster is large (`fanout`).
    pub syns_skipped: AtomicU64,
    /// Rounds opened with all three live peers because of membership news (`fanout`).
    pub news_rounds: AtomicU64,
    /// What the messages this node sent carried (digests, deltas by key).
    pub wire: crate::wire::WireCounters,
}

impl GossipStats {
    /// Counts a dropped datagram under its reason.
    pub fn count_drop(&self, reason: SealError) {
        let c = match reason {
            SealError::UnknownKey => &self.dropped_unknown_key,
            SealError::BadTag => &self.dropped_bad_tag,
            SealError::Stale => &self.dropped_stale,
            SealError::Replay => &self.dropped_replay,
            _ => &self.dropped_malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Dropped datagrams by reason, for `weft_gossip_dropped_total{reason}`.
    pub fn dropped_by_reason(&self) -> [(&'static str, u64); 7] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("malformed", g(&self.dropped_malformed)),
            ("unknown_key", g(&self.dropped_unknown_key)),
            ("bad_tag", g(&self.dropped_bad_tag)),
            ("stale", g(&self.dropped_stale)),
            ("replay", g(&self.dropped_replay)),
            ("undecodable", g(&self.dropped_undecodable)),
            ("codec_lost", g(&self.codec_lost)),
        ]
    }
}

//! Where gossip bytes go: reads an encoded chitchat message (chitchat 0.13's wire format)
//! far enough to split its size into header, digest and delta, and the delta's content by
//! the key it carries. The sealed transport runs it on every message it sends and adds
//! the result to [`WireCounters`], which `/metrics` and `bench gossip` report.
//!
//! It exists because you cannot make gossip cheaper without knowing which part costs:
//! the per-round digest of every member, the deltas, or one key that changes too often.
//! Only sizes are read; nothing here is trusted or applied (chitchat decodes for real).
//!
//! Wire format (chitchat 0.13): `magic u16 | protocol u8 | type u8 | body`. A SYN is
//! `digest | cluster id`, a SYN-ACK `digest | delta`, an ACK `delta`. A V0 digest is
//! `count u16` and that many `(id, heartbeat u64, gc version u64, max version u64)`; a V1
//! digest, and every delta, is a block stream (`type u8 | len u16 | bytes`, zstd or
//! raw, ended by type 0) whose content is a sequence of items: for a delta, node ops
//! (`0 | id | gc u64 | from u64`), key-values (`1 | key | value | version u64 | status
//! u8`) and max-version ops (`2 | u64`).

use std::sync::atomic::{AtomicU64, Ordering};

use chitchat::{ChitchatId, Deserializable};

/// A message could not be read (only ever our own encoder's output is read, so this
/// means chitchat changed its format).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Ended early or held an impossible value.
    #[error("unreadable chitchat message: {0}")]
    Malformed(&'static str),
}

/// The four chitchat message kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Opens a round: the sender's digest.
    Syn,
    /// The answer: the receiver's digest and what the sender lacks.
    SynAck,
    /// Closes the round: what the receiver lacks.
    Ack,
    /// Refusal from another cluster.
    BadCluster,
}

impl MessageKind {
    /// Every kind, in counter order.
    pub const ALL: [MessageKind; 4] = [Self::Syn, Self::SynAck, Self::Ack, Self::BadCluster];

    /// Its metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Syn => "syn",
            Self::SynAck => "synack",
            Self::Ack => "ack",
            Self::BadCluster => "bad_cluster",
        }
    }
}

/// What a delta's key-value is about, by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClass {
    /// `weft.node`: the signed node record (with its certificate).
    Record,
    /// `weft.svc`: the signed service set.
    Services,
    /// `weft.cfg`: the config digest.
    ConfigDigest,
    /// `weft.cfg.new`: recent signed config entries riding the gossip.
    ConfigEntries,
    /// `weft.edges`: the traffic summary.
    Edges,
    /// `weft.figures`: per-version totals.
    Figures,
    /// `weft.crl*`: revocation list shards.
    Revocations,
    /// `weft.roots`: the trust bundle.
    Roots,
    /// chitchat's own keys and anything else.
    Other,
}

impl KeyClass {
    /// Every class, in counter order.
    pub const ALL: [KeyClass; 9] = [
        Self::Record,
        Self::Services,
        Self::ConfigDigest,
        Self::ConfigEntries,
        Self::Edges,
        Self::Figures,
        Self::Revocations,
        Self::Roots,
        Self::Other,
    ];

    /// The class of gossip key `key`.
    pub fn of(key: &str) -> Self {
        match key {
            crate::record::NODE_KEY => Self::Record,
            crate::record::SERVICES_KEY => Self::Services,
            crate::membership::CONFIG_DIGEST_KEY => Self::ConfigDigest,
            crate::membership::CONFIG_ENTRIES_KEY => Self::ConfigEntries,
            crate::membership::EDGES_KEY => Self::Edges,
            crate::membership::FIGURES_KEY => Self::Figures,
            crate::trust::ROOTS_KEY => Self::Roots,
            k if crate::record::is_crl_key(k) => Self::Revocations,
            _ => Self::Other,
        }
    }

    /// Its metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Record => "record",
            Self::Services => "services",
            Self::ConfigDigest => "config_digest",
            Self::ConfigEntries => "config_entries",
            Self::Edges => "edges",
            Self::Figures => "figures",
            Self::Revocations => "revocations",
            Self::Roots => "roots",
            Self::Other => "other",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(8)
    }
}

/// The sizes inside one encoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breakdown {
    /// Its kind.
    pub kind: MessageKind,
    /// Magic, protocol and type (and a SYN's cluster id).
    pub header: usize,
    /// The digest as encoded (compressed under protocol V1).
    pub digest: usize,
    /// Members the digest lists.
    pub digest_members: usize,
    /// The delta as encoded (always a compressed block stream).
    pub delta: usize,
    /// The delta's content before compression, by key class (`KeyClass::ALL` order);
    /// node and max-version ops are counted in `delta_framing`.
    pub delta_keys: [usize; 9],
    /// The delta's node and max-version ops before compression.
    pub delta_framing: usize,
}

/// Reads the sizes inside `msg`, an encoded chitchat message.
pub fn breakdown(msg: &[u8]) -> Result<Breakdown, WireError> {
    let mut buf = msg;
    let header = take(&mut buf, 4)?;
    if u16::from_le_bytes([header[0], header[1]]) != MAGIC {
        return Err(WireError::Malformed("magic number"));
    }
    let protocol = header[2];
    let kind = match header[3] {
        0 => MessageKind::Syn,
        1 => MessageKind::SynAck,
        2 => MessageKind::Ack,
        3 => MessageKind::BadCluster,
        _ => return Err(WireError::Malformed("message type")),
    };
    let mut out = Breakdown {
        kind,
        header: 4,
        digest: 0,
        digest_members: 0,
        delta: 0,
        delta_keys: [0; 9],
        delta_framing: 0,
    };
    if matches!(kind, MessageKind::Syn | MessageKind::SynAck) {
        let before = buf.len();
        out.digest_members = digest(&mut buf, protocol)?;
        out.digest = before - buf.len();
    }
    match kind {
        MessageKind::Syn => out.header += buf.len(),
        MessageKind::SynAck | MessageKind::Ack => {
            out.delta = buf.len();
            let content = block_stream(&mut buf)?;
            if !buf.is_empty() {
                return Err(WireError::Malformed("bytes after the delta"));
            }
            delta_items(&content, &mut out)?;
        }
        MessageKind::BadCluster => {}
    }
    Ok(out)
}

const MAGIC: u16 = 45_139;
/// One zstd block never holds more than this (chitchat writes 16 KiB blocks).
const MAX_BLOCK: usize = u16::MAX as usize;
/// A whole message's content never exceeds this (four datagrams' worth, uncompressed
/// blocks at most 64 KiB each).
const MAX_CONTENT: usize = 4 * 1024 * 1024;

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], WireError> {
    if buf.len() < n {
        return Err(WireError::Malformed("truncated"));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn u16_le(buf: &mut &[u8]) -> Result<u16, WireError> {
    let b = take(buf, 2)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn chitchat_id(buf: &mut &[u8]) -> Result<(), WireError> {
    ChitchatId::deserialize(buf)
        .map(|_| ())
        .map_err(|_| WireError::Malformed("node id"))
}

/// Skips a digest; returns how many members it lists.
fn digest(buf: &mut &[u8], protocol: u8) -> Result<usize, WireError> {
    match protocol {
        0 => {
            let n = u16_le(buf)? as usize;
            for _ in 0..n {
                chitchat_id(buf)?;
                take(buf, 24)?;
            }
            Ok(n)
        }
        1 => {
            let content = block_stream(buf)?;
            let mut c = &content[..];
            let mut n = 0;
            while !c.is_empty() {
                chitchat_id(&mut c)?;
                take(&mut c, 24)?;
                n += 1;
            }
            Ok(n)
        }
        _ => Err(WireError::Malformed("protocol version")),
    }
}

/// Reads a block stream, returning its content decompressed.
fn block_stream(buf: &mut &[u8]) -> Result<Vec<u8>, WireError> {
    let mut content = Vec::new();
    loop {
        let kind = take(buf, 1)?[0];
        if kind == 0 {
            return Ok(content);
        }
        let len = u16_le(buf)? as usize;
        let block = take(buf, len)?;
        match kind {
            1 => {
                let plain = zstd::bulk::decompress(block, MAX_BLOCK)
                    .map_err(|_| WireError::Malformed("zstd block"))?;
                content.extend_from_slice(&plain);
            }
            2 => content.extend_from_slice(block),
            _ => return Err(WireError::Malformed("block type")),
        }
        if content.len() > MAX_CONTENT {
            return Err(WireError::Malformed("content too large"));
        }
    }
}

fn string<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], WireError> {
    let n = u16_le(buf)? as usize;
    take(buf, n)
}

fn delta_items(content: &[u8], out: &mut Breakdown) -> Result<(), WireError> {
    let mut c = content;
    while !c.is_empty() {
        let before = c.len();
        match take(&mut c, 1)?[0] {
            0 => {
                chitchat_id(&mut c)?;
                take(&mut c, 16)?;
                out.delta_framing += before - c.len();
            }
            1 => {
                let key = string(&mut c)?;
                string(&mut c)?;
                take(&mut c, 9)?;
                let class = std::str::from_utf8(key).map_or(KeyClass::Other, KeyClass::of);
                out.delta_keys[class.index()] += before - c.len();
            }
            2 => {
                take(&mut c, 8)?;
                out.delta_framing += before - c.len();
            }
            _ => return Err(WireError::Malformed("delta op")),
        }
    }
    Ok(())
}

/// Running totals of [`Breakdown`]s of the messages a node sent.
#[derive(Debug, Default)]
pub struct WireCounters {
    messages: [AtomicU64; 4],
    header: AtomicU64,
    digest: AtomicU64,
    digest_members: AtomicU64,
    delta: AtomicU64,
    delta_keys: [AtomicU64; 9],
    delta_framing: AtomicU64,
    unreadable: AtomicU64,
}

/// A snapshot of [`WireCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireTotals {
    /// Messages by kind (`MessageKind::ALL` order).
    pub messages: [u64; 4],
    /// Header bytes (and SYN cluster ids).
    pub header: u64,
    /// Digest bytes as encoded.
    pub digest: u64,
    /// Member entries the digests listed.
    pub digest_members: u64,
    /// Delta bytes as encoded.
    pub delta: u64,
    /// Delta content before compression by key class (`KeyClass::ALL` order).
    pub delta_keys: [u64; 9],
    /// Delta node and max-version ops before compression.
    pub delta_framing: u64,
    /// Messages that could not be read.
    pub unreadable: u64,
}

impl WireCounters {
    /// Adds the breakdown of encoded message `msg`.
    pub fn record(&self, msg: &[u8]) {
        let add = |c: &AtomicU64, n: usize| {
            c.fetch_add(n as u64, Ordering::Relaxed);
        };
        match breakdown(msg) {
            Ok(b) => {
                let i = MessageKind::ALL
                    .iter()
                    .position(|k| *k == b.kind)
                    .unwrap_or(3);
                add(&self.messages[i], 1);
                add(&self.header, b.header);
                add(&self.digest, b.digest);
                add(&self.digest_members, b.digest_members);
                add(&self.delta, b.delta);
                for (c, n) in self.delta_keys.iter().zip(b.delta_keys) {
                    add(c, n);
                }
                add(&self.delta_framing, b.delta_framing);
            }
            Err(_) => add(&self.unreadable, 1),
        }
    }

    /// The totals so far.
    pub fn totals(&self) -> WireTotals {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WireTotals {
            messages: self.messages.each_ref().map(g),
            header: g(&self.header),
            digest: g(&self.digest),
            digest_members: g(&self.digest_members),
            delta: g(&self.delta),
            delta_keys: self.delta_keys.each_ref().map(g),
            delta_framing: g(&self.delta_framing),
            unreadable: g(&self.unreadable),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id_bytes(name: &str) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(name.len() as u16).to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&7u64.to_le_bytes());
        b.extend_from_slice(&[4, 127, 0, 0, 1, 0x1f, 0x90]);
        b
    }

    fn raw_stream(content: &[u8]) -> Vec<u8> {
        let mut b = vec![2];
        b.extend_from_slice(&(content.len() as u16).to_le_bytes());
        b.extend_from_slice(content);
        b.push(0);
        b
    }

    #[test]
    fn splits_a_synack_into_digest_and_delta_by_key() {
        let mut msg = MAGIC.to_le_bytes().to_vec();
        msg.extend_from_slice(&[0, 1]);
        // V0 digest of two members.
        msg.extend_from_slice(&2u16.to_le_bytes());
        for n in ["a", "bb"] {
            msg.extend(id_bytes(n));
            msg.extend_from_slice(&[0; 24]);
        }
        let digest_len = msg.len() - 4;
        // Delta: one node op, one record, one edge summary, compressed.
        let mut content = vec![0];
        content.extend(id_bytes("a"));
        content.extend_from_slice(&[0; 16]);
        for (k, v) in [
            ("weft.node", "x".repeat(300)),
            ("weft.edges", "y".repeat(40)),
        ] {
            content.push(1);
            content.extend_from_slice(&(k.len() as u16).to_le_bytes());
            content.extend_from_slice(k.as_bytes());
            content.extend_from_slice(&(v.len() as u16).to_le_bytes());
            content.extend_from_slice(v.as_bytes());
            content.extend_from_slice(&[0; 9]);
        }
        let z = zstd::bulk::compress(&content, 0).expect("compress");
        let mut stream = vec![1];
        stream.extend_from_slice(&(z.len() as u16).to_le_bytes());
        stream.extend_from_slice(&z);
        stream.push(0);
        msg.extend_from_slice(&stream);

        let b = breakdown(&msg).expect("readable");
        assert_eq!(b.kind, MessageKind::SynAck);
        assert_eq!(b.digest, digest_len);
        assert_eq!(b.digest_members, 2);
        assert_eq!(b.delta, stream.len());
        assert_eq!(b.delta_keys[KeyClass::Record.index()], 1 + 11 + 302 + 9);
        assert_eq!(b.delta_keys[KeyClass::Edges.index()], 1 + 12 + 42 + 9);
        assert_eq!(b.delta_framing, 1 + id_bytes("a").len() + 16);
        assert_eq!(b.header + b.digest + b.delta, msg.len());
    }

    #[test]
    fn reads_a_v1_digest_and_a_syn_cluster_id() {
        let mut entries = Vec::new();
        for n in ["n1", "n2", "n3"] {
            entries.extend(id_bytes(n));
            entries.extend_from_slice(&[1; 24]);
        }
        let mut msg = MAGIC.to_le_bytes().to_vec();
        msg.extend_from_slice(&[1, 0]);
        msg.extend(raw_stream(&entries));
        msg.extend_from_slice(&4u16.to_le_bytes());
        msg.extend_from_slice(b"weft");
        let b = breakdown(&msg).expect("readable");
        assert_eq!((b.kind, b.digest_members), (MessageKind::Syn, 3));
        assert_eq!(b.header, 4 + 6);
        assert_eq!(b.header + b.digest, msg.len());
    }

    #[test]
    fn refuses_what_is_not_chitchat() {
        assert!(breakdown(b"").is_err());
        assert!(breakdown(&[0, 0, 0, 0]).is_err());
        let mut msg = MAGIC.to_le_bytes().to_vec();
        msg.extend_from_slice(&[0, 9]);
        assert!(breakdown(&msg).is_err());
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(tail in proptest::collection::vec(any::<u8>(), 0..2048), kind in 0u8..5, proto in 0u8..3) {
            let mut msg = MAGIC.to_le_bytes().to_vec();
            msg.extend_from_slice(&[proto, kind]);
            msg.extend_from_slice(&tail);
            let _ = breakdown(&msg);
            let counters = WireCounters::default();
            counters.record(&msg);
            let t = counters.totals();
            prop_assert_eq!(t.messages.iter().sum::<u64>() + t.unreadable, 1);
        }
    }
}

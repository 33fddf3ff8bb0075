//! What this node publishes in gossip about itself, signed with its own key: its record
//! (addresses, zone, certificate, CA role, leaving) and its service set. A node speaks
//! only for itself; stamps always move forward so a newer record wins.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use weft_gossip::{encode_signed, NodeRecord};

use super::state::{Agent, VERSION};

/// Signing state: the last stamp used, and whether a leave was announced.
#[derive(Debug, Default)]
pub struct RecordSigner {
    last_signed_ms: AtomicU64,
    leaving: AtomicBool,
    /// The chitchat generation this run publishes under (bound into every record).
    generation: u64,
}

impl RecordSigner {
    /// A signer for a run that publishes under `generation`.
    pub fn new(generation: u64) -> Self {
        Self {
            generation,
            ..Self::default()
        }
    }

    /// This run's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A stamp later than every earlier one (wall-clock milliseconds when it can be).
    fn next_ms(&self) -> u64 {
        let now = crate::clock::unix_ms();
        let prev = self.last_signed_ms.fetch_max(now, Ordering::SeqCst);
        if prev >= now {
            self.last_signed_ms.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            now
        }
    }

    /// Marks this node as leaving (published with the next record).
    pub fn set_leaving(&self) {
        self.leaving.store(true, Ordering::SeqCst);
    }
}

impl Agent {
    /// This node's signed gossip record.
    pub fn signed_record(&self) -> String {
        let s = self.settings();
        let (der, _) = self.identity.cert();
        let ca = self.ca.get();
        let record = NodeRecord {
            name: self.identity.info.name.clone(),
            quic_addr: s.quic_advertise(),
            zone: s.zone.clone(),
            version: VERSION.to_owned(),
            cert: NodeRecord::encode_cert(&der),
            ca: ca.is_some(),
            leaving: self.records.leaving.load(Ordering::SeqCst),
            signed_at_ms: self.records.next_ms(),
            generation: self.records.generation,
            gossip_addr: Some(s.gossip_advertise()),
            ca_proof: ca
                .as_ref()
                .and_then(|ca| ca.ca_proof(&self.identity.info.name, self.records.generation)),
            chain: self
                .identity
                .chain()
                .iter()
                .map(|c| NodeRecord::encode_cert(c))
                .collect(),
        };
        encode_signed(&record, |m| self.identity.key.sign(m).unwrap_or_default())
    }

    /// Re-publishes this node's record (after a renewal, a reload or a leave).
    pub async fn publish_record(&self) {
        self.gossip.publish_record(self.signed_record()).await;
    }

    /// Publishes the signed service set (after a registration or a health change).
    pub async fn publish_services(&self) {
        let set = self.data.services.service_set(self.records.next_ms());
        let signed = encode_signed(&set, |m| self.identity.key.sign(m).unwrap_or_default());
        self.gossip.publish_services(signed).await;
    }
}

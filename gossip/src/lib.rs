//! weft's gossip layer: chitchat over UDP datagrams sealed with the cluster gossip key,
//! carrying node records signed with each node's key, and the CA-signed revocation list.
//!
//! `seal` is the pure datagram sealing; `transport` plugs it into chitchat; `record`
//! defines and verifies what nodes publish; `trust` the roots the cluster trusts; `membership` runs chitchat and yields the
//! verified member list. See `GOSSIP.md` beside this crate for the design.
//!
//! The transport is a seam: `Gossip::start` runs over the sealed UDP transport, and
//! `Gossip::start_with_transport` over any chitchat [`Transport`]. `memory` provides
//! [`MemoryNetwork`], an in-process transport with scripted link cuts and loss, so
//! multi-node tests (partitions, failure detection, propagation) need neither root nor a
//! network namespace, and can run on tokio's paused clock.

pub mod fanout;
#[doc(hidden)]
pub mod fuzzing;
pub mod membership;
pub mod memory;
pub mod record;
pub mod seal;
pub mod sim;
pub mod stats;
pub mod transport;
pub mod trust;
pub mod wire;

pub use chitchat::transport::Transport;
pub use fanout::GossipTransport;
pub use membership::{
    Gossip, GossipChanges, GossipConfig, GossipError, Member, MemberStatus, FIGURES_KEY,
    MAX_CONFIG_ENTRIES_VALUE, MAX_FIGURES_VALUE,
};
pub use memory::{MemoryNetwork, MemoryStats};
pub use record::{
    encode_signed, NodeRecord, Protocol, RecordError, RevocationList, Revoked, ServiceRecord,
    ServiceSet, MAX_SERVICES_PER_NODE,
};
pub use seal::{GossipKey, Keyring, KeyringError, SealError, Sealer, MAX_KEYS};
pub use stats::GossipStats;
pub use transport::{SealedTransport, SharedKeyring};
pub use trust::{verify_bundle, TrustBundle, ROOTS_KEY};

//! The revocation list stays small: revoking a node revokes only its unexpired
//! certificates, expired entries are pruned, and a list that would not fit in gossip is
//! refused with the reason instead of published in part. The CA's `now` is stepped.

use std::time::{Duration, SystemTime};

use weft_ca::{CertificateAuthority, ClusterName, NodeKey, NodeName, SpiffeId};

use super::{CaRole, RefusalKind, PRUNE_GRACE};
use crate::store::Store;

const TTL: Duration = Duration::from_secs(60);

/// The root holder's role: its replica's intermediate signed by a fresh root.
pub(super) fn role_named(dir: &std::path::Path, name: &str) -> CaRole {
    let cluster = ClusterName::new("weft").expect("valid");
    let node = NodeName::new(name).expect("valid");
    let (root, _) = CertificateAuthority::create(
        cluster.clone(),
        SystemTime::now(),
        Duration::from_secs(86400 * 30),
    )
    .expect("ca");
    let key = NodeKey::generate().expect("key");
    let inter = root
        .sign_replica_csr(
            &key.replica_csr_der(&cluster, &node).expect("csr"),
            &node,
            Duration::from_secs(86400 * 30),
            SystemTime::now(),
        )
        .expect("intermediate");
    let replica = CertificateAuthority::load(cluster, &inter.der, key).expect("loads");
    let trust = weft_ca::TrustRoot::new(
        ClusterName::new("weft").expect("valid"),
        root.cert_der().to_vec(),
    )
    .expect("trust");
    CaRole::new(
        node,
        replica,
        Some(root),
        trust,
        Store::open(dir).expect("store"),
        TTL,
    )
    .expect("role")
}

fn role(dir: &std::path::Path) -> CaRole {
    role_named(dir, "ca-1")
}

fn issue(ca: &CaRole, key: &NodeKey, name: &str, at: SystemTime) {
    let node = NodeName::new(name).expect("valid");
    let csr = key
        .csr_der(&SpiffeId::node(
            ClusterName::new("weft").expect("valid"),
            node.clone(),
        ))
        .expect("csr");
    ca.issue_own(&node, &csr, at).expect("issued");
}

#[test]
fn a_node_with_many_past_certificates_is_revoked_by_its_live_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = role(dir.path());
    let key = NodeKey::generate().expect("key");
    let t0 = SystemTime::now();
    for i in 0..400u64 {
        issue(&ca, &key, "busy", t0 + Duration::from_secs(i * 40));
    }
    let now = t0 + Duration::from_secs(399 * 40 + 1);
    let revoked = ca
        .revoke(
            &NodeName::new("busy").expect("valid"),
            Vec::new(),
            "test",
            now,
        )
        .expect("revoked");
    assert_eq!(
        revoked.len(),
        2,
        "only the certificates still valid at {now:?}"
    );
    assert_eq!(ca.crl().revoked.len(), 2);
    assert!(ca.crl().revoked.iter().all(|r| r.not_after_unix > 0));
}

#[test]
fn expired_entries_are_pruned_and_an_overfull_list_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = role(dir.path());
    let key = NodeKey::generate().expect("key");
    let t0 = SystemTime::now();
    let mut refused = None;
    let mut revoked = 0;
    for i in 0..2000 {
        let name = format!("node-{i:04}");
        issue(&ca, &key, &name, t0);
        match ca.revoke(
            &NodeName::new(name).expect("valid"),
            Vec::new(),
            "test",
            t0 + Duration::from_secs(1),
        ) {
            Ok(s) => revoked += s.len(),
            Err(r) => {
                refused = Some(r);
                break;
            }
        }
    }
    let refusal = refused.expect("a list over gossip's value limit is refused");
    assert_eq!(refusal.kind, RefusalKind::Unavailable);
    assert!(
        refusal.message.contains("nothing was revoked"),
        "{}",
        refusal.message
    );
    assert!(
        revoked >= 500,
        "{revoked} revocations fit in the gossip shards"
    );
    let full = ca.crl();
    assert_eq!(
        full.revoked.len(),
        revoked,
        "the refused one left the list as it was"
    );
    let shards = ca.signed_crl().expect("published");
    assert!(shards.len() > 1, "{} shards", shards.len());
    assert!(shards
        .iter()
        .all(|s| s.len() <= weft_gossip::record::MAX_SIGNED_VALUE));

    // Not yet past expiry and grace: kept. Past both: the set shrinks back to nothing.
    assert_eq!(ca.prune_revocations(t0 + TTL).expect("prune"), 0);
    let later = t0 + TTL + PRUNE_GRACE + Duration::from_secs(1);
    assert_eq!(ca.prune_revocations(later).expect("prune"), revoked);
    let pruned = ca.crl();
    assert!(pruned.revoked.is_empty());
    assert!(
        pruned.version > full.version,
        "a pruned list is a newer list"
    );
}

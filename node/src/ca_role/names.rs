//! One node name, one node, across CA replicas: each name has one deciding replica, its
//! owner, chosen by rendezvous hashing over the alive replicas, and a replica answers a
//! join only after the owner recorded the claim. Why, and what happens when replicas see
//! different members, is in `CA.md`.

use std::time::SystemTime;

use sha2::{Digest as _, Sha256};
use tracing::{info, warn};
use weft_ca::{unix, NodeName};

use super::{CaRole, Refusal, RefusalKind};
use crate::store::NameClaim;

/// The replica that decides claims on `name`: the highest SHA-256 of (replica, name) among
/// `replicas` (rendezvous hashing: when a replica leaves, only its names move).
pub fn owner<'a>(name: &str, replicas: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    replicas.into_iter().max_by_key(|r| {
        let mut h = Sha256::new();
        h.update(r.as_bytes());
        h.update([0]);
        h.update(name.as_bytes());
        <[u8; 32]>::from(h.finalize())
    })
}

/// The claimant of a join with token `id`.
pub fn join_claimant(token_id: &str) -> String {
    format!("token:{token_id}")
}

impl CaRole {
    /// Decides a claim on `name` as its owner. `alive_elsewhere`: an alive member already
    /// goes by this name (a join is refused; the node's own renewal is not).
    pub fn claim_name(
        &self,
        name: &NodeName,
        claim: &NameClaim,
        alive_elsewhere: bool,
        now: SystemTime,
    ) -> Result<NameClaim, Refusal> {
        if alive_elsewhere && !claim.renewal {
            warn!(node = %name, claimant = %claim.claimant, "name claim refused: an alive member has the name");
            return Err(Refusal::new(
                RefusalKind::NameTaken,
                format!("node name {name} is taken by an alive member"),
            ));
        }
        match self.store.claim_name(name.as_str(), claim, unix(now))? {
            Ok(held) => {
                info!(node = %name, claimant = %held.claimant, until_unix = held.until_unix, "node name claimed");
                Ok(held)
            }
            Err(held) => {
                warn!(node = %name, claimant = %claim.claimant, holder = %held.claimant, "name claim refused: claimed by another join");
                Err(Refusal::new(
                    RefusalKind::NameTaken,
                    format!(
                        "node name {name} is taken: another join claimed it (valid until {})",
                        held.until_unix
                    ),
                ))
            }
        }
    }

    /// Drops a failed join's claim on `name`.
    pub fn release_name(&self, name: &NodeName, claimant: &str) {
        if let Err(e) = self.store.release_name(name.as_str(), claimant) {
            warn!(node = %name, error = %e, "cannot release a name claim");
        }
    }

    /// Until when a claim made now for a leaf of this replica lasts.
    pub fn claim_until(&self, now: SystemTime) -> u64 {
        unix(now) + self.leaf_ttl.as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_stable_and_only_a_leaving_owners_names_move() {
        let three = ["ca-a", "ca-b", "ca-c"];
        let names: Vec<String> = (0..300).map(|i| format!("vm-{i}")).collect();
        let before: Vec<&str> = names
            .iter()
            .map(|n| owner(n, three).expect("some owner"))
            .collect();
        for r in three {
            let share = before.iter().filter(|o| **o == r).count();
            assert!(share > 50, "{r} owns {share} of 300 names");
        }
        let two = ["ca-a", "ca-c"];
        for (n, was) in names.iter().zip(&before) {
            let now = owner(n, two).expect("some owner");
            if *was != "ca-b" {
                assert_eq!(now, *was, "{n} moved although its owner stayed");
            }
        }
        assert_eq!(owner("x", std::iter::empty()), None);
    }
}

//! Virtual IPs: a stable address per service (and per version of it) inside the agent's
//! `vip_range`, derived from the name alone so that every node with the same range gives
//! the same answer without talking to anyone, and a restart changes nothing. The offset
//! is a hash of the name; two names whose hashes meet are separated deterministically
//! (the one that sorts first keeps the slot, the other probes the next slot of its own
//! sequence), so every node that knows the same names agrees.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use sha2::{Digest as _, Sha256};

/// Why a range is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Not `A.B.C.D/N`.
    #[error("{0:?} is not an IPv4 range like 127.240.0.0/12")]
    Syntax(String),
    /// Outside 127.0.0.0/8 (virtual IPs are loopback: no route, nothing leaves the host).
    #[error("{0} is not inside 127.0.0.0/8: virtual IPs must be loopback addresses")]
    NotLoopback(String),
    /// Too small to hold services with few collisions.
    #[error("{0} holds fewer than 256 addresses; use a prefix of /24 or shorter")]
    TooSmall(String),
}

/// A range of virtual IPs (the network and broadcast-like ends are never handed out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipRange {
    base: u32,
    prefix: u8,
}

impl std::str::FromStr for VipRange {
    type Err = RangeError;
    fn from_str(s: &str) -> Result<Self, RangeError> {
        let (ip, prefix) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| RangeError::Syntax(s.to_owned()))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| RangeError::Syntax(s.to_owned()))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| RangeError::Syntax(s.to_owned()))?;
        if prefix > 32 {
            return Err(RangeError::Syntax(s.to_owned()));
        }
        if prefix < 8 || ip.octets()[0] != 127 {
            return Err(RangeError::NotLoopback(s.to_owned()));
        }
        if prefix > 24 {
            return Err(RangeError::TooSmall(s.to_owned()));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            base: u32::from(ip) & mask,
            prefix,
        })
    }
}

impl std::fmt::Display for VipRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl VipRange {
    /// Addresses handed out (all but the first and the last).
    fn slots(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }

    /// Whether `ip` lies inside the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == self.base
    }

    /// The `k`-th candidate offset of `name` (1-based inside the range).
    fn candidate(&self, name: &str, k: u32) -> u32 {
        let mut h = Sha256::new();
        h.update(b"weft-vip\0");
        h.update(name.as_bytes());
        h.update(k.to_be_bytes());
        let d = h.finalize();
        let x = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        1 + x % self.slots()
    }

    /// The address of `name` when no other name competes for it (its first candidate).
    pub fn first_choice(&self, name: &str) -> Ipv4Addr {
        Ipv4Addr::from(self.base + self.candidate(name, 0))
    }

    /// Addresses for every name in `names`: each takes its first free candidate, names
    /// taken in sorted order, so the result depends only on the set of names.
    pub fn assign<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> BTreeMap<String, Ipv4Addr> {
        let names: BTreeSet<&str> = names.into_iter().collect();
        let mut taken: BTreeSet<u32> = BTreeSet::new();
        let mut out = BTreeMap::new();
        let slots = self.slots();
        for name in names {
            if taken.len() as u32 >= slots {
                break; // full: the rest get no address
            }
            // Up to 64 hashed candidates, then the next free slot after the first one.
            let offset = (0..64)
                .map(|k| self.candidate(name, k))
                .find(|o| !taken.contains(o))
                .or_else(|| {
                    let first = self.candidate(name, 0);
                    (0..slots)
                        .map(|i| 1 + (first - 1 + i) % slots)
                        .find(|o| !taken.contains(o))
                });
            let Some(offset) = offset else { break };
            taken.insert(offset);
            out.insert(name.to_owned(), Ipv4Addr::from(self.base + offset));
        }
        out
    }
}

/// The names a catalog gives virtual IPs to: each service, and `<version>.<service>`
/// for each of its versions.
pub fn vip_names<'a>(services: impl IntoIterator<Item = (&'a str, &'a str)>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (service, version) in services {
        out.insert(service.to_owned());
        out.insert(format!("{version}.{service}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_or_name_the_fix() {
        let r: VipRange = "127.240.0.0/12".parse().expect("the default");
        assert_eq!(r.to_string(), "127.240.0.0/12");
        assert!(r.contains(Ipv4Addr::new(127, 255, 1, 2)));
        assert!(!r.contains(Ipv4Addr::new(127, 0, 0, 1)));
        assert!(matches!(
            "10.0.0.0/8".parse::<VipRange>(),
            Err(RangeError::NotLoopback(_))
        ));
        assert!(matches!(
            "127.1.2.0/28".parse::<VipRange>(),
            Err(RangeError::TooSmall(_))
        ));
        assert!(matches!(
            "127.1.2.0".parse::<VipRange>(),
            Err(RangeError::Syntax(_))
        ));
        let host_bits: VipRange = "127.240.9.9/16".parse().expect("host bits dropped");
        assert_eq!(host_bits.to_string(), "127.240.0.0/16");
    }

    #[test]
    fn the_same_offset_in_every_range_of_the_same_size() {
        let a: VipRange = "127.240.0.0/16".parse().expect("range");
        let b: VipRange = "127.241.0.0/16".parse().expect("range");
        let (x, y) = (
            a.first_choice("reviews").octets(),
            b.first_choice("reviews").octets(),
        );
        assert_eq!((x[2], x[3]), (y[2], y[3]));
        assert_eq!(x[1], 240);
    }

    #[test]
    fn a_full_range_hands_out_what_it_has() {
        let r: VipRange = "127.1.1.0/24".parse().expect("range");
        let names: Vec<String> = (0..300).map(|i| format!("svc{i}")).collect();
        assert_eq!(r.assign(names.iter().map(String::as_str)).len(), 254);
    }

    #[test]
    fn collisions_are_separated_the_same_way_whatever_the_order() {
        let r: VipRange = "127.1.1.0/24".parse().expect("range");
        // 300 names in 254 slots would not fit; 200 collide plenty.
        let names: Vec<String> = (0..200).map(|i| format!("svc{i}")).collect();
        let a = r.assign(names.iter().map(String::as_str));
        let b = r.assign(names.iter().rev().map(String::as_str));
        assert_eq!(a, b);
        let distinct: BTreeSet<_> = a.values().collect();
        assert_eq!(distinct.len(), 200, "every name its own address");
        assert!(a
            .values()
            .all(|ip| r.contains(*ip) && ip.octets()[3] != 0 && ip.octets()[3] != 255));
    }

    proptest::proptest! {
        #[test]
        fn range_parsing_never_panics(s in ".{0,40}") {
            let _ = s.parse::<VipRange>();
        }
    }
}

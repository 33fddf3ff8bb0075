//! How big a QUIC datagram may grow on this host's path. quinn starts at 1 200 bytes and
//! discovers the path MTU up to `MtuDiscoveryConfig::upper_bound` (default 1 452, right
//! for Ethernet); on loopback (MTU 65 536) and jumbo-frame networks (9 000) bigger
//! datagrams carry the same bytes in a fraction of the packets, encryptions and system
//! calls. The bound is the MTU of the interface the endpoint is bound to (the smallest
//! of the interfaces that are up when bound to every address), less the IPv6 and UDP
//! headers, and never above `MAX_PAYLOAD`: quinn hands the kernel up to 10 datagrams in
//! one GSO batch, and a batch over 64 KiB is refused by the kernel (EMSGSIZE).
//! Discovery probes the path, so a middlebox with a smaller MTU only costs probes.

use std::net::IpAddr;

/// IPv6 (40) + UDP (8) headers: a bound that fits both address families.
const HEADERS: u32 = 48;
/// quinn's largest GSO batch (`MAX_TRANSMIT_SEGMENTS` in quinn 0.11).
const GSO_SEGMENTS: u32 = 10;
/// Largest datagram payload: `GSO_SEGMENTS` of them stay under 64 KiB.
pub const MAX_PAYLOAD: u16 = 6_400;
/// quinn's own default bound (Ethernet), used when the MTU cannot be read.
pub const ETHERNET_PAYLOAD: u16 = 1_452;
/// QUIC's minimum.
const MIN_PAYLOAD: u16 = 1_200;

const _: () = assert!(MAX_PAYLOAD as u32 * GSO_SEGMENTS < 64 * 1024);

/// The largest UDP payload worth probing for from `ip`.
pub fn max_payload_for(ip: IpAddr) -> u16 {
    match interface_mtu(ip) {
        Some(mtu) => payload_for_mtu(mtu),
        None => ETHERNET_PAYLOAD,
    }
}

/// The bound for an interface MTU. Pure.
pub fn payload_for_mtu(mtu: u32) -> u16 {
    let payload = mtu.saturating_sub(HEADERS).min(u32::from(MAX_PAYLOAD));
    (payload as u16).max(MIN_PAYLOAD)
}

/// The MTU of the interface holding `ip` (for an unspecified address: the smallest of
/// the interfaces that carry one, loopback aside).
fn interface_mtu(ip: IpAddr) -> Option<u32> {
    let ifaces = if_addrs::get_if_addrs().ok()?;
    let mtu = |name: &str| -> Option<u32> {
        std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    if ip.is_unspecified() {
        return ifaces
            .iter()
            .filter(|i| !i.is_loopback())
            .filter_map(|i| mtu(&i.name))
            .min();
    }
    if ip.is_loopback() {
        if let Some(lo) = ifaces.iter().find(|i| i.is_loopback()) {
            return mtu(&lo.name);
        }
    }
    ifaces
        .iter()
        .find(|i| i.ip() == ip)
        .and_then(|i| mtu(&i.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_follow_the_mtu_within_the_gso_cap() {
        assert_eq!(payload_for_mtu(1500), 1452);
        assert_eq!(payload_for_mtu(9000), MAX_PAYLOAD);
        assert_eq!(payload_for_mtu(65536), MAX_PAYLOAD);
        assert_eq!(payload_for_mtu(576), 1200);
        assert_eq!(payload_for_mtu(0), 1200);
    }

    #[test]
    fn loopback_allows_big_datagrams() {
        // Every Linux loopback has an MTU of at least 16 KiB (65 536 by default).
        assert_eq!(
            max_payload_for("127.0.0.1".parse().expect("ip")),
            MAX_PAYLOAD
        );
    }
}

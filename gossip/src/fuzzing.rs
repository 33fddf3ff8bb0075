//! Entry points shared by the cargo-fuzz target and the corpus regression test.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use weft_ca::{CertificateAuthority, ClusterName, TrustRoot};

use crate::record::{verify_crl, verify_node_record};
use crate::seal::{GossipKey, Keyring, Sealer};

/// The fixed key fuzz inputs are sealed with (all 0x42).
pub fn fuzz_keyring() -> Keyring {
    Keyring::single(GossipKey::from_bytes(&[0x42; 32]).unwrap_or_else(|_| unreachable!("32 bytes")))
}

fn fixtures() -> &'static (Mutex<Sealer>, Option<TrustRoot>) {
    static F: OnceLock<(Mutex<Sealer>, Option<TrustRoot>)> = OnceLock::new();
    F.get_or_init(|| {
        let sealer = Sealer::new(&fuzz_keyring()).unwrap_or_else(|_| unreachable!("valid keyring"));
        let root = ClusterName::new("weft").ok().and_then(|c| {
            let (ca, _) = CertificateAuthority::create(
                c.clone(),
                SystemTime::now(),
                Duration::from_secs(3600),
            )
            .ok()?;
            TrustRoot::new(c, ca.cert_der().to_vec()).ok()
        });
        (Mutex::new(sealer), root)
    })
}

/// Feeds `data` to every gossip-side parser; must never panic.
pub fn datagram(data: &[u8]) {
    let (sealer, root) = fixtures();
    let mut sealer = sealer.lock().unwrap_or_else(|e| e.into_inner());
    // Accept any timestamp: open at the datagram's own claimed time.
    let claimed = data
        .get(5..13)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    let _ = sealer.open(data, claimed);
    if let (Ok(text), Some(root)) = (std::str::from_utf8(data), root) {
        let _ = verify_node_record(text, "vm-1", root, SystemTime::now());
        let _ = verify_crl(text, &root.ca_der());
    }
}

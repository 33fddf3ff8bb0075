//! Fuzzes what arrives on the gossip port: opening a sealed datagram, and verifying a
//! signed node record or revocation list taken from gossip state.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_gossip::fuzzing::datagram(data);
});

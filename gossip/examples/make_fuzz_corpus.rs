//! Writes seed inputs for the gossip fuzz corpus: a datagram sealed with the fuzz key,
//! and edge cases. `cargo run -p weft-gossip --example make_fuzz_corpus`

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/gossip_datagram");
    let sealer = weft_gossip::Sealer::new(&weft_gossip::fuzzing::fuzz_keyring()).expect("ring");
    let sealed = sealer
        .seal(b"\0\x01\0\x01chitchat bytes", 1_700_000_000_000)
        .expect("seal");
    std::fs::write(format!("{dir}/sealed"), sealed).expect("write");
    let frag = sealer
        .seal(b"\0\x02\0\x02first half", 1_700_000_000_000)
        .expect("seal");
    std::fs::write(format!("{dir}/fragment"), frag).expect("write");
    std::fs::write(format!("{dir}/record"), "eyJuYW1lIjoidm0tMSJ9.AAAA").expect("write");
    std::fs::write(format!("{dir}/short"), [1u8, 0, 0]).expect("write");
}

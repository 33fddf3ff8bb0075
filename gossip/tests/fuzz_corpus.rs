//! Runs the committed cargo-fuzz corpus of the gossip datagram parsers as a regression test.

#[test]
fn gossip_datagram_corpus() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/gossip_datagram");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus dir") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        weft_gossip::fuzzing::datagram(&data);
        n += 1;
    }
    assert!(n >= 3, "corpus has only {n} files");
}

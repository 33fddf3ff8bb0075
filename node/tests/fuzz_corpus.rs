//! Runs the committed cargo-fuzz corpus of the join request decoder as a regression test.

use weft_node::rpc::{decode, CtlRequest, JoinRequest, MAX_REQUEST};

#[test]
fn join_request_corpus() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/join_request");
    let mut parsed = 0;
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus dir") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        if JoinRequest::parse(&data).is_ok() {
            parsed += 1;
        }
        let _ = decode::<CtlRequest>(&data, MAX_REQUEST);
        n += 1;
    }
    assert!(n >= 3 && parsed >= 1, "corpus: {n} files, {parsed} valid");
}

#[test]
fn stream_header_corpus() {
    use weft_node::proxy::framing::FramingScanner;
    use weft_node::proxy::header::StreamHeader;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/stream_header");
    let mut decoded = 0;
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus dir") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        if let Ok(h) = StreamHeader::decode(&data) {
            assert_eq!(h.encode(), data);
            decoded += 1;
        }
        let mut out = std::collections::VecDeque::new();
        let _ = FramingScanner::default().feed(&data, &mut out);
        n += 1;
    }
    assert!(
        n >= 3 && decoded >= 1,
        "corpus: {n} files, {decoded} valid headers"
    );
}

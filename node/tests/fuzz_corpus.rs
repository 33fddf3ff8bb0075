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

#[test]
fn cluster_config_corpus() {
    use weft_node::cluster_config::{validate, Kind};
    use weft_node::policy::normalize_path;
    let kinds = [
        Kind::Route,
        Kind::Policy,
        Kind::Resilience,
        Kind::Fault,
        Kind::Ratelimit,
    ];
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/cluster_config");
    let (mut n, mut valid, mut paths) = (0, 0, 0);
    for entry in std::fs::read_dir(dir).expect("corpus dir") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        n += 1;
        let Some((first, rest)) = data.split_first() else {
            continue;
        };
        let kind = kinds[usize::from(*first) % kinds.len()];
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(rest) {
            if validate(kind, "fuzz", &value).is_ok() {
                valid += 1;
            }
        }
        if let Ok(Ok(p)) = std::str::from_utf8(rest).map(normalize_path) {
            assert_eq!(normalize_path(&p).as_deref(), Ok(p.as_str()));
            paths += 1;
        }
    }
    assert!(
        n >= 5 && valid >= 1 && paths >= 1,
        "corpus: {n} files, {valid} valid values, {paths} paths"
    );
}

#[test]
fn dns_query_corpus() {
    use weft_node::names::dns::{answer, UDP_MAX};
    let zone = |name: &str| (name == "reviews").then_some(std::net::Ipv4Addr::new(127, 240, 0, 7));
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/dns_query");
    let (mut n, mut answered) = (0, 0);
    for entry in std::fs::read_dir(dir).expect("corpus dir") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        n += 1;
        if let Some(out) = answer(&data, &zone, true) {
            assert!(out.len() <= UDP_MAX);
            answered += 1;
        }
    }
    assert!(
        n >= 8 && answered >= 4,
        "corpus: {n} files, {answered} answered"
    );
}

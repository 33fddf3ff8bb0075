//! Fuzzes the data-plane stream header decoder (bytes from a peer node) and the HTTP/1
//! framing scanner (bytes from a local app): never panic; whatever decodes re-encodes to
//! the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_node::proxy::framing::FramingScanner;
use weft_node::proxy::header::StreamHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = StreamHeader::decode(data) {
        assert_eq!(h.encode(), data);
    }
    let mut out = std::collections::VecDeque::new();
    let _ = FramingScanner::default().feed(data, &mut out);
});

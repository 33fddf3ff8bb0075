//! Fuzzes the `.weft` DNS server's answer to bytes from any local process: never panic,
//! never answer more than a UDP answer may carry, and whatever is answered parses as DNS.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_node::names::dns::{answer, UDP_MAX};

fn zone(name: &str) -> Option<std::net::Ipv4Addr> {
    (name == "reviews").then_some(std::net::Ipv4Addr::new(127, 240, 0, 7))
}

fuzz_target!(|data: &[u8]| {
    if let Some(out) = answer(data, &zone, true) {
        assert!(out.len() <= UDP_MAX);
        assert!(hickory_proto::op::Message::from_vec(&out).is_ok());
    }
    let _ = answer(data, &zone, false);
});

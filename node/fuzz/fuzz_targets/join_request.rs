//! Fuzzes the join request decoder (bytes from an unauthenticated peer) and the control
//! request decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_node::rpc::{decode, CtlRequest, JoinRequest, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    let _ = JoinRequest::parse(data);
    let _ = decode::<CtlRequest>(data, MAX_REQUEST);
});

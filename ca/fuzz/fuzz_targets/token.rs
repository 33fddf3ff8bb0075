//! Fuzzes the join-token parser: arbitrary text must never panic, and whatever parses
//! must print back to a token that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_ca::JoinToken;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(token) = text.parse::<JoinToken>() {
            let again: JoinToken = token.to_string().parse().expect("printed token parses");
            assert_eq!(again, token);
        }
    }
});

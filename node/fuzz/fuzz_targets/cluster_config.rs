//! Fuzzes what an admin or a peer hands the cluster config: the first byte picks the kind,
//! the rest is the JSON value (validated as `weft config set` does) and, as text, a request
//! path for the policy normaliser. Never panic; a normalised path is canonical (normalising
//! it again changes nothing) and has no `.`, `..` or empty segments (but a trailing slash).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_node::policy::normalize_path;
use weft_node::cluster_config::{validate, Kind};

const KINDS: [Kind; 5] = [
    Kind::Route,
    Kind::Policy,
    Kind::Resilience,
    Kind::Fault,
    Kind::Ratelimit,
];

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(*first) % KINDS.len()];
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(rest) {
        let _ = validate(kind, "fuzz", &value);
        let _ = validate(kind, "default", &value);
    }
    if let Ok(text) = std::str::from_utf8(rest) {
        if let Ok(p) = normalize_path(text) {
            assert!(p.starts_with('/'), "{p:?}");
            // A trailing slash is kept (it is meaningful); no other empty segment.
            let inner = p.strip_suffix('/').unwrap_or(&p);
            assert!(
                !inner
                    .split('/')
                    .skip(1)
                    .any(|s| s == "." || s == ".." || s.is_empty()),
                "{text:?} → {p:?}"
            );
            assert_eq!(normalize_path(&p).as_deref(), Ok(p.as_str()), "{text:?}");
        }
    }
});

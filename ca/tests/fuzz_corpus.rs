//! Runs the committed cargo-fuzz corpus of the token parser as a regression test.

use weft_ca::JoinToken;

#[test]
fn token_corpus() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/token");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus dir") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        if let Ok(text) = std::str::from_utf8(&data) {
            if let Ok(token) = text.parse::<JoinToken>() {
                assert_eq!(
                    token.to_string().parse::<JoinToken>().expect("reparses"),
                    token
                );
            }
        }
        n += 1;
    }
    assert!(n >= 3, "corpus has only {n} files");
}

//! The Debian package under a real systemd: the .deb (built from the test binary by
//! `node/dist/package-deb.sh`) installed with dpkg into four Debian containers booted with
//! systemd-nspawn, joined by a bridge in namespaces the script creates. Checks that the
//! package installs without starting anything, the agent runs as the `weft` user, joins
//! with a token passed as a systemd credential, `systemctl start` turns active only after
//! READY, reload re-reads the config and fails on a bad one, SIGKILL is restarted by
//! systemd and rejoins without a token, stop leaves gracefully, and logs go to the
//! journal. Needs root and `tests/install-deps.sh`; the Debian root is cached in
//! /var/cache/weft-test (about a minute the first time, ~20 s after).

use std::process::Command;

#[test]
fn unit_file_under_real_systemd() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/run.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("WEFT_BIN", weft_tests::weft_bin())
        .output()
        .expect("run tests/systemd/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "systemd unit test failed (needs root and tests/install-deps.sh):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.matches("PASS").count() >= 8,
        "too few checks ran:\n{stdout}"
    );
}

//! The `weft` binary's command line: config errors name the key and the file, and the
//! process exits non-zero with one line on stderr. (Also makes `cargo test --workspace`
//! build the binary that the multi-agent tests in `tests/` run.)

use std::process::Command;

fn weft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft"))
}

fn run_agent_with_config(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("weft.toml");
    std::fs::write(&path, text).expect("write");
    let out = weft()
        .args(["agent", "--config"])
        .arg(&path)
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_config_key_is_refused_naming_key_and_file() {
    let (code, stderr) = run_agent_with_config("name = \"vm-1\"\nzoen = \"eu\"\n");
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("zoen") && stderr.contains("weft.toml"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    for (text, key) in [
        ("name = \"Bad_Name\"\n", "name"),
        ("leaf_ttl = \"1s\"\n", "leaf_ttl"),
        ("gossip_port = 70000\n", "gossip_port"),
        ("[[service]]\nname = \"x\"\nport = 1\nbogus = 1\n", "bogus"),
    ] {
        let (code, stderr) = run_agent_with_config(text);
        assert_ne!(code, Some(0), "{text}");
        assert!(stderr.contains(key), "{text}: {stderr}");
    }
}

#[test]
fn no_identity_and_no_token_says_how_to_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = weft()
        .args([
            "agent",
            "--name",
            "vm-9",
            "--bind",
            "127.0.0.1",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--bootstrap") && stderr.contains("--token"),
        "{stderr}"
    );
}

#[test]
fn agent_help_documents_every_contract_flag() {
    let out = weft().args(["agent", "--help"]).output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--name",
        "--cluster",
        "--data-dir",
        "--bind",
        "--advertise",
        "--gossip-port",
        "--quic-port",
        "--api",
        "--proxy",
        "--join",
        "--token",
        "--bootstrap",
        "--dev",
        "--zone",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing from agent --help");
    }
}

#[test]
fn client_without_agent_fails_with_one_line() {
    let out = weft()
        .args(["members", "--api", "127.0.0.1:1"])
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the agent"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1);
}

//! Cluster config with real agents: replication (late joiners, restarts, the writer
//! leaving, concurrent writes), canary splits and header routes, and policies.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use weft_tests::backends::{http_raw, Backend};
use weft_tests::{eventually, eventually_http, Cluster};

const CONVERGE: Duration = Duration::from_secs(15);

fn entry(c: &Cluster, node: &str, kind: &str, name: &str) -> Option<serde_json::Value> {
    let out = c.agent(node).cli(&["config", "get", kind, name, "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn wait_entry(
    c: &Cluster,
    nodes: &[&str],
    kind: &str,
    name: &str,
    within: Duration,
) -> anyhow::Result<Vec<serde_json::Value>> {
    nodes
        .iter()
        .map(|n| {
            eventually(&format!("{kind} {name} on {n}"), within, || {
                Ok(entry(c, n, kind, name))
            })
        })
        .collect()
}

#[test]
fn config_replicates_survives_restarts_and_reaches_late_joiners() -> anyhow::Result<()> {
    let mut c = Cluster::new("config_replicates_survives_restarts_and_reaches_late_joiners");
    c.formed(3)?;

    // Written on vm-2 (not the CA), applied on the others within 3 s.
    let t = Instant::now();
    c.cli_ok(
        "vm-2",
        &[
            "route",
            "set",
            "--force",
            "reviews",
            "--split",
            "v1=90,v2=10",
        ],
    )?;
    let seen = wait_entry(
        &c,
        &["vm-1", "vm-3"],
        "route",
        "reviews",
        Duration::from_secs(3),
    )?;
    println!("route replicated to vm-1 and vm-3 in {:?}", t.elapsed());
    // It rode the gossip: the others applied vm-2's gossiped entry (verified as a pulled
    // one would be) without pulling.
    for n in ["vm-1", "vm-3"] {
        let log = c.agent(n).log_text();
        assert!(
            log.contains("cluster config applied from gossip"),
            "{n} did not apply the write from gossip:\n{log}"
        );
        assert!(!log.contains("cluster config pulled"), "{n} pulled:\n{log}");
    }
    assert!(seen
        .iter()
        .all(|e| e["value"]["rules"][0]["to"][1]["version"] == "v2"));

    // Invalid config is refused at the API with the field named, and nothing changes.
    let out = c
        .agent("vm-1")
        .cli(&["route", "set", "--force", "reviews", "--split", "v1=0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rules.to.weight"));

    // Every node restarts: the config is still there.
    for n in ["vm-1", "vm-2", "vm-3"] {
        c.agent_mut(n).kill();
    }
    for n in ["vm-1", "vm-2", "vm-3"] {
        c.spawn(n, &[]);
    }
    for n in ["vm-1", "vm-2", "vm-3"] {
        c.wait_ready(n)?;
    }
    wait_entry(&c, &["vm-1", "vm-2", "vm-3"], "route", "reviews", CONVERGE)?;

    // A node that joins later receives it; so does a delete (tombstone).
    c.join("vm-4", "vm-1", &[])?;
    wait_entry(&c, &["vm-4"], "route", "reviews", CONVERGE)?;
    c.cli_ok(
        "vm-3",
        &["policy", "allow", "--force", "frontend", "reviews"],
    )?;
    c.cli_ok("vm-3", &["config", "delete", "route", "reviews"])?;
    for n in ["vm-1", "vm-2", "vm-4"] {
        eventually(&format!("delete on {n}"), CONVERGE, || {
            Ok(entry(&c, n, "route", "reviews").is_none().then_some(()))
        })?;
    }

    // The writer (and the CA node) leaves for good: the others keep everything.
    c.agent("vm-1").signal("TERM");
    assert_eq!(
        c.agent_mut("vm-1").wait_exit(Duration::from_secs(15))?,
        Some(0)
    );
    wait_entry(
        &c,
        &["vm-2", "vm-4"],
        "policy",
        "allow.frontend.reviews",
        CONVERGE,
    )?;
    Ok(())
}

#[test]
fn concurrent_writes_converge_to_one_winner() -> anyhow::Result<()> {
    let mut c = Cluster::new("concurrent_writes_converge_to_one_winner");
    c.formed(3)?;
    for round in 0..3 {
        let (a, b) = (
            format!("v1={},v2=1", 10 + round),
            format!("v1=1,v2={}", 10 + round),
        );
        std::thread::scope(|s| {
            let h1 = s.spawn(|| {
                c.agent("vm-1")
                    .cli(&["route", "set", "--force", "reviews", "--split", &a])
            });
            let h2 = s.spawn(|| {
                c.agent("vm-2")
                    .cli(&["route", "set", "--force", "reviews", "--split", &b])
            });
            let _ = (h1.join(), h2.join());
        });
        eventually("all three agree", CONVERGE, || {
            let all: Vec<_> = ["vm-1", "vm-2", "vm-3"]
                .iter()
                .map(|n| entry(&c, n, "route", "reviews"))
                .collect();
            let same = all.iter().all(|e| e.is_some() && *e == all[0]);
            Ok(same.then_some(()))
        })?;
    }
    Ok(())
}

#[test]
fn canary_split_and_header_route() -> anyhow::Result<()> {
    let mut c = Cluster::new("canary_split_and_header_route");
    c.start_nodes(3, &[])?;
    let v1 = Backend::http("v1");
    let v2 = Backend::http("v2");
    for (node, be, version) in [("vm-2", &v1, "v1"), ("vm-3", &v2, "v2")] {
        c.register_http_with(node, "reviews", be.port(), &["--version", version])?;
    }
    let up = c.upstream_for("vm-1", "frontend", "reviews", 19001)?;
    c.cli_ok(
        "vm-1",
        &[
            "route",
            "set",
            "--force",
            "reviews",
            "--match",
            "header:x-user=beta",
            "--to",
            "v2",
            "--split",
            "v1=90,v2=10",
        ],
    )?;
    eventually("both versions routable", CONVERGE, || {
        let out = c.agent("vm-1").cli(&["services", "--json"]);
        Ok(String::from_utf8_lossy(&out.stdout)
            .matches("\"passing\"")
            .count()
            .ge(&3)
            .then_some(()))
    })?;
    eventually_http("upstream answers", CONVERGE, &up, "reviews", "/", Some(200))?;

    let (b1, b2) = (v1.count(), v2.count());
    let n = 2000;
    let mut s = TcpStream::connect(&up)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    for i in 0..n {
        // One keep-alive connection; every request is routed on its own.
        s.write_all(format!("GET /r{i} HTTP/1.1\r\nHost: reviews\r\n\r\n").as_bytes())?;
        read_response(&mut s)?;
    }
    let (d1, d2) = (v1.count() - b1, v2.count() - b2);
    let share = d2 as f64 * 100.0 / n as f64;
    println!("split 90/10 over {n} requests: v1={d1} v2={d2} ({share:.1}% to v2)");
    assert_eq!(d1 + d2, n);
    assert!(
        (7.0..=13.0).contains(&share),
        "v2 share {share:.1}% is outside 10 ± 3"
    );

    let before = v2.count();
    for _ in 0..50 {
        let (status, body) = http_raw(
            &up,
            "GET /beta HTTP/1.1\r\nHost: reviews\r\nx-user: beta\r\nConnection: close\r\n\r\n",
        )?;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("hello from v2"), "{body}");
    }
    assert_eq!(v2.count() - before, 50);

    // Sticky A/B by cookie: each user keeps one version, users spread over both.
    c.cli_ok(
        "vm-2",
        &[
            "route",
            "set",
            "--force",
            "reviews",
            "--split",
            "v1=50,v2=50",
            "--sticky-cookie",
            "session",
        ],
    )?;
    eventually("sticky route on vm-1", CONVERGE, || {
        Ok(entry(&c, "vm-1", "route", "reviews")
            .filter(|e| e["value"]["sticky"]["cookie"] == "session"))
    })?;
    let mut versions = std::collections::HashSet::new();
    for user in 0..20 {
        let req = format!("GET /s HTTP/1.1\r\nHost: reviews\r\nCookie: a=1; session=user-{user}\r\nConnection: close\r\n\r\n");
        let first = http_raw(&up, &req)?.1.contains("hello from v2");
        for _ in 0..4 {
            assert_eq!(
                http_raw(&up, &req)?.1.contains("hello from v2"),
                first,
                "user {user} switched versions"
            );
        }
        versions.insert(first);
    }
    assert_eq!(versions.len(), 2, "20 users all landed on one version");

    // Every version of the entry is remembered, writer and time included.
    // (vm-1 wrote the first version and merged vm-2's; a node only remembers versions it saw.)
    let history = c.cli_ok("vm-1", &["config", "history", "route", "reviews", "--json"])?;
    let h: Vec<serde_json::Value> = serde_json::from_str(&history)?;
    assert!(h.len() >= 2, "{history}");
    assert_eq!(
        h.last().map(|e| e["version"]["node"].clone()),
        Some("vm-2".into())
    );
    let age = c.agent("vm-3").metric("weft_config_digest_age_seconds")?;
    assert!(age < 10.0, "digest age {age}");
    Ok(())
}

fn read_response(s: &mut TcpStream) -> anyhow::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    anyhow::ensure!(text.starts_with("http/1.1 200"), "{text}");
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(())
}

#[test]
fn policies_deny_allow_dry_run_and_resist_path_tricks() -> anyhow::Result<()> {
    let mut c = Cluster::new("policies_deny_allow_dry_run_and_resist_path_tricks");
    c.start_nodes(2, &[])?;
    let hello = Backend::http("hello");
    let echo = Backend::echo();
    c.register_http("vm-2", "hello", hello.port())?;
    c.register(
        "vm-2",
        &["--name", "echo", "--port", &echo.port().to_string()],
    )?;
    let ip = c.agent("vm-1").ip;
    let (up, tcp) = (format!("{ip}:19001"), format!("{ip}:19002"));
    c.register_upstreams("vm-1", "client", &[("hello", &up), ("echo", &tcp)])?;
    let get = |path: &str| {
        http_raw(
            &up,
            &format!("GET {path} HTTP/1.1\r\nHost: hello\r\nConnection: close\r\n\r\n"),
        )
    };
    eventually("hello reachable", CONVERGE, || {
        Ok(get("/").ok().filter(|r| r.0 == 200))
    })?;
    let tcp_works = || -> bool {
        let Ok(mut s) = TcpStream::connect(&tcp) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"x");
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got == b"x"
    };
    assert!(tcp_works());

    // Default deny: HTTP gets 403 naming the rule, TCP is closed.
    c.cli_ok("vm-1", &["policy", "default", "deny"])?;
    let (_, body) = eventually("deny applied", CONVERGE, || {
        Ok(get("/").ok().filter(|r| r.0 == 403))
    })?;
    assert!(body.contains("default"), "{body}");
    eventually("TCP denied", CONVERGE, || Ok((!tcp_works()).then_some(())))?;

    // Allow client → hello (and echo): both pass again.
    c.cli_ok("vm-1", &["policy", "allow", "--force", "client", "hello"])?;
    c.cli_ok("vm-1", &["policy", "allow", "--force", "client", "echo"])?;
    eventually("allow applied", CONVERGE, || {
        Ok(get("/").ok().filter(|r| r.0 == 200))
    })?;
    eventually("TCP allowed", CONVERGE, || Ok(tcp_works().then_some(())))?;

    // A deny on /admin cannot be dodged by path tricks.
    c.cli_ok(
        "vm-1",
        &[
            "policy", "deny", "--force", "client", "hello", "--path", "/admin",
        ],
    )?;
    eventually("admin denied", CONVERGE, || {
        Ok(get("/admin").ok().filter(|r| r.0 == 403))
    })?;
    let before = hello.count();
    for trick in [
        "/a/../admin",
        "//admin",
        "/%2Fadmin",
        "/%2fadmin/x",
        "/./admin",
    ] {
        let (status, body) = get(trick)?;
        assert_eq!(status, 403, "{trick}: {body}");
    }
    // The same deny holds for HTTP/2 (h2c with prior knowledge).
    let rt = tokio::runtime::Runtime::new()?;
    let (status, body) = rt.block_on(weft_tests::backends::h2c_request(&up, "hello", "/admin"))?;
    assert_eq!(status, 403, "h2c /admin: {body}");
    let (status, _) = get("/../../etc/passwd")?;
    assert_eq!(status, 400);
    assert_eq!(hello.count(), before, "a dodge reached the backend");
    assert_eq!(
        get("/administrator")?.0,
        200,
        "prefixes match whole segments"
    );

    // A raw tunnel cannot dodge a path rule: CONNECT through the HTTP proxy to the HTTP
    // service works while no rule looks at paths for its source, and is refused once one
    // does (`deny '*' hello --path /admin`).
    c.cli_ok("vm-1", &["policy", "allow", "--force", "*", "hello"])?;
    let proxy = c.agent("vm-1").proxy();
    let tunnel_get = |path: &str| -> anyhow::Result<String> {
        let mut s = TcpStream::connect(&proxy)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"CONNECT hello:80 HTTP/1.1\r\nHost: hello:80\r\n\r\n")?;
        let mut head = [0u8; 512];
        let n = s.read(&mut head)?;
        let head = String::from_utf8_lossy(&head[..n]).into_owned();
        if !head.starts_with("HTTP/1.1 200") {
            return Ok(head);
        }
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: hello\r\nConnection: close\r\n\r\n").as_bytes(),
        )?;
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        Ok(format!("{head}{}", String::from_utf8_lossy(&rest)))
    };
    eventually("a tunnel to hello works", CONVERGE, || {
        Ok(tunnel_get("/").ok().filter(|r| r.contains("hello from")))
    })?;
    c.cli_ok(
        "vm-1",
        &[
            "policy", "deny", "--force", "*", "hello", "--path", "/admin",
        ],
    )?;
    let before = hello.count();
    let refusal = eventually("the tunnel refused", CONVERGE, || {
        Ok(tunnel_get("/admin")
            .ok()
            .filter(|r| r.starts_with("HTTP/1.1 403")))
    })?;
    assert!(refusal.contains("path"), "{refusal}");
    assert_eq!(hello.count(), before, "the tunnel reached the backend");
    c.cli_ok("vm-1", &["config", "delete", "policy", "allow.any.hello"])?;

    // Dry run: the default deny is counted but not enforced.
    c.cli_ok(
        "vm-1",
        &["config", "delete", "policy", "allow.client.hello"],
    )?;
    c.cli_ok("vm-1", &["policy", "default", "deny", "--dry-run"])?;
    eventually("dry run applied", CONVERGE, || {
        Ok(get("/").ok().filter(|r| r.0 == 200))
    })?;
    let vm2 = c.agent("vm-2");
    eventually("dry-run denials counted", CONVERGE, || {
        let (status, _) = get("/")?;
        anyhow::ensure!(status == 200, "dry run must not block: {status}");
        Ok((vm2
            .metric("weft_policy_denied_total{mode=\"dry_run\"}")
            .unwrap_or(0.0)
            >= 1.0)
            .then_some(()))
    })?;
    assert!(vm2.metric("weft_policy_denied_total{mode=\"enforce\"}")? >= 1.0);
    let explain = c.cli_ok(
        "vm-2",
        &["policy", "explain", "client", "hello", "--path", "/admin/x"],
    )?;
    assert!(explain.contains("deny"), "{explain}");
    Ok(())
}

/// A late joiner receives thousands of entries (a pull answers in pages of 512 KiB, so
/// this spans many). `WEFT_LONG=1` writes 10 000, the most a node keeps.
#[test]
fn thousands_of_entries_reach_a_late_joiner() -> anyhow::Result<()> {
    let n: usize = if std::env::var_os("WEFT_LONG").is_some() {
        10_000
    } else {
        1_500
    };
    let mut c = Cluster::new("thousands_of_entries_reach_a_late_joiner");
    c.start_nodes(1, &[])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("entries.json");
    let entries: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "kind": "ratelimit",
                "name": format!("svc-{i:05}"),
                "value": {"rps": i + 1},
            })
        })
        .collect();
    std::fs::write(
        &file,
        serde_json::to_vec(&serde_json::json!({ "entry": entries }))?,
    )?;
    let path = file.to_string_lossy().into_owned();
    c.cli_ok("vm-1", &["config", "apply", "-f", &path, "--json"])?;
    c.join("vm-2", "vm-1", &[])?;
    let count = |node: &str| -> anyhow::Result<usize> {
        let body = weft_tests::http_get(&c.agent(node).api(), "/v1/config/ratelimit")?;
        Ok(serde_json::from_str::<Vec<serde_json::Value>>(&body)?.len())
    };
    assert_eq!(count("vm-1")?, n);
    eventually(
        &format!("{n} entries on vm-2"),
        Duration::from_secs(60),
        || Ok((count("vm-2")? == n).then_some(())),
    )?;
    Ok(())
}

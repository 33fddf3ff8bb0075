//! Services by name with real agents: the `.weft` DNS (queried with `dig`, a client nobody
//! here wrote) answers each service's and version's virtual IP, the same offset on every
//! node, NXDOMAIN for unknown names and REFUSED for other zones; the agent listens on the
//! virtual IP so a plain HTTP client reaches the service with no upstream entry (pinned
//! to a version for `v2.reviews.weft`); answers survive a restart; a flood of queries is
//! answered with bounded memory and garbage is dropped.

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use weft_tests::backends::{http_get_host, Backend};
use weft_tests::{eventually, Cluster};

/// `dig @ip -p 8600 NAME +short` (and the status line with `full`).
fn dig(server: &str, name: &str) -> anyhow::Result<(String, String)> {
    let out = Command::new("dig")
        .args([
            &format!("@{server}"),
            "-p",
            "8600",
            name,
            "A",
            "+tries=1",
            "+time=2",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .to_owned();
    let answer = text
        .lines()
        .skip_while(|l| !l.starts_with(";; ANSWER SECTION"))
        .nth(1)
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or("")
        .to_owned();
    Ok((status, answer))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))
}

#[test]
fn services_answer_by_name_on_their_virtual_ips() -> anyhow::Result<()> {
    let mut c = Cluster::new("services_answer_by_name_on_their_virtual_ips");
    // Several agents on one host: each its own range (the offsets are the same).
    c.bootstrap("vm-1", &["--vip-range", "127.232.0.0/16"])?;
    c.join("vm-2", "vm-1", &["--vip-range", "127.233.0.0/16"])?;
    c.join("vm-3", "vm-1", &["--vip-range", "127.234.0.0/16"])?;
    c.wait_all_see_all(&["vm-1", "vm-2", "vm-3"], Duration::from_secs(15))?;
    let v1 = Backend::http("v1");
    let v2 = Backend::http("v2");
    c.register_http_with("vm-2", "reviews", v1.port(), &["--version", "v1"])?;
    c.register_http_with("vm-3", "reviews", v2.port(), &["--version", "v2"])?;
    let vm1 = c.agent("vm-1").ip.to_string();
    let vm2 = c.agent("vm-2").ip.to_string();

    let (status, vip) = eventually("reviews.weft answers", Duration::from_secs(20), || {
        let (status, ip) = dig(&vm1, "reviews.weft")?;
        Ok((status == "NOERROR" && !ip.is_empty()).then_some((status, ip)))
    })?;
    println!("reviews.weft → {vip} ({status})");
    assert!(vip.starts_with("127.232."), "{vip}");
    let (_, v2ip) = eventually("v2.reviews.weft answers", Duration::from_secs(20), || {
        let r = dig(&vm1, "v2.reviews.weft")?;
        Ok((!r.1.is_empty()).then_some(r))
    })?;
    assert_ne!(vip, v2ip);
    // Another node, another range, the same offset.
    let (_, other) = eventually("vm-2 answers", Duration::from_secs(20), || {
        let r = dig(&vm2, "reviews.weft")?;
        Ok((!r.1.is_empty()).then_some(r))
    })?;
    assert!(other.starts_with("127.233."), "{other}");
    assert_eq!(
        vip.split('.').skip(2).collect::<Vec<_>>(),
        other.split('.').skip(2).collect::<Vec<_>>()
    );
    assert_eq!(dig(&vm1, "nope.weft")?.0, "NXDOMAIN");
    assert_eq!(dig(&vm1, "example.com")?.0, "REFUSED");

    // The virtual IP listens on the service's port: an app with no weft configuration.
    let port = v1.port();
    let up = format!("{vip}:{port}");
    let answered = eventually("reviews.weft reachable", Duration::from_secs(20), || {
        Ok(http_get_host(&up, "reviews.weft", "/")
            .ok()
            .filter(|r| r.0 == 200))
    })?;
    println!(
        "GET http://reviews.weft:{port}/ → {}",
        answered.1.lines().last().unwrap_or("")
    );
    // v2.reviews.weft is pinned to v2 (on v1's port as well as v2's: every port of the service).
    let pinned = format!("{v2ip}:{port}");
    eventually("v2.reviews.weft reachable", Duration::from_secs(20), || {
        Ok(http_get_host(&pinned, "reviews.weft", "/")
            .ok()
            .filter(|r| r.0 == 200))
    })?;
    for _ in 0..10 {
        let (status, body) = http_get_host(&pinned, "v2.reviews.weft", "/")?;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("hello from v2"), "{body}");
    }

    // Garbage is dropped; the server keeps answering.
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))?;
    sock.send_to(b"\x00\x01\x02 not dns at all", format!("{vm1}:8600"))?;
    let mut buf = [0u8; 512];
    assert!(sock.recv_from(&mut buf).is_err(), "garbage was answered");

    // A flood: 10 000 queries a second for 5 s, answered, memory bounded.
    let pid = c
        .agent("vm-1")
        .pid()
        .ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let before = rss_kib(pid)?;
    let query = {
        // A query for reviews.weft, id 0x4242, RD set.
        let mut q = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["reviews", "weft"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    };
    let receiver = sock.try_clone()?;
    receiver.set_read_timeout(Some(Duration::from_millis(500)))?;
    let counter = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut buf = [0u8; 512];
        while receiver.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(5) {
        // 110 queries every 10 ms (a little over 10 000 a second with the sleep's slack).
        for _ in 0..110 {
            sock.send_to(&query, format!("{vm1}:8600"))?;
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let answered = counter
        .join()
        .map_err(|_| anyhow::anyhow!("counter panicked"))?;
    let after = rss_kib(pid)?;
    let rate = sent as f64 / start.elapsed().as_secs_f64();
    println!(
        "flood: {sent} queries at {rate:.0}/s, {answered} answered; RSS {before} → {after} KiB"
    );
    assert!(
        answered as f64 >= sent as f64 * 0.9,
        "{answered} of {sent} answered"
    );
    assert!(
        after < before + 16 * 1024,
        "RSS grew {} KiB",
        after - before
    );

    // Answers survive a restart unchanged.
    c.agent_mut("vm-1").signal("TERM");
    c.agent_mut("vm-1").wait_exit(Duration::from_secs(15))?;
    c.spawn("vm-1", &["--vip-range", "127.232.0.0/16"]);
    c.wait_ready("vm-1")?;
    let again = eventually(
        "reviews.weft after a restart",
        Duration::from_secs(20),
        || {
            let r = dig(&vm1, "reviews.weft")?;
            Ok((!r.1.is_empty()).then_some(r.1))
        },
    )?;
    assert_eq!(again, vip);
    Ok(())
}

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
    let target = format!("{vm1}:8600");
    while start.elapsed() < Duration::from_secs(5) {
        // Paced at 10 000 a second: whatever the elapsed time calls for, then a nap.
        let due = (start.elapsed().as_secs_f64() * 10_000.0) as u64;
        while sent < due {
            sock.send_to(&query, &target)?;
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let sending = start.elapsed();
    let answered = counter
        .join()
        .map_err(|_| anyhow::anyhow!("counter panicked"))?;
    let after = rss_kib(pid)?;
    let rate = sent as f64 / sending.as_secs_f64();
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

/// `curl ARGS` run as `uid` (setpriv; None: as this process) inside network namespace
/// `netns` (None: here); the HTTP status, or 0.
fn curl_in(netns: Option<&str>, uid: Option<u32>, args: &[&str]) -> anyhow::Result<u16> {
    let mut argv: Vec<String> = Vec::new();
    if let Some(ns) = netns {
        argv.extend(["ip", "netns", "exec", ns].map(String::from));
    }
    if let Some(uid) = uid {
        argv.extend([
            "setpriv".into(),
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
        ]);
    }
    argv.extend(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ]
        .map(String::from),
    );
    argv.extend(args.iter().map(|a| a.to_string()));
    let out = Command::new(&argv[0]).args(&argv[1..]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0))
}

/// Waits until `node`'s catalog lists every service in `services`.
fn wait_known(c: &Cluster, node: &str, services: &[&str]) -> anyhow::Result<()> {
    eventually("services in the catalog", Duration::from_secs(20), || {
        let out = c.cli_ok(node, &["services", "--json"])?;
        Ok(services
            .iter()
            .all(|s| out.contains(&format!("\"service\": \"{s}\"")))
            .then_some(()))
    })
}

/// `curl URL` as `uid` here; the HTTP status, or 0.
fn curl_as(uid: Option<u32>, url: &str) -> anyhow::Result<u16> {
    curl_in(None, uid, &[url])
}

#[test]
fn two_services_on_one_host_each_act_as_themselves() -> anyhow::Result<()> {
    let mut c = Cluster::new("two_services_on_one_host_each_act_as_themselves");
    c.bootstrap("vm-1", &["--vip-range", "127.235.0.0/16"])?;
    c.join("vm-2", "vm-1", &["--vip-range", "127.236.0.0/16"])?;
    c.wait_all_see_all(&["vm-1", "vm-2"], Duration::from_secs(15))?;
    let be = Backend::http("reviews");
    c.register_http("vm-2", "reviews", be.port())?;
    // Two services on vm-1, each naming the user its processes run as.
    c.register(
        "vm-1",
        &["--name", "frontend", "--port", "1", "--user", "65534"],
    )?;
    c.register(
        "vm-1",
        &["--name", "batch", "--port", "2", "--user", "65533"],
    )?;
    wait_known(&c, "vm-1", &["reviews", "frontend", "batch"])?;
    c.cli_ok("vm-1", &["policy", "default", "deny"])?;
    c.cli_ok("vm-1", &["policy", "allow", "frontend", "reviews"])?;
    let vm1 = c.agent("vm-1").ip.to_string();
    let vip = eventually("reviews.weft answers", Duration::from_secs(20), || {
        let r = dig(&vm1, "reviews.weft")?;
        Ok((!r.1.is_empty()).then_some(r.1))
    })?;
    let url = format!("http://{vip}:{}/", be.port());
    // The policy is enforced by vm-2: wait until it is in force there.
    eventually("default deny in force", Duration::from_secs(20), || {
        Ok((curl_as(None, &url)? == 403).then_some(()))
    })?;
    let frontend = eventually(
        "frontend's process is let through",
        Duration::from_secs(20),
        || {
            let code = curl_as(Some(65534), &url)?;
            Ok((code == 200).then_some(code))
        },
    )?;
    let batch = curl_as(Some(65533), &url)?;
    let neither = curl_as(None, &url)?;
    println!("through reviews.weft: frontend's user {frontend}, batch's user {batch}, root (no service) {neither}");
    assert_eq!(batch, 403, "batch on the same host is not frontend");
    assert_eq!(neither, 403, "a process of no service is anonymous");
    // The same lookup on frontend's upstream listener and on the HTTP proxy: batch's
    // process does not become frontend by using frontend's listener.
    let up = format!("{vm1}:19002");
    c.register(
        "vm-1",
        &[
            "--name",
            "frontend",
            "--port",
            "1",
            "--user",
            "65534",
            "--upstream",
            &format!("reviews={up}"),
        ],
    )?;
    let up_url = format!("http://{up}/");
    eventually(
        "frontend's upstream listener",
        Duration::from_secs(20),
        || Ok((curl_as(Some(65534), &up_url)? == 200).then_some(())),
    )?;
    assert_eq!(
        curl_as(Some(65533), &up_url)?,
        403,
        "batch through frontend's listener"
    );
    assert_eq!(
        curl_as(None, &up_url)?,
        403,
        "root through frontend's listener"
    );
    let proxy = format!("http://{vm1}:15001");
    let via_proxy = |uid: Option<u32>| curl_in(None, uid, &["-x", &proxy, "http://reviews/"]);
    assert_eq!(
        via_proxy(Some(65534))?,
        200,
        "frontend through the HTTP proxy"
    );
    assert_eq!(via_proxy(Some(65533))?, 403, "batch through the HTTP proxy");
    // A service that names its systemd unit: a process in that unit's cgroup is it,
    // the same user outside the cgroup is not.
    let unit = format!("weft-test-{}-reports.service", std::process::id());
    let cgroup = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        std::path::PathBuf::from("/sys/fs/cgroup").join(&unit)
    } else {
        std::path::PathBuf::from("/sys/fs/cgroup/pids").join(&unit)
    };
    std::fs::create_dir_all(&cgroup)?;
    c.register(
        "vm-1",
        &["--name", "reports", "--port", "3", "--unit", &unit],
    )?;
    wait_known(&c, "vm-1", &["reports"])?;
    c.cli_ok("vm-1", &["policy", "allow", "reports", "reviews"])?;
    let in_unit = |url: &str| -> anyhow::Result<u16> {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 {url}",
            cgroup.display()
        );
        let out = Command::new("sh").args(["-c", &script]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0))
    };
    let reports = eventually(
        "the unit's process is reports",
        Duration::from_secs(20),
        || {
            let code = in_unit(&url)?;
            Ok((code == 200).then_some(code))
        },
    );
    let outside = curl_as(None, &url)?;
    let _ = std::fs::remove_dir(&cgroup);
    let reports = reports?;
    println!(
        "through reviews.weft: a process in {unit} {reports}, the same user outside it {outside}"
    );
    assert_eq!(outside, 403);
    let log = weft_tests::http_get(&c.agent("vm-1").api(), "/metrics")?;
    assert!(
        log.contains("source=\"reports\",destination=\"reviews\",code=\"200\""),
        "counted as reports"
    );
    assert!(
        log.contains("source=\"frontend\",destination=\"reviews\",code=\"200\""),
        "counted as frontend"
    );
    assert!(
        log.contains("source=\"batch\",destination=\"reviews\",code=\"403\""),
        "counted as batch"
    );
    Ok(())
}

/// `nft list table inet weft` inside `ns`: whether the table exists.
fn weft_table_in(ns: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", "inet", "weft"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn with_intercept_the_mesh_is_the_only_way_in() -> anyhow::Result<()> {
    let mut c = Cluster::new_lab("with_intercept_the_mesh_is_the_only_way_in")?;
    c.bootstrap("vm-1", &["--intercept"])?;
    c.join("vm-2", "vm-1", &["--intercept"])?;
    c.wait_all_see_all(&["vm-1", "vm-2"], Duration::from_secs(15))?;
    // An app on vm-2 bound to every address, as many are: reachable from other hosts.
    let backend = std::path::Path::new(env!("CARGO_BIN_EXE_fault_backend"));
    c.spawn_in("vm-2", backend, &["reviews", "8080", "0.0.0.0"])?;
    let vm2 = c.agent("vm-2").ip;
    let direct = std::net::SocketAddr::from((vm2, 8080));
    eventually(
        "the app answers directly before it is registered",
        Duration::from_secs(10),
        || {
            Ok(
                std::net::TcpStream::connect_timeout(&direct, Duration::from_secs(1))
                    .is_ok()
                    .then_some(()),
            )
        },
    )?;
    c.register_http("vm-2", "reviews", 8080)?;
    let ns2 = c.lab().netns(c.host("vm-2"));
    assert!(weft_table_in(&ns2), "vm-2 set its nftables table");
    // Through the mesh (vm-1's HTTP proxy): served.
    let proxy = c.agent("vm-1").proxy();
    let via_mesh = || {
        weft_tests::backends::http_raw(
            &proxy,
            "GET http://reviews/ HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n",
        )
    };
    let (status, body) = eventually("reviews through the mesh", Duration::from_secs(20), || {
        Ok(via_mesh().ok().filter(|r| r.0 == 200))
    })?;
    assert!(body.contains("hello from reviews"), "{body}");
    // Directly, from another host (this test's own leg of the lab): dropped.
    let t = Instant::now();
    let dropped = eventually(
        "direct connections dropped",
        Duration::from_secs(10),
        || {
            Ok(
                std::net::TcpStream::connect_timeout(&direct, Duration::from_secs(2))
                    .is_err()
                    .then_some(()),
            )
        },
    );
    println!(
        "direct connection to {direct}: {} after {:.1?}; through the mesh: {status}",
        if dropped.is_ok() {
            "dropped"
        } else {
            "ANSWERED"
        },
        t.elapsed()
    );
    dropped?;
    // Interception on vm-1: two services name their users; what their processes open
    // towards reviews' real address goes through the mesh as themselves.
    c.register(
        "vm-1",
        &["--name", "frontend", "--port", "1", "--user", "65534"],
    )?;
    c.register(
        "vm-1",
        &["--name", "batch", "--port", "2", "--user", "65533"],
    )?;
    wait_known(&c, "vm-1", &["reviews", "frontend", "batch"])?;
    c.cli_ok("vm-1", &["policy", "default", "deny"])?;
    c.cli_ok("vm-1", &["policy", "allow", "frontend", "reviews"])?;
    let ns1 = c.lab().netns(c.host("vm-1"));
    let url = format!("http://{direct}/");
    let curl_in_vm1 = |uid: u32| curl_in(Some(&ns1), Some(uid), &[&url]);
    let frontend = eventually(
        "frontend's process intercepted into the mesh",
        Duration::from_secs(20),
        || {
            let code = curl_in_vm1(65534)?;
            Ok((code == 200).then_some(code))
        },
    )?;
    let batch = eventually(
        "batch's process intercepted and refused",
        Duration::from_secs(20),
        || {
            let code = curl_in_vm1(65533)?;
            Ok((code == 403).then_some(code))
        },
    )?;
    let neither = curl_in_vm1(65532)?;
    println!("curl {url} on vm-1: frontend's user {frontend}, batch's user {batch}, a user of no service {neither} (not intercepted: dropped by vm-2)");
    assert_eq!(
        neither, 0,
        "a process of no service goes direct and is dropped"
    );
    let metrics = weft_tests::http_get(&c.agent("vm-1").api(), "/metrics")?;
    assert!(
        metrics.contains("source=\"frontend\",destination=\"reviews\",code=\"200\""),
        "counted as frontend"
    );

    // The agent stops: its table goes, and the host is as it was.
    c.agent_mut("vm-2").signal("TERM");
    c.agent_mut("vm-2").wait_exit(Duration::from_secs(15))?;
    assert!(!weft_table_in(&ns2), "the table is removed on stop");
    eventually(
        "direct connections work again",
        Duration::from_secs(10),
        || {
            Ok(
                std::net::TcpStream::connect_timeout(&direct, Duration::from_secs(1))
                    .is_ok()
                    .then_some(()),
            )
        },
    )?;
    Ok(())
}

//! Scenario 19 of the fault suite: floods against one agent — HTTP/2 rapid reset and
//! CONTINUATION floods from an app, QUIC handshakes without a certificate, API request
//! floods, and a metric-label explosion attempt. The agent's memory must stay bounded
//! (stated below), it must stay up, and ordinary traffic must keep flowing.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use weft_tests::backends::{http_get_host, Backend};
use weft_tests::{eventually, http_get, no_cert_data_config, trust_of, Cluster};

/// Bound on the agent's RSS growth over the whole test.
const RSS_GROWTH_MIB: f64 = 64.0;

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// GET / with :authority reviews (HPACK: static indexes and one literal).
const GET_HEADERS: &[u8] = &[
    0x82, 0x86, 0x84, 0x41, 0x07, b'r', b'e', b'v', b'i', b'e', b'w', b's',
];

/// Sends `frames` after the preface on a fresh connection; returns whether the server
/// closed the connection (EOF or reset) within 5 s and whether it sent a GOAWAY.
fn h2_flood(addr: &str, frames: &[u8]) -> anyhow::Result<(bool, bool, usize)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(PREFACE)?;
    s.write_all(&frame(0x4, 0, 0, &[]))?;
    let mut sent = 0;
    for chunk in frames.chunks(64 * 1024) {
        if s.write_all(chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
        if got.len() > 1 << 20 {
            break false;
        }
    };
    // Walk the frames the server sent, looking for GOAWAY (type 7).
    let (mut i, mut goaway) = (0, false);
    while i + 9 <= got.len() {
        let len =
            (usize::from(got[i]) << 16) | (usize::from(got[i + 1]) << 8) | usize::from(got[i + 2]);
        goaway |= got[i + 3] == 0x7;
        i += 9 + len;
    }
    Ok((closed, goaway, sent))
}

#[test]
fn floods_leave_the_agent_bounded_and_serving() -> anyhow::Result<()> {
    let mut c = Cluster::new("floods_leave_the_agent_bounded_and_serving");
    c.formed(2)?;
    let reviews = Backend::http("reviews");
    let up = c.reachable_http("vm-2", "reviews", reviews.port())?;
    let pid = c
        .agent("vm-1")
        .pid()
        .ok_or_else(|| anyhow::anyhow!("vm-1 not running"))?;
    let rss_before = rss_mib(pid);
    let probe = || -> usize {
        (0..20)
            .filter(|_| http_get_host(&up, "reviews", "/").is_ok_and(|r| r.0 == 200))
            .count()
    };
    let mut lines = Vec::new();

    // 1. HTTP/2 rapid reset: 20 000 HEADERS + RST_STREAM pairs.
    let hits = reviews.count();
    let mut frames = Vec::new();
    for i in 0..20_000u32 {
        let id = 2 * i + 1;
        frames.extend(frame(0x1, 0x5, id, GET_HEADERS));
        frames.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
    }
    let t = Instant::now();
    let (closed, goaway, sent) = h2_flood(&up, &frames)?;
    lines.push(format!(
        "rapid reset: {} of {} bytes sent in {:.2?}, GOAWAY {goaway}, closed {closed}, {} requests reached the backend",
        sent,
        frames.len(),
        t.elapsed(),
        reviews.count() - hits
    ));
    let rapid_ok = goaway || closed;

    // 2. CONTINUATION flood: one HEADERS without END_HEADERS, then 200 000 CONTINUATIONs.
    let mut frames = frame(0x1, 0x0, 1, &GET_HEADERS[..3]);
    let junk = [
        0x40, 0x03, b'x', b'-', b'a', 0x08, b'a', b'a', b'a', b'a', b'a', b'a', b'a', b'a',
    ];
    for _ in 0..200_000 {
        frames.extend(frame(0x9, 0x0, 1, &junk));
    }
    let t = Instant::now();
    let (closed, goaway, sent) = h2_flood(&up, &frames)?;
    lines.push(format!(
        "CONTINUATION: {} of {} bytes accepted in {:.2?} before the server stopped reading, GOAWAY {goaway}, closed {closed}",
        sent,
        frames.len(),
        t.elapsed()
    ));
    let continuation_ok = (goaway || closed) && sent < frames.len();

    // 3. QUIC handshakes without a client certificate, 32 at a time for 3 s.
    let rt = tokio::runtime::Runtime::new()?;
    let (trust, _) = trust_of(&c.agent("vm-1").data_dir)?;
    let config = no_cert_data_config(trust)?;
    let target = std::net::SocketAddr::from((c.agent("vm-1").ip, 7443));
    let (attempts, got_through) = rt.block_on(async {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut attempts = 0u32;
        let mut got_through = 0u32;
        while tokio::time::Instant::now() < deadline {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..32 {
                let connecting = endpoint.connect_with(config.clone(), target, "vm-1")?;
                set.spawn(async move {
                    let Ok(Ok(conn)) =
                        tokio::time::timeout(Duration::from_secs(2), connecting).await
                    else {
                        return false;
                    };
                    // The handshake may complete before the server checks; a stream must not.
                    let Ok((mut send, mut recv)) = conn.open_bi().await else {
                        return false;
                    };
                    let _ = send.write_all(b"x").await;
                    let r =
                        tokio::time::timeout(Duration::from_secs(1), recv.read_to_end(16)).await;
                    matches!(r, Ok(Ok(ref v)) if !v.is_empty())
                });
                attempts += 1;
            }
            while let Some(r) = set.join_next().await {
                if r.unwrap_or(false) {
                    got_through += 1;
                }
            }
        }
        endpoint.close(0u32.into(), b"");
        anyhow::Ok((attempts, got_through))
    })?;
    lines.push(format!("QUIC without a certificate: {attempts} handshakes in 3 s, {got_through} got a stream answered"));

    // 4. API flood: 16 clients for 3 s.
    let api = c.agent("vm-1").api();
    let t = Instant::now();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let api = api.clone();
            std::thread::spawn(move || {
                let mut n = 0u32;
                while t.elapsed() < Duration::from_secs(3) {
                    if http_get(&api, "/v1/members").is_ok() {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let api_requests: u32 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    lines.push(format!(
        "API flood: {api_requests} requests answered in 3 s by 16 clients"
    ));

    // 5. Metric-label explosion: 3000 requests for distinct unknown services.
    let proxy = format!("{}:15001", c.agent("vm-1").ip);
    for i in 0..3000 {
        let host = format!("svc-{i}");
        let _ = http_get_host(&proxy, &host, &format!("http://{host}/"));
    }
    let metrics = http_get(&api, "/metrics")?;
    let labels = metrics.lines().filter(|l| l.contains("svc-")).count();
    lines.push(format!(
        "label explosion: 3000 unknown services asked for; /metrics is {} KiB with {labels} lines naming them",
        metrics.len() / 1024
    ));

    let served = probe();
    let rss_after = rss_mib(pid);
    let alive = c
        .agent_mut("vm-1")
        .wait_exit(Duration::from_millis(200))
        .is_err();
    let ok = rapid_ok
        && continuation_ok
        && got_through == 0
        && labels < 100
        && served == 20
        && alive
        && rss_after - rss_before < RSS_GROWTH_MIB;
    println!(
        "FAULT | 19 floods | {} | {}; afterwards {served}/20 ordinary requests served, RSS {rss_before:.1} → {rss_after:.1} MiB (bound +{RSS_GROWTH_MIB} MiB)",
        if ok { "pass" } else { "FAIL" },
        lines.join("; ")
    );
    assert!(rapid_ok, "rapid reset not stopped: {lines:?}");
    assert!(continuation_ok, "CONTINUATION flood not stopped: {lines:?}");
    assert_eq!(
        got_through, 0,
        "streams answered without a client certificate"
    );
    assert!(
        labels < 100,
        "metric labels follow unknown service names: {labels}"
    );
    assert_eq!(served, 20, "ordinary traffic failed after the floods");
    assert!(alive, "the agent died");
    assert!(
        rss_after - rss_before < RSS_GROWTH_MIB,
        "RSS grew {rss_before} → {rss_after}"
    );
    c.allow_error("unknown service");
    Ok(())
}

/// Every listener bounded: while ordinary requests and certificate renewals go on,
/// vm-1 (the CA node) takes QUIC Initials from thousands of source addresses that never
/// answer (what spoofed packets look like to it), join connections that never speak,
/// idle TCP connections to its API and to an upstream listener, and a member that opens
/// streams and never reads. Nothing ordinary fails and its memory stays bounded.
#[test]
fn listener_floods_do_not_stop_traffic_or_renewals() -> anyhow::Result<()> {
    // The test itself holds ~2 000 sockets at once.
    rlimit::increase_nofile_limit(8192)?;
    let long = std::env::var_os("WEFT_FAULT_LONG").is_some();
    let initials: u32 = if long { 10_000 } else { 2_000 };
    let mut c = Cluster::new("listener_floods_do_not_stop_traffic_or_renewals");
    c.formed_with(2, &["--leaf-ttl", "20s"])?;
    let reviews = Backend::http("reviews");
    let up = c.reachable_http("vm-1", "reviews", reviews.port())?;
    let vm1 = c.agent("vm-1");
    let pid = vm1
        .pid()
        .ok_or_else(|| anyhow::anyhow!("vm-1 not running"))?;
    let rss_before = rss_mib(pid);
    let renewals_before = c.agent("vm-2").metric("weft_cert_renewals_total")?;
    let api = vm1.api();
    let target = std::net::SocketAddr::from((vm1.ip, 7443));

    // Ordinary traffic through the flood: an app request and an API read every 50 ms.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, up, api) = (stop.clone(), up.clone(), api.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http_get_host(&up, "reviews", "/") {
                    Ok((200, _)) => ok += 1,
                    other => failed.push(format!("app: {other:?}")),
                }
                match http_get(&api, "/v1/members") {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!("api: {e}")),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (ok, failed)
        })
    };

    // Idle TCP: 1000 to the API, 1000 to the upstream listener, held to the end.
    let mut idle = Vec::new();
    for addr in [&api, &up] {
        for _ in 0..1000 {
            if let Ok(s) = TcpStream::connect(addr) {
                idle.push(s);
            }
        }
    }

    let (trust, vm2_id) = trust_of(&c.agent("vm-2").data_dir)?;
    let rt = tokio::runtime::Runtime::new()?;
    let (joins_held, streams_opened) = rt.block_on(async {
        // Initials from many addresses that never answer a Retry nor finish a handshake.
        let join_config = weft_node::tls::join_client_config(trust.ca_sha256())?;
        let t = tokio::time::Instant::now();
        for i in 0..initials {
            // 127.250.0.0/14 holds no test's subnet (those are 127.100-249.*).
            let src = std::net::Ipv4Addr::new(
                127,
                250 + (i / 62_500) as u8,
                (i / 250 % 250) as u8,
                (i % 250 + 1) as u8,
            );
            let Ok(ep) = quinn::Endpoint::client(std::net::SocketAddr::from((src, 0))) else {
                continue;
            };
            let _ = ep.connect_with(join_config.clone(), target, "vm-1");
            tokio::task::yield_now().await;
            drop(ep);
            let due = Duration::from_secs(10).mul_f64(f64::from(i) / f64::from(initials));
            tokio::time::sleep_until(t + due).await;
        }
        // Join connections that complete the handshake and never speak.
        let ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let mut joins = Vec::new();
        for _ in 0..500 {
            if let Ok(Ok(conn)) = tokio::time::timeout(
                Duration::from_millis(300),
                ep.connect_with(join_config.clone(), target, "vm-1")?,
            )
            .await
            {
                joins.push(conn);
            }
        }
        // A member that opens streams and never reads their answers.
        let certs = weft_node::tls::CertStore::new(
            &vm2_id.key,
            &vm2_id.cert_der,
            &vm2_id.chain,
            &vm2_id.ca_der,
        )?;
        let data = weft_node::tls::data_client_config(
            &certs,
            trust.clone(),
            std::sync::Arc::new(std::sync::RwLock::new(
                weft_gossip::RevocationList::default(),
            )),
        )?;
        let conn = ep.connect_with(data, target, "vm-1")?.await?;
        let mut opened = 0u32;
        let mut streams = Vec::new();
        for _ in 0..2000 {
            match tokio::time::timeout(Duration::from_millis(200), conn.open_bi()).await {
                Ok(Ok((mut send, recv))) => {
                    let _ = send.write_all(&[0u8; 4096]).await;
                    streams.push((send, recv));
                    opened += 1;
                }
                _ => break,
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = joins.iter().filter(|j| j.close_reason().is_none()).count();
        drop(streams);
        conn.close(0u32.into(), b"");
        drop(joins);
        ep.close(0u32.into(), b"");
        anyhow::Ok((held, opened))
    })?;

    // Renewals went on: vm-2 (20 s certificates, renewed at half-life) renewed again.
    eventually(
        "a renewal during the floods",
        Duration::from_secs(25),
        || {
            Ok(
                (c.agent("vm-2").metric("weft_cert_renewals_total")? > renewals_before)
                    .then_some(()),
            )
        },
    )?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic
        .join()
        .map_err(|_| anyhow::anyhow!("traffic thread panicked"))?;
    let rss_after = rss_mib(pid);
    drop(idle);
    println!(
        "FAULT | 19b listener floods | {} | {initials} unanswered Initials from {initials} addresses in 10 s, {joins_held} silent join connections held of 500, 2000 idle TCP connections (API, upstream), {streams_opened} unread streams from one member; {ok} ordinary requests served, {} failed; a renewal went through; RSS {rss_before:.1} → {rss_after:.1} MiB (bound +{RSS_GROWTH_MIB} MiB)",
        if failed.is_empty() && rss_after - rss_before < RSS_GROWTH_MIB { "pass" } else { "FAIL" },
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "ordinary traffic failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 50, "too little ordinary traffic: {ok}");
    assert!(
        joins_held <= 32,
        "{joins_held} silent join connections held (budget 32)"
    );
    assert!(
        rss_after - rss_before < RSS_GROWTH_MIB,
        "RSS grew {rss_before} → {rss_after}"
    );
    Ok(())
}

/// 2 000 app clients that never finish their request headers (each trickles a byte every
/// few seconds, as slowloris does) are cut off once the header-read timer (30 s, README)
/// runs out, while ordinary requests through the same listener are served throughout.
#[test]
fn slow_clients_are_cut_off_while_traffic_is_served() -> anyhow::Result<()> {
    const SLOW: usize = 2_000;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
    rlimit::increase_nofile_limit(8192)?;
    let mut c = Cluster::new("slow_clients_are_cut_off_while_traffic_is_served");
    c.formed(2)?;
    let reviews = Backend::http("reviews");
    let up = c.reachable_http("vm-1", "reviews", reviews.port())?;
    let pid = c
        .agent("vm-1")
        .pid()
        .ok_or_else(|| anyhow::anyhow!("vm-1 not running"))?;
    let rss_before = rss_mib(pid);

    let mut slow = Vec::with_capacity(SLOW);
    let connecting = Instant::now();
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(&up)?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: reviews\r\nX-Slow: ")?;
        s.set_nonblocking(true)?;
        slow.push((s, Instant::now()));
    }
    let opened = Instant::now();
    let connect_time = opened - connecting;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, up) = (stop.clone(), up.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http_get_host(&up, "reviews", "/") {
                    Ok((200, _)) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (ok, failed)
        })
    };

    // Trickle one byte to every open client every 3 s; note when each is cut off.
    let mut cut_at: Vec<Option<Duration>> = vec![None; SLOW];
    let deadline = HEADER_TIMEOUT + Duration::from_secs(15);
    let mut early = 0;
    while opened.elapsed() < deadline && cut_at.iter().any(Option::is_none) {
        // Polled every 3 s: a cut is seen up to 3 s late, never early.
        for ((s, since), cut) in slow.iter_mut().zip(cut_at.iter_mut()) {
            if cut.is_some() {
                continue;
            }
            let mut buf = [0u8; 512];
            let gone = match s.read(&mut buf) {
                Ok(_) => true, // end of stream, or an answer to a head never finished
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => s.write(b"a").is_err(),
                Err(_) => true,
            };
            if gone {
                *cut = Some(since.elapsed());
                if since.elapsed() < HEADER_TIMEOUT - Duration::from_secs(1) {
                    early += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic
        .join()
        .map_err(|_| anyhow::anyhow!("traffic thread panicked"))?;
    let rss_after = rss_mib(pid);
    let still_open = cut_at.iter().filter(|c| c.is_none()).count();
    let last = cut_at.iter().flatten().max().copied().unwrap_or_default();
    println!(
        "FAULT | 19c slow clients | {} | {SLOW} clients trickling an unfinished request head (opened in {connect_time:.1?}): {} cut off (the last {last:.1?} after it opened, {early} before the 30 s timer), {still_open} still open after {deadline:?}; {ok} ordinary requests served meanwhile, {} failed; RSS {rss_before:.1} → {rss_after:.1} MiB",
        if still_open == 0 && failed.is_empty() && early == 0 { "pass" } else { "FAIL" },
        SLOW - still_open,
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "ordinary traffic failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "too little ordinary traffic: {ok}");
    assert_eq!(still_open, 0, "slow clients were never cut off");
    assert_eq!(
        early, 0,
        "slow clients were cut off before the header timer"
    );
    assert!(
        rss_after - rss_before < RSS_GROWTH_MIB,
        "RSS grew {rss_before} → {rss_after}"
    );
    Ok(())
}

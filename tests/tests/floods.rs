//! Scenario 19 of the fault suite: floods against one agent — HTTP/2 rapid reset and
//! CONTINUATION floods from an app, QUIC handshakes without a certificate, API request
//! floods, and a metric-label explosion attempt. The agent's memory must stay bounded
//! (stated below), it must stay up, and ordinary traffic must keep flowing.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use weft_tests::backends::{http_get_host, Backend};
use weft_tests::{http_get, no_cert_data_config, trust_of, Cluster};

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

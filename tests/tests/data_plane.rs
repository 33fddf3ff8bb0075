//! The data plane with real agents and real backends: upstream listeners, the HTTP proxy,
//! L4 with half-close, h2c, framing checks, metrics and the access log; failover between
//! instances when a check fails or a node dies.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use weft_tests::backends::{http_get_host, http_raw, Backend};
use weft_tests::{eventually, eventually_http, Cluster};

const CONVERGE: Duration = Duration::from_secs(15);

/// Waits until `observer` sees `count` instances of `service` with health `health`.
fn wait_instances(
    c: &Cluster,
    observer: &str,
    service: &str,
    health: &str,
    count: usize,
) -> anyhow::Result<()> {
    let agent = c.agent(observer);
    eventually(
        &format!("{count} {health} {service} on {observer}"),
        CONVERGE,
        || {
            let out = agent.cli(&["services", "--json"]);
            let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
            let n = v
                .iter()
                .filter(|s| s["service"] == service)
                .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
                .filter(|i| i["health"] == health)
                .count();
            Ok((n == count).then_some(()))
        },
    )
}

#[test]
fn apps_reach_services_on_other_nodes() -> anyhow::Result<()> {
    let mut c = Cluster::new("apps_reach_services_on_other_nodes");
    c.start_nodes(2, &[])?;
    let reviews = Backend::http("reviews-b");
    let echo = Backend::echo();
    let check = format!("http://127.0.0.1:{}/health", reviews.port());
    c.register_http_with("vm-2", "reviews", reviews.port(), &["--check-http", &check])?;
    let ep = echo.port().to_string();
    c.register(
        "vm-2",
        &["--name", "echo", "--port", &ep, "--protocol", "tcp"],
    )?;
    let ip1 = c.agent("vm-1").ip;
    let (up_http, up_tcp) = (format!("{ip1}:19001"), format!("{ip1}:19002"));
    c.register_upstreams(
        "vm-1",
        "frontend",
        &[("reviews", &up_http), ("echo", &up_tcp)],
    )?;
    wait_instances(&c, "vm-1", "reviews", "passing", 1)?;
    wait_instances(&c, "vm-1", "echo", "passing", 1)?;

    // Through the upstream listener (source = frontend).
    let (status, body) = eventually_http(
        "upstream answers",
        CONVERGE,
        &up_http,
        "reviews",
        "/a",
        None,
    )?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hello from reviews-b /a"), "{body}");
    assert!(body.to_ascii_lowercase().contains("x-backend: reviews-b"));

    // Through the HTTP proxy by name, absolute-form and Host header.
    let proxy = c.agent("vm-1").proxy();
    let (status, body) = http_get_host(&proxy, "reviews", "http://reviews/b")?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get_host(&proxy, "reviews:8080", "/c")?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("/c"));
    // Unknown service: 502 naming it.
    let (status, body) = http_get_host(&proxy, "nothere", "http://nothere/")?;
    assert_eq!(status, 502);
    assert!(body.contains("nothere"), "{body}");

    // Invalid framing is refused with 400 and never reaches the backend.
    let before = reviews.count();
    for dup in ["3", "4"] {
        let (status, _) = http_raw(
            &up_http,
            &format!("POST /smuggle HTTP/1.1\r\nHost: reviews\r\nContent-Length: 3\r\nContent-Length: {dup}\r\nConnection: close\r\n\r\nabcd"),
        )?;
        assert_eq!(status, 400, "duplicate Content-Length {dup}");
    }
    let (status, _) = http_raw(
        &up_http,
        "POST /smuggle HTTP/1.1\r\nHost: reviews\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    )?;
    assert_eq!(status, 400);
    let (status, _) = http_raw(
        &up_http,
        "POST /smuggle HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    )?;
    assert_eq!(status, 400);
    assert_eq!(
        reviews.count(),
        before,
        "a malformed request reached the backend"
    );

    // L4 through the upstream listener, with half-close carried both ways.
    let mut s = TcpStream::connect(&up_tcp)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"ping over quic")?;
    s.shutdown(Shutdown::Write)?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)?;
    assert_eq!(got, b"ping over quic");

    // CONNECT through the proxy is a TCP tunnel.
    let mut s = TcpStream::connect(&proxy)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"CONNECT echo:7 HTTP/1.1\r\nHost: echo:7\r\n\r\n")?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head)?;
    assert!(std::str::from_utf8(&head[..n])?.starts_with("HTTP/1.1 200"));
    s.write_all(b"tunnel")?;
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf)?;
    assert_eq!(&buf, b"tunnel");

    // HTTP/2 with prior knowledge (h2c) from the app.
    let rt = tokio::runtime::Runtime::new()?;
    let h2_body = rt.block_on(h2c_get(&up_http, "/h2"))?;
    assert!(h2_body.contains("hello from reviews-b /h2"), "{h2_body}");

    // Metrics and the access log.
    let agent = c.agent("vm-1");
    let ok = agent
        .metric("weft_requests_total{source=\"frontend\",destination=\"reviews\",code=\"200\"}")?;
    assert!(ok >= 2.0, "{ok}");
    assert!(
        agent
            .metric("weft_requests_total{source=\"frontend\",destination=\"echo\",code=\"ok\"}")?
            >= 1.0
    );
    assert!(
        agent.metric("weft_tcp_connections_total{source=\"frontend\",destination=\"echo\"}")?
            >= 1.0
    );
    let log = agent.log_text();
    assert!(
        log.lines().any(|l| l.starts_with('{')
            && l.contains("\"destination\":\"reviews\"")
            && l.contains("\"status\":\"200\"")),
        "no access log line"
    );

    // Services registered through the API survive a restart of their agent.
    c.agent_mut("vm-2").kill();
    c.spawn("vm-2", &[]);
    c.wait_ready("vm-2")?;
    wait_instances(&c, "vm-1", "reviews", "passing", 1)?;
    let (status, body) = eventually_http(
        "reviews after restart",
        CONVERGE,
        &up_http,
        "reviews",
        "/again",
        Some(200),
    )?;
    assert_eq!(status, 200, "{body}");
    Ok(())
}

async fn h2c_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let (status, body) = weft_tests::backends::h2c_request(addr, "reviews", path).await?;
    anyhow::ensure!(status == 200, "status {status}");
    Ok(body)
}

#[test]
fn traffic_fails_over_when_a_check_fails_or_a_node_dies() -> anyhow::Result<()> {
    let mut c = Cluster::new("traffic_fails_over_when_a_check_fails_or_a_node_dies");
    c.start_nodes(3, &[])?;
    let mut a = Backend::http("a");
    let b = Backend::http("b");
    for (node, be) in [("vm-2", &a), ("vm-3", &b)] {
        let check = format!("http://127.0.0.1:{}/health", be.port());
        c.register_http_with(
            node,
            "reviews",
            be.port(),
            &[
                "--check-http",
                &check,
                "--check-interval",
                "200ms",
                "--check-timeout",
                "150ms",
            ],
        )?;
    }
    let up = c.upstream_for("vm-1", "frontend", "reviews", 19001)?;
    wait_instances(&c, "vm-1", "reviews", "passing", 2)?;

    let send = |n: usize| -> anyhow::Result<Vec<String>> {
        (0..n)
            .map(|i| {
                let (status, body) = http_get_host(&up, "reviews", &format!("/r{i}"))?;
                anyhow::ensure!(status == 200, "request {i}: {status} {body}");
                Ok(body)
            })
            .collect()
    };
    eventually_http("upstream ready", CONVERGE, &up, "reviews", "/", None)?;
    send(40)?;
    assert!(
        a.count() > 0 && b.count() > 0,
        "both instances get traffic: a={} b={}",
        a.count(),
        b.count()
    );

    // a's backend dies: once its check marks it, every request goes to b, none fails.
    a.stop();
    wait_instances(&c, "vm-1", "reviews", "failing", 1)?;
    let b_before = b.count();
    send(30)?;
    assert_eq!(b.count() - b_before, 30);

    // a comes back on the same port; then vm-3 (running b) is killed.
    let a2 = Backend::http_on("a2", a.port());
    wait_instances(&c, "vm-1", "reviews", "passing", 2)?;
    c.agent_mut("vm-3").kill();
    c.wait_status("vm-1", "vm-3", "failed", CONVERGE)?;
    let a_before = a2.count();
    send(30)?;
    assert_eq!(a2.count() - a_before, 30);
    Ok(())
}

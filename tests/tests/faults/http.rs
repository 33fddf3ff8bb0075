//! Hostile HTTP from an app (scenario 18): obs-fold, NUL and bare CR in headers, encoded
//! and raw backslashes and climbs in the path, duplicate Content-Length, CL + TE — sent
//! through an upstream listener and through the HTTP proxy. Asserts that every one is
//! refused (400 or a closed connection) before anything reaches the backend, and that a
//! mixed-case Host still names the same service.

use weft_tests::backends::{http_get_host, http_raw, Backend};
use weft_tests::Cluster;

use crate::common::report;

/// Scenario 18: ambiguous or hostile HTTP from an app is refused with 400 before anything
/// is forwarded; a mixed-case Host names the same service.
#[test]
fn hostile_http_is_refused_before_forwarding() -> anyhow::Result<()> {
    let mut c = Cluster::new("hostile_http_is_refused_before_forwarding");
    c.formed(2)?;
    let reviews = Backend::http("reviews");
    let up = c.reachable_http("vm-2", "reviews", reviews.port())?;
    let proxy = c.agent("vm-1").proxy();
    let hostile: [(&str, String); 8] = [
        ("obs-fold", "GET / HTTP/1.1\r\nHost: reviews\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n".into()),
        ("NUL in a header", "GET / HTTP/1.1\r\nHost: reviews\r\nX-A: a\0b\r\nConnection: close\r\n\r\n".into()),
        ("bare CR in a header", "GET / HTTP/1.1\r\nHost: reviews\r\nX-A: a\rb\r\nConnection: close\r\n\r\n".into()),
        ("%5C in the path", "GET /a%5C..%5Cadmin HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n".into()),
        ("backslash in the path", "GET /a\\..\\admin HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n".into()),
        ("climb above the root", "GET /../../etc/passwd HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n".into()),
        ("duplicate Content-Length", "POST / HTTP/1.1\r\nHost: reviews\r\nContent-Length: 3\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd".into()),
        ("CL + TE", "POST / HTTP/1.1\r\nHost: reviews\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".into()),
    ];
    let before = reviews.count();
    let mut outcomes = Vec::new();
    for (what, req) in &hostile {
        for (via, addr) in [("upstream", &up), ("proxy", &proxy)] {
            let req = if via == "proxy" {
                req.replacen(" /", " http://reviews/", 1)
            } else {
                req.clone()
            };
            let status = http_raw(addr, &req).map(|r| r.0).unwrap_or(0);
            outcomes.push(format!("{what} via {via}: {status}"));
            assert!(
                status == 400 || status == 0,
                "{what} via {via}: {status} (expected 400 or a closed connection)"
            );
        }
    }
    let leaked = reviews.count() - before;
    let (mixed, body) = http_get_host(&up, "ReViEwS", "/")?;
    report(
        "18 HTTP smuggling and normalisation",
        if leaked == 0 && mixed == 200 { "pass" } else { "FAIL" },
        &format!(
            "{} hostile requests refused (400 or closed), {leaked} reached the backend; mixed-case Host → {mixed}",
            outcomes.len()
        ),
    );
    assert_eq!(
        leaked, 0,
        "hostile requests reached the backend: {outcomes:?}"
    );
    assert_eq!(mixed, 200, "mixed-case Host: {body}");
    assert!(body.contains("hello from reviews"), "{body}");
    Ok(())
}

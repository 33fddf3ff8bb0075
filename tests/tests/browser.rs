//! The dashboard in a real browser: Debian's headless Chromium driven over WebDriver
//! (chromedriver) against a 3-agent cluster with traffic. The overview lists the three
//! nodes; the service graph shows the frontend → reviews edge with a non-zero rate, and
//! the rate changes without a page reload; the rollouts page draws a rollout's timeline
//! and both versions' figures and updates them as the rollout moves. Screenshots are saved
//! under target/test-logs/browser/.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use weft_tests::backends::{http_get_host, Backend};
use weft_tests::{eventually, eventually_http, Cluster};

struct Driver {
    child: Child,
    addr: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver call (HTTP/1.1 with a JSON body) → the `value` of the answer.
fn wd(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = match (body, method) {
        (Some(b), _) => b.to_string(),
        (None, "POST") => "{}".to_owned(),
        (None, _) => String::new(),
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // chromedriver keeps connections open: read the head, then exactly Content-Length.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no content-length in {head:?}"))?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    if let Some(err) = v["value"]["error"].as_str() {
        anyhow::bail!(
            "webdriver {method} {path}: {err}: {}",
            v["value"]["message"]
        );
    }
    Ok(v["value"].clone())
}

fn start_driver() -> anyhow::Result<Driver> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!("cannot start chromedriver (run tests/install-deps.sh): {e}")
        })?;
    let d = Driver {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    eventually("chromedriver ready", Duration::from_secs(20), || {
        Ok(wd(&d.addr, "GET", "/status", None).ok().map(|_| ()))
    })?;
    Ok(d)
}

#[test]
fn dashboard_shows_nodes_and_a_live_graph() -> anyhow::Result<()> {
    let mut c = Cluster::new("browser");
    c.start_nodes(3, &[])?;
    let be = Backend::http("reviews");
    c.register_http("vm-2", "reviews", be.port())?;
    let be2 = Backend::http("reviews-v2");
    c.register_http_with("vm-3", "reviews", be2.port(), &["--version", "v2"])?;
    let up = c.upstream_for("vm-1", "frontend", "reviews", 19001)?;
    eventually_http(
        "reviews reachable",
        Duration::from_secs(15),
        &up,
        "reviews",
        "/",
        None,
    )?;

    // Background traffic whose rate the test changes later (requests per second).
    let rate = Arc::new(AtomicU64::new(5));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (rate, stop, up) = (rate.clone(), stop.clone(), up.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let _ = http_get_host(&up, "reviews", "/browse");
                std::thread::sleep(Duration::from_millis(
                    1000 / rate.load(Ordering::SeqCst).max(1),
                ));
            }
        })
    };

    let result = (|| -> anyhow::Result<()> {
        let driver = start_driver()?;
        let profile = tempfile::tempdir()?;
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let session = wd(&driver.addr, "POST", "/session", Some(caps))?;
        let sid = session["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session id: {session}"))?
            .to_owned();
        let d = driver.addr.clone();
        let call = |m: &str, p: &str, b: Option<serde_json::Value>| {
            wd(&d, m, &format!("/session/{sid}{p}"), b)
        };
        let api = c.agent("vm-1").api();

        // Overview: the three nodes.
        call(
            "POST",
            "/url",
            Some(serde_json::json!({"url": format!("http://{api}/")})),
        )?;
        let page_text = || -> anyhow::Result<String> {
            let v = call(
                "POST",
                "/execute/sync",
                Some(serde_json::json!({"script": "return document.body.innerText;", "args": []})),
            )?;
            Ok(v.as_str().unwrap_or_default().to_owned())
        };
        eventually(
            "three nodes on the overview",
            Duration::from_secs(15),
            || {
                call("POST", "/refresh", None)?;
                let t = page_text()?;
                Ok((t.contains("vm-1")
                    && t.contains("vm-2")
                    && t.contains("vm-3")
                    && t.contains("3 alive"))
                .then_some(()))
            },
        )?;

        // Graph: the edge appears with a non-zero rate …
        call(
            "POST",
            "/url",
            Some(serde_json::json!({"url": format!("http://{api}/graph")})),
        )?;
        call(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({"script": "window.__weftMarker = 42; return 1;", "args": []})),
        )?;
        let read_rps = || -> anyhow::Result<Option<f64>> {
            let v = call(
                "POST",
                "/execute/sync",
                Some(
                    serde_json::json!({"script": "const e = document.querySelector('#graph text.edge-label[data-edge=\"frontend->reviews\"]'); return e ? e.getAttribute('data-rps') : null;", "args": []}),
                ),
            )?;
            Ok(v.as_str().and_then(|s| s.parse().ok()))
        };
        let first = eventually("edge with a rate", Duration::from_secs(30), || {
            Ok(read_rps()?.filter(|r| *r > 0.0))
        })?;
        // … and its rate changes when traffic does, without a reload.
        rate.store(40, Ordering::SeqCst);
        let second = eventually("rate changes", Duration::from_secs(40), || {
            Ok(read_rps()?.filter(|r| (*r - first).abs() > 0.5))
        })?;
        let marker = call(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({"script": "return window.__weftMarker || null;", "args": []})),
        )?;
        assert_eq!(marker, 42, "the page was reloaded");
        println!("graph edge frontend → reviews: {first} rps, then {second} rps without a reload");

        let dir = weft_tests::weft_bin()
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("test-logs").join("browser"))
            .unwrap_or_default();
        std::fs::create_dir_all(&dir)?;
        // The page as it is now, in target/test-logs/browser/NAME.png.
        let screenshot = |name: &str| -> anyhow::Result<()> {
            let shot = call("GET", "/screenshot", None)?;
            let png = base64::engine::general_purpose::STANDARD
                .decode(shot.as_str().unwrap_or_default())?;
            let path = dir.join(format!("{name}.png"));
            std::fs::write(&path, &png)?;
            println!("screenshot: {}", path.display());
            Ok(())
        };
        screenshot("graph")?;

        // Rollouts: start one; the page draws its timeline and both versions' figures,
        // and they grow as the rollout moves, without a reload.
        c.cli_ok(
            "vm-1",
            &[
                "rollout",
                "start",
                "reviews",
                "--to",
                "v2",
                "--from",
                "v1",
                "--steps",
                "25,50,100",
                "--interval",
                "3s",
                "--min-requests",
                "3",
            ],
        )?;
        call(
            "POST",
            "/url",
            Some(serde_json::json!({"url": format!("http://{api}/rollouts")})),
        )?;
        call(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({"script": "window.__weftMarker = 7; return 1;", "args": []})),
        )?;
        let drawn = || -> anyhow::Result<(u64, u64, String)> {
            let v = call(
                "POST",
                "/execute/sync",
                Some(
                    serde_json::json!({"script": "const c = document.querySelector('.rollout[data-service=\"reviews\"]'); if (!c) return null; return [c.querySelectorAll('.timeline .decision').length, c.querySelectorAll('.chart path.series').length, c.querySelector('h2').textContent];", "args": []}),
                ),
            )?;
            Ok((
                v[0].as_u64().unwrap_or(0),
                v[1].as_u64().unwrap_or(0),
                v[2].as_str().unwrap_or_default().to_owned(),
            ))
        };
        let first = eventually("the rollout's timeline", Duration::from_secs(30), || {
            let d = drawn()?;
            Ok((d.0 >= 1).then_some(d))
        })?;
        let done = eventually(
            "the rollout promoted on the page",
            Duration::from_secs(60),
            || {
                let d = drawn()?;
                Ok((d.2.contains("promoted") && d.0 > first.0 && d.1 >= 4).then_some(d))
            },
        )?;
        let marker = call(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({"script": "return window.__weftMarker || null;", "args": []})),
        )?;
        assert_eq!(marker, 7, "the rollouts page was reloaded");
        println!(
            "rollouts page: {} decision(s) at first, then {} with {} plotted series: {}",
            first.0, done.0, done.1, done.2
        );
        screenshot("rollouts")?;

        // The graph's edges carry arrowheads and a width by traffic.
        call(
            "POST",
            "/url",
            Some(serde_json::json!({"url": format!("http://{api}/graph")})),
        )?;
        eventually("an arrowed edge", Duration::from_secs(10), || {
            let v = call(
                "POST",
                "/execute/sync",
                Some(
                    serde_json::json!({"script": "const e = document.querySelector('#graph line.edge[marker-end]'); return e ? e.getAttribute('stroke-width') : null;", "args": []}),
                ),
            )?;
            Ok(v.as_str()
                .and_then(|w| w.parse::<f64>().ok())
                .filter(|w| *w > 1.0))
        })?;

        // Every other page, as people see it (looked at by hand: target/test-logs/browser).
        c.cli_ok(
            "vm-1",
            &["policy", "allow", "frontend", "reviews", "--path", "/api/*"],
        )?;
        for (name, path) in [
            ("overview", "/"),
            ("members", "/members"),
            ("services", "/services"),
            ("config", "/config"),
            ("logs", "/logs"),
        ] {
            call(
                "POST",
                "/url",
                Some(serde_json::json!({"url": format!("http://{api}{path}")})),
            )?;
            std::thread::sleep(Duration::from_millis(2500));
            screenshot(name)?;
        }
        call(
            "POST",
            "/url",
            Some(serde_json::json!({"url": format!("http://{api}/config")})),
        )?;
        let config = call(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({"script": "return document.body.innerText;", "args": []})),
        )?;
        let config = config.as_str().unwrap_or_default();
        // A service's page: 15 minutes per version, drawn from its series.
        call(
            "POST",
            "/url",
            Some(serde_json::json!({"url": format!("http://{api}/service/reviews")})),
        )?;
        let lines = eventually("the service page's charts", Duration::from_secs(15), || {
            let v = call(
                "POST",
                "/execute/sync",
                Some(
                    serde_json::json!({"script": "return document.querySelectorAll('#series svg path.series').length;", "args": []}),
                ),
            )?;
            Ok(v.as_u64().filter(|n| *n >= 3))
        })?;
        println!("service page: {lines} plotted series");
        screenshot("service")?;
        assert!(
            config.contains("allow frontend → reviews (/api/*)"),
            "the config page renders rules: {config}"
        );
        let _ = wd(&driver.addr, "DELETE", &format!("/session/{sid}"), None);
        Ok(())
    })();
    stop.store(true, Ordering::SeqCst);
    let _ = traffic.join();
    result
}

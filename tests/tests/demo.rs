//! `weft demo` (the README's first command): three agents with sample services and
//! traffic come up, requests flow through the mesh, and Ctrl-C leaves nothing behind; and
//! `weft demo --tour`, which shows a split, a deny and a rollout. (Both use the demo's
//! fixed addresses 127.0.10.1-3, so they run one after the other.)

use std::process::{Command, Stdio};
use std::time::Duration;

use weft_tests::{eventually, http_get, weft_bin};

/// The demo's addresses are fixed: one demo at a time.
static ONE_DEMO: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        // SIGTERM first: the demo stops its agents (SIGKILL would orphan them on the
        // demo's fixed addresses, where the next demo would find them).
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .stderr(Stdio::null())
            .status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_runs_traffic_and_cleans_up() -> anyhow::Result<()> {
    let _one = ONE_DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let mut demo = Demo(
        Command::new(weft_bin())
            .arg("demo")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let pid = demo.0.id();
    let dir = std::env::temp_dir().join(format!("weft-demo-{pid}"));
    let api = "127.0.10.1:7070";
    eventually(
        "demo traffic through the mesh",
        Duration::from_secs(40),
        || {
            let Ok(m) = http_get(api, "/metrics") else {
                return Ok(None);
            };
            let ok = m.lines().any(|l| {
                l.starts_with(
                    "weft_requests_total{source=\"frontend\",destination=\"reviews\",code=\"200\"}",
                ) && l
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
                    >= 5.0
            });
            Ok(ok.then_some(()))
        },
    )?;
    // Any node's graph shows the edge from gossip alone (demo-2 sends no traffic itself).
    eventually(
        "live edge on another node's graph",
        Duration::from_secs(30),
        || {
            let Ok(g) = http_get("127.0.10.2:7070", "/v1/graph") else {
                return Ok(None);
            };
            let v: serde_json::Value = serde_json::from_str(&g)?;
            let live = v["edges"].as_array().is_some_and(|edges| {
                edges.iter().any(|e| {
                    e["source"] == "frontend"
                        && e["destination"] == "reviews"
                        && e["rps"].as_f64().unwrap_or(0.0) > 0.0
                })
            });
            Ok(live.then_some(()))
        },
    )?;
    // By name, with no upstream: reviews.weft from demo-1's DNS, then its virtual IP on
    // reviews' port.
    let out = Command::new("dig")
        .args(["@127.0.10.1", "-p", "8600", "+short", "reviews.weft"])
        .output()?;
    let vip = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(vip.starts_with("127.225."), "reviews.weft → {vip:?}");
    let services: serde_json::Value = serde_json::from_str(&http_get(api, "/v1/services")?)?;
    let port = services
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["service"] == "reviews")
        .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
        .find(|i| i["version"] == "v1")
        .and_then(|i| i["port"].as_u64())
        .ok_or_else(|| anyhow::anyhow!("no reviews v1 port"))?;
    let (status, body) =
        weft_tests::backends::http_get_host(&format!("{vip}:{port}"), "reviews.weft", "/")?;
    assert_eq!(status, 200, "{body}");
    println!(
        "reviews.weft → {vip}: {}",
        body.lines().last().unwrap_or("")
    );

    // The README's canary walkthrough, as the demo prints it: a broken v2 rolls back on
    // its own, a healed one is promoted.
    let weft = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(weft_bin())
            .args(args)
            .env("WEFT_API", api)
            .env("WEFT_DATA_DIR", dir.join("demo-1"))
            .env_remove("WEFT_TOKEN")
            .env_remove("WEFT_CREDENTIAL")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "weft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let start = [
        "rollout",
        "start",
        "reviews",
        "--to",
        "v2",
        "--steps",
        "20,50,100",
        "--interval",
        "5s",
        "--min-requests",
        "10",
    ];
    let state = || -> anyhow::Result<String> {
        let v: serde_json::Value =
            serde_json::from_str(&weft(&["rollout", "status", "reviews", "--json"])?)?;
        Ok(v["state"].as_str().unwrap_or_default().to_owned())
    };
    std::fs::write(dir.join("break-v2"), b"")?;
    let t = std::time::Instant::now();
    weft(&start)?;
    eventually("the broken v2 rolled back", Duration::from_secs(40), || {
        Ok((state()? == "rolled_back").then_some(()))
    })?;
    println!("broken v2 rolled back {:.1?} after start", t.elapsed());
    std::fs::remove_file(dir.join("break-v2"))?;
    let t = std::time::Instant::now();
    weft(&start)?;
    eventually("the healed v2 promoted", Duration::from_secs(60), || {
        Ok((state()? == "promoted").then_some(()))
    })?;
    println!("healed v2 promoted {:.1?} after start", t.elapsed());
    println!("{}", weft(&["rollout", "status", "reviews"])?);

    let members = http_get(api, "/v1/members")?;
    assert_eq!(
        members.matches("\"status\":\"alive\"").count(),
        3,
        "{members}"
    );
    assert!(dir.exists());

    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()?;
    let status = eventually("demo exits", Duration::from_secs(30), || {
        Ok(demo.0.try_wait()?)
    })?;
    assert!(status.success(), "demo exited with {status}");
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        http_get(api, "/healthz").is_err(),
        "an agent is still running"
    );
    Ok(())
}

#[test]
fn demo_tour_shows_a_split_a_deny_and_a_rollout() -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let _one = ONE_DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let mut demo = Demo(
        Command::new(weft_bin())
            .args(["demo", "--tour"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let stdout = demo.0.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    while !seen.iter().any(|l: &String| l.contains("tour done")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the tour did not finish:\n{}", seen.join("\n")),
        }
    }
    let text = seen.join("\n");
    println!("{text}");
    // The split: both versions answered some of the 40 requests.
    let split = seen
        .iter()
        .find(|l| l.contains("40 requests from frontend"))
        .unwrap_or_else(|| panic!("{text}"));
    // "40 requests from frontend: 15 answered by v1, 25 by v2"
    let words: Vec<&str> = split
        .split([' ', ',', ':'])
        .filter(|w| !w.is_empty())
        .collect();
    let count = |v: &str| -> u32 {
        words
            .iter()
            .position(|w| *w == v)
            .and_then(|i| words[..i].iter().rev().find_map(|w| w.parse().ok()))
            .unwrap_or(0)
    };
    assert!(count("v1") > 0 && count("v2") > 0, "{split}");
    assert!(text.contains("frontend now gets: 403"), "{text}");
    assert!(text.contains("reviews: promoted at 100 % on v2"), "{text}");
    let pid = demo.0.id();
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()?;
    let status = eventually("demo exits", Duration::from_secs(30), || {
        Ok(demo.0.try_wait()?)
    })?;
    assert!(status.success(), "demo exited with {status}");
    Ok(())
}

//! Progressive rollouts with real agents: `weft rollout start` under steady traffic
//! promotes a healthy version, rolls back one that fails or is slow (naming the gate and
//! its figures), holds a step without traffic, and survives its driver being killed and
//! every node being restarted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weft_tests::backends::{http_get_host, Backend};
use weft_tests::{eventually, Cluster};

/// A client sending GETs for `service` through `up` back to back (10 ms apart) until
/// stopped; can be paused; counts answers by backend and failures.
struct Traffic {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(up: String, service: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (s, p, n, f) = (stop.clone(), paused.clone(), sent.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if p.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                n.fetch_add(1, Ordering::SeqCst);
                match http_get_host(&up, service, "/") {
                    Ok((200, _)) => {}
                    Ok((status, body)) => f
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{status} {}", body.lines().last().unwrap_or(""))),
                    Err(e) => f
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self {
            stop,
            paused,
            sent,
            failed,
            thread: Some(thread),
        }
    }

    fn failures(&self) -> Vec<String> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn clear(&self) {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until `node`'s catalog has instances of `service` at v1 and at v2.
fn wait_versions(c: &Cluster, node: &str, service: &str) -> anyhow::Result<()> {
    eventually(
        &format!("{service} v1 and v2 in {node}'s catalog"),
        Duration::from_secs(20),
        || {
            let all: serde_json::Value =
                serde_json::from_str(&c.cli_ok(node, &["services", "--json"])?)?;
            let versions: Vec<String> = all
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["service"] == service)
                .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
                .filter_map(|i| i["version"].as_str().map(str::to_owned))
                .collect();
            Ok(
                (versions.iter().any(|v| v == "v1") && versions.iter().any(|v| v == "v2"))
                    .then_some(()),
            )
        },
    )
}

/// `weft rollout status SERVICE --json` on `node`.
fn status(c: &Cluster, node: &str, service: &str) -> anyhow::Result<serde_json::Value> {
    let out = c.cli_ok(node, &["rollout", "status", service, "--json"])?;
    Ok(serde_json::from_str(&out)?)
}

/// Waits until the rollout of `service` (seen from `node`) is in `state`; returns it.
fn wait_state(
    c: &Cluster,
    node: &str,
    service: &str,
    state: &str,
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    eventually(&format!("rollout of {service} {state}"), timeout, || {
        let s = status(c, node, service)?;
        Ok((s["state"] == state).then_some(s))
    })
}

fn actions(s: &serde_json::Value) -> Vec<String> {
    s["progress"]["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["action"].as_str().map(str::to_owned))
        .collect()
}

fn last_reason(s: &serde_json::Value) -> String {
    s["progress"]["history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|d| d["reason"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// Waits until `backend` serves no more requests for `quiet` (after what was in flight).
fn stops_serving(backend: &Backend, quiet: Duration, timeout: Duration) -> anyhow::Result<()> {
    eventually("the old split is gone", timeout, || {
        let before = backend.count();
        std::thread::sleep(quiet);
        Ok((backend.count() == before).then_some(()))
    })
}

#[test]
fn rollouts_promote_a_healthy_version_and_roll_back_a_failing_or_slow_one() -> anyhow::Result<()> {
    let mut c = Cluster::new("rollouts_promote_a_healthy_version_and_roll_back");
    c.formed(3)?;
    let v1 = Backend::http("v1");
    let fail = Arc::new(AtomicU64::new(20));
    let delay = Arc::new(AtomicU64::new(0));
    let v2 = Backend::http_behaving("v2", 0, 500, fail.clone(), delay.clone());
    c.register_http_with("vm-2", "reviews", v1.port(), &["--version", "v1"])?;
    c.register_http_with("vm-3", "reviews", v2.port(), &["--version", "v2"])?;
    let up = c.client_upstream("vm-1", "reviews", 19001)?;
    for node in ["vm-1", "vm-2"] {
        wait_versions(&c, node, "reviews")?;
    }

    // Mistakes are refused before anything is written.
    let out = c
        .agent("vm-1")
        .cli(&["rollout", "start", "reviews", "--to", "v9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no instance of reviews runs version v9"),
        "{err}"
    );
    let out = c.agent("vm-1").cli(&[
        "rollout",
        "start",
        "reviews",
        "--to",
        "v2",
        "--steps",
        "50,10,100",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("steps"), "{err}");

    // Routes and policies that would be outages are refused too, naming the fix.
    for (args, expect) in [
        (
            vec!["route", "set", "reviews", "--split", "v1=50,v9=50"],
            "runs version v9",
        ),
        (
            vec!["route", "set", "reviews", "--split", "v1=60,v2=50"],
            "add up to 110",
        ),
        (
            vec!["route", "set", "reviewz", "--split", "v1=100"],
            "did you mean reviews?",
        ),
        (
            vec!["policy", "allow", "client", "reviewz"],
            "did you mean reviews?",
        ),
    ] {
        let out = c.agent("vm-1").cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expect),
            "{args:?}: {err}"
        );
    }

    // Staging ahead of a deploy: written, with the problem printed as a warning.
    let out = c.agent("vm-1").cli(&[
        "route",
        "set",
        "--allow-unknown",
        "ratingz",
        "--split",
        "v1=100",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("warning: service \"ratingz\" runs nowhere"),
        "{err}"
    );

    // A node's own root has no operator credential: it cannot start one.
    let out = c
        .agent("vm-2")
        .cli_as_node(&["rollout", "start", "reviews", "--to", "v2"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("operator credential"),
        "{err}"
    );

    let traffic = Traffic::start(up, "reviews");
    let start = |extra: &[&str]| -> anyhow::Result<Instant> {
        let mut args = vec![
            "rollout",
            "start",
            "reviews",
            "--to",
            "v2",
            "--steps",
            "10,50,100",
            "--interval",
            "3s",
            "--min-requests",
            "5",
        ];
        args.extend_from_slice(extra);
        c.cli_ok("vm-1", &args)?;
        Ok(Instant::now())
    };

    // 1. v2 answers 500 to 20 %: rolled back at the first step, naming the gate.
    let t = start(&[])?;
    let s = wait_state(
        &c,
        "vm-1",
        "reviews",
        "rolled_back",
        Duration::from_secs(30),
    )?;
    let took = t.elapsed();
    let reason = last_reason(&s);
    println!("failing v2 rolled back after {took:.1?}: {reason}");
    assert_eq!(actions(&s), ["start", "rollback"], "{s}");
    assert!(reason.contains("error rate of v2"), "{reason}");
    assert_eq!(s["weight"], 0);
    let last = &s["progress"]["history"][1];
    assert!(last["new"]["errors"].as_u64().unwrap_or(0) > 0, "{last}");
    // Every node routes 100 % to v1 again within an interval.
    stops_serving(&v2, Duration::from_secs(2), Duration::from_secs(8))?;
    let metrics = weft_tests::http_get(&c.agent("vm-2").api(), "/metrics")?;
    assert!(
        metrics.contains("weft_rollout_state{service=\"reviews\"} 3"),
        "vm-2 reports rolled_back"
    );

    // 2. v2 healthy but slow (300 ms; gate 100 ms): rolled back on latency.
    fail.store(0, Ordering::SeqCst);
    delay.store(300, Ordering::SeqCst);
    start(&["--max-p99", "100ms"])?;
    let s = wait_state(
        &c,
        "vm-1",
        "reviews",
        "rolled_back",
        Duration::from_secs(30),
    )?;
    let reason = last_reason(&s);
    println!("slow v2 rolled back: {reason}");
    assert!(reason.contains("p99 of v2"), "{reason}");
    stops_serving(&v2, Duration::from_secs(2), Duration::from_secs(8))?;

    // 3. v2 healthy; no traffic at first: the step holds, then proceeds when traffic resumes,
    // and the rollout ends promoted without one failed request.
    delay.store(0, Ordering::SeqCst);
    traffic.paused.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(1));
    traffic.clear();
    let t = start(&["--max-p99", "100ms"])?;
    let s = eventually("the step holds", Duration::from_secs(20), || {
        let s = status(&c, "vm-1", "reviews")?;
        Ok(actions(&s).contains(&"hold".to_owned()).then_some(s))
    })?;
    assert_eq!(s["weight"], 10, "{s}");
    println!("held: {}", last_reason(&s));
    traffic.paused.store(false, Ordering::SeqCst);
    let v2_before = v2.count();
    let s = wait_state(&c, "vm-1", "reviews", "promoted", Duration::from_secs(40))?;
    println!(
        "promoted {:.1?} after start: {:?}",
        t.elapsed(),
        actions(&s)
    );
    assert_eq!(actions(&s), ["start", "hold", "advance", "promote"], "{s}");
    assert!(v2.count() > v2_before, "v2 served during the rollout");
    // All traffic on v2 now, everywhere.
    stops_serving(&v1, Duration::from_secs(2), Duration::from_secs(8))?;
    let failures = traffic.failures();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    println!(
        "{} requests sent in all",
        traffic.sent.load(Ordering::SeqCst)
    );
    let human = c.cli_ok("vm-3", &["rollout", "status"])?;
    println!("{human}");
    assert!(human.contains("reviews: promoted"), "{human}");

    // A route written afterwards is the operator's later word: it is in force again.
    c.cli_ok("vm-1", &["route", "set", "reviews", "--split", "v1=100"])?;
    stops_serving(&v2, Duration::from_secs(2), Duration::from_secs(10))?;
    let s = status(&c, "vm-1", "reviews")?;
    assert_eq!(s["in_force"], false, "{s}");
    Ok(())
}

/// A service name whose rollout `owner` (among `names`) is `wanted`.
fn service_driven_by(names: &[String], wanted: &str) -> String {
    (0..1000)
        .map(|i| format!("shop{i}"))
        .find(|s| weft_node::rollout::driver::owner(s, names) == Some(wanted))
        .unwrap_or_else(|| panic!("no service name is driven by {wanted}"))
}

#[test]
fn a_rollout_survives_its_driver_killed_and_every_node_restarted() -> anyhow::Result<()> {
    let mut c = Cluster::new("a_rollout_survives_its_driver_killed");
    c.formed(4)?;
    let names: Vec<String> = (1..=4).map(|i| format!("vm-{i}")).collect();
    let service: &'static str = Box::leak(service_driven_by(&names, "vm-4").into_boxed_str());
    let v1 = Backend::http("v1");
    let v2 = Backend::http("v2");
    c.register_http_with("vm-2", service, v1.port(), &["--version", "v1"])?;
    c.register_http_with("vm-3", service, v2.port(), &["--version", "v2"])?;
    let up = c.client_upstream("vm-1", service, 19001)?;
    wait_versions(&c, "vm-1", service)?;
    let _traffic = Traffic::start(up, service);
    c.cli_ok(
        "vm-1",
        &[
            "rollout",
            "start",
            service,
            "--to",
            "v2",
            "--from",
            "v1",
            "--steps",
            "10,20,40,60,80,100",
            "--interval",
            "3s",
            "--min-requests",
            "5",
        ],
    )?;
    // Weights seen over the whole test never go backwards.
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let record = |s: &serde_json::Value| {
        if let Some(w) = s["weight"].as_u64() {
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(w);
        }
    };
    let s = eventually("the first advance", Duration::from_secs(20), || {
        let s = status(&c, "vm-1", service)?;
        record(&s);
        Ok((s["weight"].as_u64() >= Some(20)).then_some(s))
    })?;
    assert_eq!(s["driven_by"], "vm-4", "{s}");
    let at_kill = s["weight"].as_u64().unwrap_or(0);

    // Kill -9 the driver: another node takes over from the same step.
    c.agent_mut("vm-4").kill();
    let killed = Instant::now();
    let s = eventually("another node drives it", Duration::from_secs(30), || {
        let s = status(&c, "vm-1", service)?;
        record(&s);
        Ok((s["driven_by"] != "vm-4" && s["driven_by"].is_string()).then_some(s))
    })?;
    println!(
        "taken over by {} {:.1?} after the kill: {:?}",
        s["driven_by"],
        killed.elapsed(),
        actions(&s)
    );
    assert!(actions(&s).contains(&"takeover".to_owned()), "{s}");
    assert!(s["weight"].as_u64() >= Some(at_kill), "{s}");
    assert_eq!(s["state"], "progressing", "{s}");

    // Every node restarted (SIGTERM, then start again): the rollout resumes.
    let before = status(&c, "vm-1", service)?;
    record(&before);
    for n in ["vm-1", "vm-2", "vm-3"] {
        c.agent_mut(n).signal("TERM");
    }
    for n in ["vm-1", "vm-2", "vm-3"] {
        c.agent_mut(n).wait_exit(Duration::from_secs(15))?;
    }
    for n in ["vm-1", "vm-2", "vm-3", "vm-4"] {
        c.spawn(n, &[]);
    }
    for n in ["vm-1", "vm-2", "vm-3", "vm-4"] {
        c.wait_ready(n)?;
    }
    let after = status(&c, "vm-1", service)?;
    record(&after);
    println!(
        "after restarting every node: {} at {}% (before: {} at {}%)",
        after["state"], after["weight"], before["state"], before["weight"]
    );
    assert!(
        after["weight"].as_u64() >= before["weight"].as_u64(),
        "{after}"
    );
    let s = eventually(
        "promoted after the restart",
        Duration::from_secs(60),
        || {
            let s = status(&c, "vm-1", service)?;
            record(&s);
            Ok((s["state"] == "promoted").then_some(s))
        },
    )?;
    println!("{:?}", actions(&s));
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "the weight went backwards: {seen:?}"
    );
    Ok(())
}

#[test]
fn mirroring_copies_half_the_requests_and_a_slow_mirror_adds_no_latency() -> anyhow::Result<()> {
    let mut c = Cluster::new("mirroring_copies_half_the_requests");
    c.formed(3)?;
    let v1 = Backend::http("v1");
    let delay = Arc::new(AtomicU64::new(0));
    let v2 = Backend::http_behaving("v2", 0, 500, Arc::default(), delay.clone());
    c.register_http_with("vm-2", "reviews", v1.port(), &["--version", "v1"])?;
    c.register_http_with("vm-3", "reviews", v2.port(), &["--version", "v2"])?;
    let up = c.client_upstream("vm-1", "reviews", 19001)?;
    wait_versions(&c, "vm-1", "reviews")?;
    c.cli_ok(
        "vm-1",
        &[
            "route", "set", "reviews", "--split", "v1=100", "--mirror", "v2=50",
        ],
    )?;
    // Wait until the mirror is in force (a copy reaches v2).
    eventually("the mirror in force", Duration::from_secs(20), || {
        let _ = http_get_host(&up, "reviews", "/warm");
        Ok((v2.count() > 0).then_some(()))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let (v1_before, v2_before) = (v1.count(), v2.count());
    let n = 200;
    let mut answered_by_v2 = 0;
    for _ in 0..n {
        let (status, body) = http_get_host(&up, "reviews", "/")?;
        assert_eq!(status, 200, "{body}");
        if body.contains("hello from v2") {
            answered_by_v2 += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (primary, copies) = (v1.count() - v1_before, v2.count() - v2_before);
    println!("{n} requests: v1 served {primary}, the mirror got {copies} copies");
    assert_eq!(
        answered_by_v2, 0,
        "the client sees only the primary's answers"
    );
    assert_eq!(primary, n);
    assert!(
        (60..=140).contains(&copies),
        "about half mirrored: {copies}"
    );

    // A mirror that takes 300 ms per answer: the primary's latency does not move.
    let median = |samples: &mut Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    let mut fast = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        http_get_host(&up, "reviews", "/")?;
        fast.push(t.elapsed());
    }
    delay.store(300, Ordering::SeqCst);
    let mut slow = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        http_get_host(&up, "reviews", "/")?;
        slow.push(t.elapsed());
    }
    let (fast, slow) = (median(&mut fast), median(&mut slow));
    println!("median latency with a fast mirror {fast:.2?}, with a 300 ms mirror {slow:.2?}");
    assert!(
        slow < fast + Duration::from_millis(50),
        "a slow mirror slowed the primary: {fast:?} → {slow:?}"
    );
    let metrics = weft_tests::http_get(&c.agent("vm-1").api(), "/metrics")?;
    assert!(
        metrics
            .contains("weft_mirrored_total{destination=\"reviews\",version=\"v2\",outcome=\"ok\"}"),
        "mirrored copies counted"
    );
    Ok(())
}

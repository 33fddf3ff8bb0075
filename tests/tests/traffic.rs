//! Traffic management with real agents: retries within a budget, fault injection, rate
//! limits, outlier ejection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_tests::backends::{http_get_host, Backend};
use weft_tests::{eventually, eventually_http, Cluster};

const CONVERGE: Duration = Duration::from_secs(15);

fn set(c: &Cluster, kind: &str, name: &str, value: &str) -> anyhow::Result<()> {
    c.cli_ok("vm-1", &["config", "set", kind, name, value])?;
    eventually("config applied on vm-1", CONVERGE, || {
        let out = c
            .agent("vm-1")
            .cli(&["config", "get", kind, name, "--json"]);
        Ok(out.status.success().then_some(()))
    })
}

/// Registers HTTP service `service` on vm-2 (a backend on `port`) with an upstream for it
/// on vm-1, and waits until that upstream answers at all; returns its address.
fn answering_upstream(c: &Cluster, service: &str, port: u16) -> anyhow::Result<String> {
    let up = c.http_upstream("vm-2", service, port)?;
    eventually_http(
        &format!("{service} reachable"),
        CONVERGE,
        &up,
        service,
        "/",
        None,
    )?;
    Ok(up)
}

#[test]
fn retries_hide_errors_within_the_budget() -> anyhow::Result<()> {
    let mut c = Cluster::new("retries_hide_errors_within_the_budget");
    c.start_nodes(2, &[])?;
    let fail = Arc::new(AtomicU64::new(10));
    let be = Backend::http_failing("flaky", 0, 503, fail.clone());
    let up = answering_upstream(&c, "flaky", be.port())?;
    set(
        &c,
        "resilience",
        "flaky",
        r#"{"retries": 3, "retry_budget_percent": 20}"#,
    )?;

    let n = 500;
    let ok = (0..n)
        .filter(|_| http_get_host(&up, "flaky", "/x").is_ok_and(|r| r.0 == 200))
        .count();
    let rate = ok as f64 * 100.0 / n as f64;
    println!("10% backend 503s with retries: {ok}/{n} succeeded ({rate:.1}%)");
    assert!(rate >= 99.0, "{rate:.1}% success");

    // Everything fails: retries stop at the budget (≤ 20 % extra plus the floor of 10
    // retries per window, twice in case a window boundary falls inside the run) instead of
    // the 4× a retry storm would send.
    fail.store(100, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(11)); // a fresh budget window
    let before = be.count();
    let n = 200;
    let failed = (0..n)
        .filter(|_| http_get_host(&up, "flaky", "/y").is_ok_and(|r| r.0 == 503))
        .count();
    let load = be.count() - before;
    println!("100% failures: {failed}/{n} answered 503, backend saw {load} requests");
    assert_eq!(failed, n);
    assert!(
        load <= (n as u64) * 120 / 100 + 20,
        "retry storm: {load} backend requests for {n}"
    );
    assert!(
        c.agent("vm-1")
            .metric("weft_retries_total{destination=\"flaky\"}")?
            >= 1.0
    );
    println!(
        "FAULT | 13 no retry storm | pass | 10 % backend 503s with 3 retries: {rate:.1} % succeeded; 100 % failures: {n} requests made {load} backend requests (budget 20 % + 10)"
    );
    Ok(())
}

#[test]
fn faults_and_rate_limits_apply_at_their_rates() -> anyhow::Result<()> {
    let mut c = Cluster::new("faults_and_rate_limits_apply_at_their_rates");
    c.start_nodes(2, &[])?;
    let be = Backend::http("web");
    let up = answering_upstream(&c, "web", be.port())?;

    // 100 ms delay on 50 %, 503 abort on 10 %.
    set(
        &c,
        "fault",
        "web",
        r#"{"delay": {"duration": "100ms", "percent": 50}, "abort": {"status": 503, "percent": 10}}"#,
    )?;
    let n = 1000;
    let results: Vec<(u16, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| {
                s.spawn(|| {
                    (0..n / 10)
                        .map(|_| {
                            let t = Instant::now();
                            let status = http_get_host(&up, "web", "/f").map(|r| r.0).unwrap_or(0);
                            (status, t.elapsed())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let delayed = results
        .iter()
        .filter(|r| r.1 >= Duration::from_millis(100))
        .count() as f64
        * 100.0
        / n as f64;
    let aborted = results.iter().filter(|r| r.0 == 503).count() as f64 * 100.0 / n as f64;
    println!(
        "faults over {n} requests: {delayed:.1}% delayed ≥ 100 ms, {aborted:.1}% aborted with 503"
    );
    assert!((45.0..=55.0).contains(&delayed), "{delayed:.1}% delayed");
    assert!((5.0..=15.0).contains(&aborted), "{aborted:.1}% aborted");
    c.cli_ok("vm-1", &["config", "delete", "fault", "web"])?;

    // 50 rps limit; the client sends 200 rps for 3 s.
    set(&c, "ratelimit", "web", r#"{"rps": 50}"#)?;
    std::thread::sleep(Duration::from_millis(1100)); // let the bucket fill
    let start = Instant::now();
    let (mut passed, mut limited) = (0, 0);
    for i in 0..600u32 {
        let due = start + Duration::from_millis(5 * u64::from(i));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        match http_get_host(&up, "web", "/r")?.0 {
            200 => passed += 1,
            429 => limited += 1,
            other => anyhow::bail!("unexpected status {other}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("rate limit 50 rps at 200 rps for {secs:.1} s: {passed} passed ({:.0}/s), {limited} got 429", passed as f64 / secs);
    // 50/s for ~3 s plus a one-second burst.
    assert!((130..=240).contains(&passed), "{passed} passed");
    assert_eq!(passed + limited, 600);
    assert!(
        c.agent("vm-1")
            .metric("weft_ratelimited_total{destination=\"web\"}")?
            >= 300.0
    );
    Ok(())
}

#[test]
fn outliers_are_ejected() -> anyhow::Result<()> {
    let mut c = Cluster::new("outliers_are_ejected");
    c.start_nodes(4, &[])?;
    let bad = Backend::http_failing("bad", 0, 500, Arc::new(AtomicU64::new(100)));
    let good1 = Backend::http("good1");
    let good2 = Backend::http("good2");
    for (node, be) in [("vm-2", &bad), ("vm-3", &good1), ("vm-4", &good2)] {
        c.register_http(node, "api", be.port())?;
    }
    let up = c.client_upstream("vm-1", "api", 19001)?;
    eventually("three instances", CONVERGE, || {
        let out = c.agent("vm-1").cli(&["services", "--json"]);
        Ok((String::from_utf8_lossy(&out.stdout)
            .matches("\"passing\"")
            .count()
            >= 4)
            .then_some(()))
    })?;
    set(
        &c,
        "resilience",
        "api",
        r#"{"outlier": {"consecutive_5xx": 3, "base_ejection": "60s", "max_ejection_percent": 50}}"#,
    )?;
    eventually_http("api reachable", CONVERGE, &up, "api", "/", None)?;
    let vm1 = c.agent("vm-1");
    // Peak-EWMA can shun the bad instance for a while after one slow sample (its cost
    // fades back over ~10 s), so allow time for it to be picked three times in a row.
    eventually("bad instance ejected", Duration::from_secs(45), || {
        let _ = http_get_host(&up, "api", "/warm");
        Ok((vm1
            .metric("weft_ejections_total{destination=\"api\"}")
            .unwrap_or(0.0)
            >= 1.0)
            .then_some(()))
    })?;
    let before = bad.count();
    let ok = (0..60)
        .filter(|_| http_get_host(&up, "api", "/after").is_ok_and(|r| r.0 == 200))
        .count();
    assert_eq!(ok, 60, "traffic flows to the two good instances");
    assert_eq!(bad.count(), before, "the ejected instance got traffic");
    assert!(good1.count() > 0 && good2.count() > 0);
    Ok(())
}

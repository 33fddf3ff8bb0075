//! Fault suite: partitions, loss and one-way cuts between agents in their own network
//! namespaces; kill -9 in the middle of writes; a lost store; a full disk. Each test
//! prints `FAULT | scenario | outcome | figures` lines; `tests/faults/long.sh` runs the same
//! tests longer (WEFT_FAULT_LONG=1) and prints them as a table.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weft_tests::backends::http_get_host;
use weft_tests::{eventually, http_get, Cluster};

fn long() -> bool {
    std::env::var("WEFT_FAULT_LONG").is_ok_and(|v| v == "1")
}

fn report(scenario: &str, outcome: &str, figures: &str) {
    println!("FAULT | {scenario} | {outcome} | {figures}");
}

fn backend() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fault_backend"))
}

/// vm-1..3 in a lab; `api` on vm-2 and vm-3 (a backend in each namespace). Returns
/// vm-1's HTTP proxy address (upstream listeners bind loopback only, and the test is
/// outside vm-1's namespace).
fn lab_with_api(c: &mut Cluster) -> anyhow::Result<String> {
    c.formed(3)?;
    for n in ["vm-2", "vm-3"] {
        c.spawn_in(n, backend(), &[n, "8080"])?;
        c.register_http(n, "api", 8080)?;
    }
    let up = format!("{}:15001", c.agent("vm-1").ip);
    for want in ["vm-2", "vm-3"] {
        routable_on(c, "vm-1", "api", want)?;
    }
    eventually("api answers", Duration::from_secs(20), || {
        Ok(http_get_host(&up, "api", "http://api/")
            .ok()
            .filter(|r| r.0 == 200)
            .map(|_| ()))
    })?;
    Ok(up)
}

/// Waits until `observer` can route `service` to `node`: the node alive in its member
/// list and its instance healthy in its catalog. (Waiting for a response *from* a given
/// instance instead would depend on the latency-aware balancer's choices.)
fn routable_on(c: &Cluster, observer: &str, service: &str, node: &str) -> anyhow::Result<()> {
    let agent = c.agent(observer);
    eventually(
        &format!("{service} on {node} routable from {observer}"),
        Duration::from_secs(20),
        || {
            let alive = agent.status_of(node)?.as_deref() == Some("alive");
            let v: Vec<serde_json::Value> =
                serde_json::from_str(&http_get(&agent.api(), "/v1/services")?)?;
            let healthy = v
                .iter()
                .filter(|s| s["service"] == service)
                .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
                .any(|i| i["node"] == node && i["health"] == "passing");
            Ok((alive && healthy).then_some(()))
        },
    )
}

/// One request of the steady client: when it started, how long it took, who answered.
struct Sample {
    at: Instant,
    took: Duration,
    answered_by: Option<String>,
}

/// Sends a GET for `http://api/` (through the HTTP proxy) every 20 ms until stopped.
fn steady_client(up: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Sample>> {
    steady_client_on(up, "http://api/", stop)
}

/// Sends a GET for `target` with `Host: api` to `up` every 20 ms until stopped.
fn steady_client_on(
    up: String,
    target: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let at = Instant::now();
            let answered_by = http_get_host(&up, "api", target)
                .ok()
                .filter(|r| r.0 == 200)
                .and_then(|r| r.1.split("hello from ").nth(1).map(|s| s[..4].to_owned()));
            out.push(Sample {
                at,
                took: at.elapsed(),
                answered_by,
            });
            std::thread::sleep(Duration::from_millis(20));
        }
        out
    })
}

/// Scenario 10: a partition isolates vm-3. vm-1 marks it failed within the detection
/// bound and stops routing to it; after healing it is alive and serves again.
#[test]
fn partition_isolates_a_node_then_heals() -> anyhow::Result<()> {
    let mut c = Cluster::new_lab("partition_isolates_a_node_then_heals")?;
    let up = lab_with_api(&mut c)?;
    let stop = Arc::new(AtomicBool::new(false));
    let client = steady_client(up.clone(), stop.clone());
    std::thread::sleep(Duration::from_secs(1));

    let cut = Instant::now();
    c.lab().isolate(c.host("vm-3"))?;
    let vm1 = c.agent("vm-1");
    eventually("vm-3 failed on vm-1", Duration::from_secs(10), || {
        Ok((vm1.status_of("vm-3")?.as_deref() == Some("failed")).then_some(()))
    })?;
    let detected = cut.elapsed();
    std::thread::sleep(Duration::from_secs(if long() { 30 } else { 3 }));

    c.lab().heal()?;
    let healed = Instant::now();
    c.wait_all_alive(
        &["vm-1", "vm-2", "vm-3"],
        &["vm-1", "vm-2", "vm-3"],
        Duration::from_secs(20),
    )?;
    routable_on(&c, "vm-1", "api", "vm-3")?;
    let back = healed.elapsed();
    stop.store(true, Ordering::SeqCst);
    let samples = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))?;

    // Requests started after vm-1 knew vm-3 was gone must all succeed, on vm-2.
    let settled = cut + detected + Duration::from_millis(500);
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at > settled && s.at < healed)
        .collect();
    let failed_after = after.iter().filter(|s| s.answered_by.is_none()).count();
    let to_vm3_after = after
        .iter()
        .filter(|s| s.answered_by.as_deref() == Some("vm-3"))
        .count();
    let during_cut: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= cut && s.at <= settled)
        .collect();
    let failed_during = during_cut
        .iter()
        .filter(|s| s.answered_by.is_none())
        .count();
    let slowest = during_cut.iter().map(|s| s.took).max().unwrap_or_default();
    report(
        "10 partition isolates a node",
        if failed_after == 0 && to_vm3_after == 0 { "pass" } else { "FAIL" },
        &format!(
            "failed on all observers in {detected:.2?}; {failed_during} of {} requests failed between cut and detection (slowest {slowest:.2?}); {failed_after} of {} failed after; serving again {back:.2?} after healing",
            during_cut.len(),
            after.len()
        ),
    );
    assert_eq!(
        failed_after, 0,
        "requests failed after the failure was detected"
    );
    assert_eq!(to_vm3_after, 0, "requests went to the isolated node");
    assert!(
        detected < Duration::from_secs(5),
        "detection took {detected:?}"
    );
    Ok(())
}

/// Statuses every agent reports for every other, sampled every 250 ms for `d`; returns
/// how many samples were not `alive`.
fn not_alive_samples(c: &Cluster, names: &[&str], d: Duration) -> anyhow::Result<usize> {
    let t = Instant::now();
    let mut bad = 0;
    while t.elapsed() < d {
        for n in names {
            for m in c.agent(n).members()? {
                if m["status"] != "alive" {
                    bad += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(bad)
}

/// Scenario 9: 20 % loss on every link → nobody falsely failed; a one-way cut (vm-2 no
/// longer hears vm-1) → no flapping; after healing, catalog and config converge.
#[test]
fn loss_and_one_way_cuts_cause_no_false_failures() -> anyhow::Result<()> {
    let mut c = Cluster::new_lab("loss_and_one_way_cuts_cause_no_false_failures")?;
    c.formed(3)?;
    let names = ["vm-1", "vm-2", "vm-3"];
    let lossy = Duration::from_secs(if long() { 300 } else { 15 });
    for n in names {
        c.lab().loss(c.host(n), 20)?;
    }
    let false_failed = not_alive_samples(&c, &names, lossy)?;
    c.lab().heal()?;
    report(
        "9a 20 % loss on every link",
        if false_failed == 0 { "pass" } else { "FAIL" },
        &format!(
            "{} s, {false_failed} member samples not alive",
            lossy.as_secs()
        ),
    );
    assert_eq!(
        false_failed, 0,
        "members falsely marked failed under 20 % loss"
    );

    // One way: vm-2 stops hearing vm-1; vm-1 still hears vm-2, and vm-3 hears both.
    c.lab().cut_one_way(c.host("vm-2"), c.host("vm-1"))?;
    c.cli_ok("vm-1", &["route", "set", "during-cut", "--split", "v1=100"])?;
    let one_way = Duration::from_secs(if long() { 120 } else { 10 });
    let flaps = not_alive_samples(&c, &names, one_way)?;
    let reached = http_get(&c.agent("vm-2").api(), "/v1/config/route/during-cut").is_ok();
    c.lab().heal()?;
    let t = Instant::now();
    c.cli_ok("vm-2", &["route", "set", "after-heal", "--split", "v1=100"])?;
    for n in names {
        let api = c.agent(n).api();
        eventually(&format!("config on {n}"), Duration::from_secs(15), || {
            Ok((http_get(&api, "/v1/config/route/during-cut").is_ok()
                && http_get(&api, "/v1/config/route/after-heal").is_ok())
            .then_some(()))
        })?;
    }
    report(
        "9b one-way cut, then heal",
        if flaps == 0 { "pass" } else { "FAIL" },
        &format!(
            "{} s cut: {flaps} member samples not alive; write on vm-1 reached vm-2 during the cut: {reached}; converged {:.2?} after healing",
            one_way.as_secs(),
            t.elapsed()
        ),
    );
    assert_eq!(flaps, 0, "a one-way cut made members flap");
    Ok(())
}

/// Scenario 14: kill -9 at random moments while writing config and registering
/// services; every acknowledged write is there after the restart.
#[test]
fn kill_during_writes_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let mut c = Cluster::new("kill_during_writes_loses_no_acknowledged_write");
    c.bootstrap("vm-1", &["--access-log", "off"])?;
    let iterations = if long() { 100 } else { 8 };
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut total = 0;
    for i in 0..iterations {
        let stop = Arc::new(AtomicBool::new(false));
        let api = c.agent("vm-1").api();
        let writer = {
            let (stop, acked) = (stop.clone(), acked.clone());
            let bin = weft_tests::weft_bin();
            let dir = c.data_dir("vm-1");
            std::thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("w{i}-{k}");
                    let out = if k % 2 == 0 {
                        std::process::Command::new(&bin)
                            .args(["route", "set", &name, "--split", "v1=100"])
                            .env("WEFT_API", &api)
                            .env("WEFT_DATA_DIR", &dir)
                            .output()
                    } else {
                        std::process::Command::new(&bin)
                            .args(["service", "register", "--name", &name, "--port", "9"])
                            .env("WEFT_API", &api)
                            .env("WEFT_DATA_DIR", &dir)
                            .output()
                    };
                    if out.is_ok_and(|o| o.status.success()) {
                        acked.lock().unwrap_or_else(|e| e.into_inner()).push(name);
                    }
                    k += 1;
                }
            })
        };
        // A pseudo-random moment between 50 and 450 ms into the writes.
        std::thread::sleep(Duration::from_millis(50 + (i as u64 * 7919) % 400));
        c.agent_mut("vm-1").kill();
        stop.store(true, Ordering::SeqCst);
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))?;
        c.spawn("vm-1", &["--access-log", "off"]);
        c.wait_ready("vm-1")?;
        let api = c.agent("vm-1").api();
        let services = http_get(&api, "/v1/services")?;
        let written = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        total = written.len();
        for (k, name) in written.iter().enumerate() {
            let present = if name
                .split('-')
                .nth(1)
                .and_then(|k| k.parse::<u32>().ok())
                .is_some_and(|k| k % 2 == 0)
            {
                http_get(&api, &format!("/v1/config/route/{name}")).is_ok()
            } else {
                services.contains(&format!("\"{name}\""))
            };
            assert!(
                present,
                "acknowledged write {name} (#{k}) lost after kill -9 in iteration {i}"
            );
        }
    }
    report(
        "14 kill -9 during writes",
        "pass",
        &format!("{iterations} kills, {total} acknowledged writes (routes and services), none lost; the store opened every time"),
    );
    Ok(())
}

/// Scenario 16: a node whose store was lost (identity kept) rebuilds config and catalog
/// from its peers.
#[test]
fn lost_store_is_rebuilt_from_peers() -> anyhow::Result<()> {
    let mut c = Cluster::new("lost_store_is_rebuilt_from_peers");
    c.formed(3)?;
    c.cli_ok(
        "vm-1",
        &["route", "set", "reviews", "--split", "v1=90,v2=10"],
    )?;
    c.register("vm-2", &["--name", "api", "--port", "9"])?;
    let api3 = c.agent("vm-3").api();
    eventually("route and service on vm-3", Duration::from_secs(15), || {
        Ok((http_get(&api3, "/v1/config/route/reviews").is_ok()
            && http_get(&api3, "/v1/services")?.contains("\"api\""))
        .then_some(()))
    })?;
    c.agent_mut("vm-3").kill();
    let store = c.data_dir("vm-3").join("store");
    std::fs::remove_dir_all(&store)?;
    let t = Instant::now();
    c.spawn("vm-3", &[]);
    c.wait_ready("vm-3")?;
    eventually("rebuilt on vm-3", Duration::from_secs(20), || {
        Ok((http_get(&api3, "/v1/config/route/reviews").is_ok()
            && http_get(&api3, "/v1/services")?.contains("\"api\""))
        .then_some(()))
    })?;
    report(
        "16 store lost, identity kept",
        "pass",
        &format!(
            "route and remote service back on the node {:.2?} after restart",
            t.elapsed()
        ),
    );
    Ok(())
}

/// A tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Scenario 15: the data dir's disk is full: the agent keeps serving and routing, writes
/// fail with a clear error, and it does not crash.
#[test]
fn full_disk_keeps_serving_and_refuses_writes_clearly() -> anyhow::Result<()> {
    let mut c = Cluster::new("full_disk_keeps_serving_and_refuses_writes_clearly");
    c.bootstrap("vm-1", &[])?;
    let dir = c.data_dir("vm-2");
    std::fs::create_dir_all(&dir)?;
    weft_tests::netlab::run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=8m",
            "tmpfs",
            &dir.display().to_string(),
        ],
    )?;
    let _mount = Tmpfs(dir.clone());
    c.join("vm-2", "vm-1", &[])?;
    let api = weft_tests::backends::Backend::http("api");
    c.register_http("vm-2", "api", api.port())?;
    // Fill the disk.
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler)?;
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    // sled may still have room in space it already allocated: write until refused, and
    // every write acknowledged on the way must be readable.
    let mut acked = 0;
    let mut refusal = None;
    for k in 0..400 {
        let name = format!("full-{k}");
        let out = c
            .agent("vm-2")
            .cli(&["route", "set", &name, "--split", "v1=100"]);
        if out.status.success() {
            acked += 1;
        } else {
            refusal = Some(String::from_utf8_lossy(&out.stderr).trim().to_owned());
            break;
        }
    }
    // Still alive, ready, and routing.
    let up = c.client_upstream("vm-1", "api", 19001)?;
    eventually("traffic through to vm-2", Duration::from_secs(15), || {
        Ok(http_get_host(&up, "api", "/")
            .ok()
            .filter(|r| r.0 == 200)
            .map(|_| ()))
    })?;
    http_get(&c.agent("vm-2").api(), "/readyz")?;
    let exited = c
        .agent_mut("vm-2")
        .wait_exit(Duration::from_millis(500))
        .is_ok();
    // Space back: writes work again.
    std::fs::remove_file(&filler)?;
    let again = c
        .agent("vm-2")
        .cli(&["route", "set", "after-full", "--split", "v1=100"])
        .status
        .success();
    // sled keeps an I/O error for good: a restart reopens the store.
    let t = Instant::now();
    c.agent_mut("vm-2").signal("TERM");
    c.agent_mut("vm-2").wait_exit(Duration::from_secs(10))?;
    c.spawn("vm-2", &[]);
    c.wait_ready("vm-2")?;
    let after_restart = c
        .agent("vm-2")
        .cli(&["route", "set", "after-restart", "--split", "v1=100"])
        .status
        .success();
    let kept = http_get(&c.agent("vm-2").api(), "/v1/config/route/full-0").is_ok();
    report(
        "15 full disk",
        if refusal.is_some() && !exited && after_restart && kept { "pass" } else { "FAIL" },
        &format!(
            "{acked} writes fitted in space already allocated, then refused with {refusal:?}; agent stayed ready and routing; space freed: writes work again without restart: {again} (sled keeps the I/O error), after a restart ({:.2?}): {after_restart}; acknowledged writes kept: {kept}",
            t.elapsed()
        ),
    );
    assert!(refusal.is_some(), "400 writes acknowledged on a full disk");
    assert!(
        after_restart,
        "writes still refused after space was freed and a restart"
    );
    assert!(kept, "a write acknowledged before the disk filled was lost");
    assert!(!exited, "the agent exited on a full disk");
    c.allow_error("No space left on device");
    c.allow_error("no space");
    Ok(())
}

/// vm-1..3 on loopback with `api` (a backend in this process) on vm-2 and vm-3 and an
/// upstream for it on vm-1; returns the upstream address and the backends.
fn loopback_with_api(
    c: &mut Cluster,
    ca_args: &[&str],
) -> anyhow::Result<(String, Vec<weft_tests::backends::Backend>)> {
    c.bootstrap("vm-1", ca_args)?;
    c.join("vm-2", "vm-1", &[])?;
    c.join("vm-3", "vm-1", &[])?;
    let mut backends = Vec::new();
    for n in ["vm-2", "vm-3"] {
        let b = weft_tests::backends::Backend::http(n);
        c.register_http(n, "api", b.port())?;
        backends.push(b);
    }
    let up = c.client_upstream("vm-1", "api", 19001)?;
    for want in ["vm-2", "vm-3"] {
        routable_on(c, "vm-1", "api", want)?;
    }
    eventually("api answers", Duration::from_secs(20), || {
        Ok(http_get_host(&up, "api", "/")
            .ok()
            .filter(|r| r.0 == 200)
            .map(|_| ()))
    })?;
    Ok((up, backends))
}

/// Scenario 5: 10 s certificates under steady traffic: every node renews several times
/// and not one request fails.
#[test]
fn rotation_soak_with_ten_second_certificates() -> anyhow::Result<()> {
    let mut c = Cluster::new("rotation_soak_with_ten_second_certificates");
    let (up, _backends) = loopback_with_api(&mut c, &["--leaf-ttl", "10s"])?;
    let d = Duration::from_secs(if long() { 300 } else { 25 });
    let stop = Arc::new(AtomicBool::new(false));
    let client = steady_client_on(up, "/", stop.clone());
    std::thread::sleep(d);
    stop.store(true, Ordering::SeqCst);
    let samples = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))?;
    let failed = samples.iter().filter(|s| s.answered_by.is_none()).count();
    let renewals: usize = ["vm-1", "vm-2", "vm-3"]
        .iter()
        .map(|n| c.agent(n).log_text().matches("certificate renewed").count())
        .sum();
    let handshake_errors: usize = ["vm-1", "vm-2", "vm-3"]
        .iter()
        .map(|n| c.agent(n).log_text().matches("handshake").count())
        .sum();
    report(
        "5 rotation soak, 10 s certificates",
        if failed == 0 && handshake_errors == 0 && renewals >= 6 { "pass" } else { "FAIL" },
        &format!(
            "{} s, {renewals} renewals, {} requests, {failed} failed, {handshake_errors} handshake errors logged",
            d.as_secs(),
            samples.len()
        ),
    );
    assert_eq!(failed, 0, "requests failed during rotation");
    assert_eq!(handshake_errors, 0, "handshake errors during rotation");
    assert!(renewals >= 6, "only {renewals} renewals in {d:?}");
    Ok(())
}

/// Scenario 12: a rolling restart (SIGTERM, restart, next) of both `api` nodes under
/// steady load: no idempotent request fails.
#[test]
fn rolling_restart_under_load_fails_no_request() -> anyhow::Result<()> {
    let mut c = Cluster::new("rolling_restart_under_load_fails_no_request");
    let (up, _backends) = loopback_with_api(&mut c, &[])?;
    let stop = Arc::new(AtomicBool::new(false));
    let client = steady_client_on(up.clone(), "/", stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let rounds = if long() { 5 } else { 1 };
    let t = Instant::now();
    for _ in 0..rounds {
        for n in ["vm-2", "vm-3"] {
            c.agent_mut(n).signal("TERM");
            c.agent_mut(n).wait_exit(Duration::from_secs(15))?;
            c.spawn(n, &[]);
            c.wait_ready(n)?;
            c.wait_all_alive(
                &["vm-1"],
                &["vm-1", "vm-2", "vm-3"],
                Duration::from_secs(15),
            )?;
            // The restarted node is routable again before the next goes down.
            routable_on(&c, "vm-1", "api", n)?;
        }
    }
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let samples = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))?;
    let failed = samples.iter().filter(|s| s.answered_by.is_none()).count();
    let slowest = samples.iter().map(|s| s.took).max().unwrap_or_default();
    report(
        "12 rolling restart under load",
        if failed == 0 { "pass" } else { "FAIL" },
        &format!(
            "{rounds} round(s) over 2 nodes in {took:.2?}: {} requests, {failed} failed, slowest {slowest:.2?}",
            samples.len()
        ),
    );
    assert_eq!(failed, 0, "requests failed during the rolling restart");
    Ok(())
}

/// Scenario 11: vm-4 loses the CA and all gossip at once (only the QUIC data path to the
/// `api` nodes still works): it marks everyone failed and keeps routing to the instances
/// it last knew, on certificates that are still valid.
#[test]
fn cut_off_node_keeps_routing_on_what_it_last_knew() -> anyhow::Result<()> {
    let mut c = Cluster::new_lab("cut_off_node_keeps_routing_on_what_it_last_knew")?;
    c.formed(4)?;
    for n in ["vm-2", "vm-3"] {
        c.spawn_in(n, backend(), &[n, "8080"])?;
        c.register_http(n, "api", 8080)?;
    }
    let proxy = format!("{}:15001", c.agent("vm-4").ip);
    for want in ["vm-2", "vm-3"] {
        routable_on(&c, "vm-4", "api", want)?;
    }
    eventually("api via vm-4", Duration::from_secs(20), || {
        Ok(http_get_host(&proxy, "api", "http://api/")
            .ok()
            .filter(|r| r.0 == 200)
            .map(|_| ()))
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let client = steady_client(proxy.clone(), stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let cut = Instant::now();
    let (v1, v2, v3, v4) = (
        c.host("vm-1"),
        c.host("vm-2"),
        c.host("vm-3"),
        c.host("vm-4"),
    );
    c.lab().cut(v4, v1)?;
    c.lab().cut_gossip(v4, v2)?;
    c.lab().cut_gossip(v4, v3)?;
    let vm4 = c.agent("vm-4");
    eventually(
        "vm-4 sees every peer failed",
        Duration::from_secs(15),
        || {
            Ok(["vm-1", "vm-2", "vm-3"]
                .iter()
                .all(|n| vm4.status_of(n).ok().flatten().as_deref() == Some("failed"))
                .then_some(()))
        },
    )?;
    let detected = cut.elapsed();
    std::thread::sleep(Duration::from_secs(if long() { 60 } else { 5 }));
    stop.store(true, Ordering::SeqCst);
    let samples = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))?;
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at > cut + detected).collect();
    let failed = after.iter().filter(|s| s.answered_by.is_none()).count();
    let failed_total = samples
        .iter()
        .filter(|s| s.at > cut && s.answered_by.is_none())
        .count();
    report(
        "11 control side unreachable, data path up",
        if failed == 0 { "pass" } else { "FAIL" },
        &format!(
            "every peer failed on vm-4 after {detected:.2?}; {} requests after that, {failed} failed ({failed_total} failed since the cut)",
            after.len()
        ),
    );
    assert_eq!(
        failed, 0,
        "requests failed while routing on the last known catalog"
    );
    Ok(())
}

/// Scenario 6: a node revoked while it holds an open tunnel: the connection carrying it
/// is closed within about a gossip round of the revocation reaching the peer, not only
/// new handshakes refused.
#[test]
fn revocation_closes_open_connections() -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let mut c = Cluster::new("revocation_closes_open_connections");
    c.formed(3)?;
    let echo = weft_tests::backends::Backend::echo();
    c.register(
        "vm-2",
        &["--name", "echo", "--port", &echo.port().to_string()],
    )?;
    let up = c.client_upstream("vm-3", "echo", 19002)?;
    let mut tunnel = eventually(
        "tunnel through vm-3 to vm-2",
        Duration::from_secs(20),
        || {
            let Ok(mut s) = std::net::TcpStream::connect(&up) else {
                return Ok(None);
            };
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"ping")?;
            let mut buf = [0u8; 4];
            Ok(s.read_exact(&mut buf)
                .ok()
                .filter(|_| &buf == b"ping")
                .map(|_| s))
        },
    )?;
    tunnel.set_read_timeout(Some(Duration::from_secs(15)))?;
    let t = Instant::now();
    c.cli_ok("vm-1", &["node", "revoke", "vm-3"])?;
    let vm2 = c.agent("vm-2");
    eventually("vm-3 revoked on vm-2", Duration::from_secs(10), || {
        Ok(vm2
            .members()?
            .iter()
            .any(|m| m["name"] == "vm-3" && m["revoked"] == true)
            .then_some(()))
    })?;
    let seen = t.elapsed();
    // The tunnel ends: EOF or reset, well before QUIC's 10 s idle timeout (keep-alives
    // would hold a live connection open for ever).
    let mut buf = [0u8; 16];
    let end = tunnel.read(&mut buf);
    let closed = t.elapsed();
    let ok = matches!(end, Ok(0) | Err(_)) && closed < Duration::from_secs(5);
    report(
        "6 revoked node's open connections",
        if ok { "pass" } else { "FAIL" },
        &format!("revocation seen on the peer after {seen:.2?}; open tunnel closed {closed:.2?} after the revoke ({end:?})"),
    );
    assert!(
        ok,
        "tunnel still open {closed:?} after the revocation: {end:?}"
    );
    c.allow_error("revoked");
    Ok(())
}

/// Scenario 18: ambiguous or hostile HTTP from an app is refused with 400 before anything
/// is forwarded; a mixed-case Host names the same service.
#[test]
fn hostile_http_is_refused_before_forwarding() -> anyhow::Result<()> {
    use weft_tests::backends::http_raw;
    let mut c = Cluster::new("hostile_http_is_refused_before_forwarding");
    c.formed(2)?;
    let reviews = weft_tests::backends::Backend::http("reviews");
    c.register_http("vm-2", "reviews", reviews.port())?;
    let up = c.client_upstream("vm-1", "reviews", 19001)?;
    let proxy = format!("{}:15001", c.agent("vm-1").ip);
    eventually("reviews reachable", Duration::from_secs(20), || {
        Ok(http_get_host(&up, "reviews", "/")
            .ok()
            .filter(|r| r.0 == 200)
            .map(|_| ()))
    })?;
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

/// Scenario 1: a join token replayed from a second host, and reused by the same host
/// after wiping its data dir, is refused, and the CA logs the token id.
#[test]
fn join_token_replay_and_reuse_after_wipe_are_refused() -> anyhow::Result<()> {
    let mut c = Cluster::new("join_token_replay_and_reuse_after_wipe_are_refused");
    c.bootstrap("vm-1", &[])?;
    let seed = c.agent("vm-1").ip.to_string();
    let token = c.agent("vm-1").token("10m")?;
    let token_id = token.split('.').nth(1).unwrap_or_default().to_owned();
    c.join_with_token("vm-2", &seed, &token)?;
    // Replay from another host.
    c.spawn("vm-3", &["--join", &seed, "--token", &token]);
    let replay = c.agent_mut("vm-3").wait_exit(Duration::from_secs(20))?;
    // Reuse after a wipe.
    c.agent_mut("vm-2").kill();
    std::fs::remove_dir_all(c.data_dir("vm-2"))?;
    c.spawn("vm-2", &["--join", &seed, "--token", &token]);
    let reuse = c.agent_mut("vm-2").wait_exit(Duration::from_secs(20))?;
    let ca_log = c.agent("vm-1").log_text();
    let logged = ca_log
        .lines()
        .filter(|l| l.contains(&token_id) && (l.contains("refused") || l.contains("WARN")))
        .count();
    let reasons = [
        c.agent("vm-3")
            .log_text()
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned(),
        c.agent("vm-2")
            .log_text()
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned(),
    ];
    let ok = replay != Some(0) && reuse != Some(0) && logged >= 2;
    report(
        "1 join token replay and reuse after wipe",
        if ok { "pass" } else { "FAIL" },
        &format!("both refused ({replay:?}, {reuse:?}): {reasons:?}; CA log lines naming token id {token_id}: {logged}"),
    );
    assert!(
        ok,
        "replay {replay:?}, reuse {reuse:?}, CA lines {logged}\n{ca_log}"
    );
    Ok(())
}

/// How many times `name` logged a certificate renewal.
fn renewals(c: &Cluster, name: &str) -> usize {
    c.agent(name)
        .log_text()
        .matches("certificate renewed")
        .count()
}

/// Waits for `name`'s next renewal, so that its certificate has a whole life ahead.
fn wait_fresh_certificate(c: &Cluster, name: &str) -> anyhow::Result<()> {
    let seen = renewals(c, name);
    eventually(&format!("{name} renews"), Duration::from_secs(30), || {
        Ok((renewals(c, name) > seen).then_some(()))
    })
}

/// Scenario 4: the CA is unreachable from vm-2 for longer than half its certificate's
/// life: vm-2 keeps serving, retries, and warns; the CA back before expiry → renewed, no
/// request lost. Cut past expiry: vm-2 fails closed (not ready, its connections closed,
/// new handshakes refused by its peers) — nothing is carried on an expired identity.
#[test]
fn ca_unreachable_keeps_serving_then_fails_closed_at_expiry() -> anyhow::Result<()> {
    let mut c = Cluster::new_lab("ca_unreachable_keeps_serving_then_fails_closed_at_expiry")?;
    const TTL: u64 = 12;
    c.bootstrap("vm-1", &["--leaf-ttl", &format!("{TTL}s")])?;
    c.join("vm-2", "vm-1", &[])?;
    c.join("vm-3", "vm-1", &[])?;
    c.wait_all_alive(
        &["vm-1", "vm-2", "vm-3"],
        &["vm-1", "vm-2", "vm-3"],
        Duration::from_secs(15),
    )?;
    c.spawn_in("vm-2", backend(), &["vm-2", "8080"])?;
    c.register_http("vm-2", "api", 8080)?;
    let proxy = format!("{}:15001", c.agent("vm-3").ip);
    eventually("api via vm-3", Duration::from_secs(20), || {
        Ok(http_get_host(&proxy, "api", "http://api/")
            .ok()
            .filter(|r| r.0 == 200)
            .map(|_| ()))
    })?;
    let (v1, v2) = (c.host("vm-1"), c.host("vm-2"));

    // A: cut for 3/4 of the life, then back.
    wait_fresh_certificate(&c, "vm-2")?;
    let failures_before = c.agent("vm-2").log_text().matches("renewal failed").count();
    c.lab().cut(v1, v2)?;
    let stop = Arc::new(AtomicBool::new(false));
    let client = steady_client(proxy.clone(), stop.clone());
    std::thread::sleep(Duration::from_secs(TTL * 3 / 4));
    let retries = c.agent("vm-2").log_text().matches("renewal failed").count() - failures_before;
    let left = c.agent("vm-2").metric("weft_cert_expiry_seconds")?;
    c.lab().heal()?;
    let healed = Instant::now();
    let seen = renewals(&c, "vm-2");
    eventually(
        "vm-2 renews once the CA is back",
        Duration::from_secs(TTL / 4 + 2),
        || Ok((renewals(&c, "vm-2") > seen).then_some(())),
    )?;
    let renewed_after = healed.elapsed();
    stop.store(true, Ordering::SeqCst);
    let samples = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))?;
    let failed_a = samples.iter().filter(|s| s.answered_by.is_none()).count();
    report(
        "4a CA unreachable past half the certificate life",
        if failed_a == 0 && retries >= 1 { "pass" } else { "FAIL" },
        &format!(
            "{TTL} s certificates, CA cut for {} s: {retries} renewal retries logged, {left:.0} s of certificate left (metric), renewed {renewed_after:.2?} after the CA came back; {} requests, {failed_a} failed",
            TTL * 3 / 4,
            samples.len()
        ),
    );
    assert_eq!(
        failed_a, 0,
        "requests failed while the certificate was still valid"
    );
    // Renewal starts at 40–60 % of the life: one or more attempts fail before the CA is back.
    assert!(
        retries >= 1,
        "no renewal attempt failed while the CA was away"
    );

    // B: cut past expiry.
    wait_fresh_certificate(&c, "vm-2")?;
    c.lab().cut(v1, v2)?;
    let cut = Instant::now();
    let api2 = c.agent("vm-2").api();
    eventually(
        "vm-2 not ready after expiry",
        Duration::from_secs(TTL + 5),
        || Ok(http_get(&api2, "/readyz").is_err().then_some(())),
    )?;
    let expired_after = cut.elapsed();
    let stop = Arc::new(AtomicBool::new(false));
    let client = steady_client(proxy.clone(), stop.clone());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let samples = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))?;
    let served = samples.iter().filter(|s| s.answered_by.is_some()).count();
    c.lab().heal()?;
    report(
        "4b CA unreachable past expiry",
        if served == 0 { "pass" } else { "FAIL" },
        &format!(
            "not ready {expired_after:.2?} after the cut ({TTL} s certificate); {served} of {} requests served on the expired identity; the node then needs a new join token",
            samples.len()
        ),
    );
    assert_eq!(
        served, 0,
        "traffic still flowed through a node with an expired certificate"
    );
    c.allow_error("expired");
    c.allow_error("certificate");
    Ok(())
}

/// Scenario 8: gossip key rotation — install a new key everywhere, switch sealing to it,
/// remove the old one — with no member ever seen failed; the new keyring survives a
/// restart and is what a node joining afterwards receives.
#[test]
fn gossip_key_rotation_marks_no_member_failed() -> anyhow::Result<()> {
    let mut c = Cluster::new("gossip_key_rotation_marks_no_member_failed");
    c.formed(3)?;
    let names = ["vm-1", "vm-2", "vm-3"];
    let keys = |c: &Cluster, n: &str| -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&http_get(
            &c.agent(n).api(),
            "/v1/gossip/keys",
        )?)?)
    };
    let old = keys(&c, "vm-1")?["primary"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let out = c.cli_ok("vm-2", &["gossip-key", "install", "--json"])?;
    let results: serde_json::Value = serde_json::from_str(&out)?;
    let applied = results
        .as_array()
        .map_or(0, |r| r.iter().filter(|x| x["error"].is_null()).count());
    let new = keys(&c, "vm-2")?["keys"]
        .as_array()
        .and_then(|k| k.iter().filter_map(|x| x.as_str()).find(|k| *k != old))
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(!new.is_empty() && applied == 3, "install: {out}");
    let mut bad = not_alive_samples(&c, &names, Duration::from_secs(2))?;
    c.cli_ok("vm-3", &["gossip-key", "use", &new])?;
    bad += not_alive_samples(&c, &names, Duration::from_secs(3))?;
    // Removing the key in use is refused; removing the old one works.
    let refused = !c
        .agent("vm-1")
        .cli(&["gossip-key", "remove", &new])
        .status
        .success();
    c.cli_ok("vm-1", &["gossip-key", "remove", &old])?;
    bad += not_alive_samples(&c, &names, Duration::from_secs(4))?;
    for n in names {
        let k = keys(&c, n)?;
        anyhow::ensure!(
            k["primary"] == new.as_str() && k["keys"].as_array().map_or(0, Vec::len) == 1,
            "{n}: {k}"
        );
    }
    // Persisted: a restarted node still speaks the new key; a new node gets it.
    c.agent_mut("vm-3").kill();
    c.spawn("vm-3", &[]);
    c.wait_ready("vm-3")?;
    c.join("vm-4", "vm-1", &[])?;
    c.wait_all_alive(
        &["vm-1", "vm-2", "vm-3", "vm-4"],
        &["vm-1", "vm-2", "vm-3", "vm-4"],
        Duration::from_secs(15),
    )?;
    let k4 = keys(&c, "vm-4")?;
    let unknown_key: f64 = names
        .iter()
        .map(|n| {
            c.agent(n)
                .metric("weft_gossip_dropped_total{reason=\"unknown_key\"}")
                .unwrap_or(0.0)
        })
        .sum();
    report(
        "8 gossip key rotation",
        if bad == 0 && refused && k4["primary"] == new.as_str() { "pass" } else { "FAIL" },
        &format!(
            "{old} → {new} on 3 nodes in three steps: {bad} member samples not alive; removing the key in use refused: {refused}; {unknown_key} datagrams dropped for an unknown key; restart and a later join use the new key"
        ),
    );
    assert_eq!(bad, 0, "members seen not alive during the rotation");
    assert!(refused, "removing the key in use was accepted");
    assert_eq!(
        k4["primary"],
        new.as_str(),
        "a node joining after the rotation: {k4}"
    );
    Ok(())
}

/// Scenarios 2 and 3: a member, over its own authenticated control connection to the CA,
/// asks for certificates the CA must not grant — two URI SANs, a CA bit, a foreign trust
/// domain, another node's name — and is refused each time; what the CA does issue
/// carries only the fields the CA chooses.
#[test]
fn ca_refuses_what_it_does_not_choose_over_the_wire() -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    use weft_node::rpc::{b64, unb64, CtlRequest, CtlResponse, MAX_RESPONSE};
    let mut c = Cluster::new("ca_refuses_what_it_does_not_choose_over_the_wire");
    c.formed(3)?;
    let id = weft_node::identity::IdentityFiles::new(&c.agent("vm-2").data_dir).load()?;
    let trust = Arc::new(weft_ca::TrustRoot::new(
        id.info.cluster.clone(),
        id.ca_der.clone(),
    )?);
    let certs = weft_node::tls::CertStore::new(&id.key, &id.cert_der, &id.ca_der)?;
    let config = weft_node::tls::ctl_client_config(&certs, trust, Arc::default())?;
    let ca_addr = std::net::SocketAddr::from((c.agent("vm-1").ip, 7443));
    let csr = |cn: &str, uris: &[&str], ca: bool| -> anyhow::Result<Vec<u8>> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = uris
            .iter()
            .map(|u| Ok(SanType::URI((*u).try_into()?)))
            .collect::<anyhow::Result<_>>()?;
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        Ok(p.serialize_request(&key)?.der().to_vec())
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "two URI SANs",
            csr(
                "vm-2",
                &["spiffe://weft/node/vm-2", "spiffe://weft/node/vm-1"],
                false,
            )?,
        ),
        ("a CA bit", csr("vm-2", &["spiffe://weft/node/vm-2"], true)?),
        (
            "a foreign trust domain",
            csr("vm-2", &["spiffe://other/node/vm-2"], false)?,
        ),
        (
            "another node's name (vm-3)",
            csr("vm-3", &["spiffe://weft/node/vm-3"], false)?,
        ),
    ];
    let rt = tokio::runtime::Runtime::new()?;
    let ask = |der: &[u8]| -> anyhow::Result<CtlResponse> {
        rt.block_on(async {
            let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
            let conn = endpoint
                .connect_with(config.clone(), ca_addr, "vm-1")?
                .await?;
            let r = weft_node::rpc::call(&conn, &CtlRequest::Renew { csr: b64(der) }, MAX_RESPONSE)
                .await;
            conn.close(0u32.into(), b"");
            endpoint.close(0u32.into(), b"");
            Ok(r?)
        })
    };
    let mut refusals = Vec::new();
    for (what, der) in &cases {
        match ask(der)? {
            CtlResponse::Error { message, .. } => refusals.push(format!("{what}: {message}")),
            other => anyhow::bail!("the CA granted a CSR with {what}: {other:?}"),
        }
    }
    // A plain CSR is granted, and the certificate holds only what the CA chose.
    let cert = match ask(&csr("vm-2", &[], false)?)? {
        CtlResponse::Cert { cert } => cert,
        other => anyhow::bail!("a plain renewal was refused: {other:?}"),
    };
    let der = unb64(&cert, "cert")?;
    let (_, x) = x509_parser::parse_x509_certificate(&der)?;
    let sans: Vec<String> = x
        .subject_alternative_name()?
        .map(|s| {
            s.value
                .general_names
                .iter()
                .map(|g| g.to_string())
                .collect()
        })
        .unwrap_or_default();
    let is_ca = x.basic_constraints()?.is_some_and(|b| b.value.ca);
    let fields_ok = sans == ["URI(spiffe://weft/node/vm-2)"] && !is_ca;
    report(
        "2-3 CSR policy over the wire",
        if fields_ok { "pass" } else { "FAIL" },
        &format!(
            "{} refused ({}); a plain CSR from vm-2 got SANs {sans:?}, CA bit {is_ca}",
            refusals.len(),
            refusals.join("; ")
        ),
    );
    assert!(fields_ok, "issued certificate: SANs {sans:?}, CA {is_ca}");
    Ok(())
}

/// Scenario 4 with 24-hour certificates and a stepped clock (the certificate logic's test
/// clock on vm-2, not the host's): CA unreachable and 15 h later → renewal retried and
/// warned about, traffic still served; 25 h later → vm-2 fails closed; clock back and
/// CA back → it serves again.
#[test]
fn stepped_clock_drives_renewal_and_expiry_of_day_long_certificates() -> anyhow::Result<()> {
    let mut c =
        Cluster::new_lab("stepped_clock_drives_renewal_and_expiry_of_day_long_certificates")?;
    let clock = c.data_dir("clock-offset");
    std::fs::create_dir_all(clock.parent().unwrap_or(Path::new("/tmp")))?;
    std::fs::write(&clock, "0")?;
    c.set_env("vm-2", "WEFT_TEST_CLOCK_FILE", &clock.display().to_string());
    c.bootstrap("vm-1", &[])?;
    c.join("vm-2", "vm-1", &[])?;
    c.join("vm-3", "vm-1", &[])?;
    c.spawn_in("vm-2", backend(), &["vm-2", "8080"])?;
    c.register_http("vm-2", "api", 8080)?;
    routable_on(&c, "vm-3", "api", "vm-2")?;
    let proxy = format!("{}:15001", c.agent("vm-3").ip);
    let served = |c: &Cluster| {
        let _ = c;
        http_get_host(&proxy, "api", "http://api/").is_ok_and(|r| r.0 == 200)
    };
    eventually("api via vm-3", Duration::from_secs(20), || {
        Ok(served(&c).then_some(()))
    })?;
    let (v1, v2) = (c.host("vm-1"), c.host("vm-2"));

    c.lab().cut(v1, v2)?;
    std::fs::write(&clock, (15 * 3600).to_string())?;
    eventually(
        "renewal attempted and failed",
        Duration::from_secs(20),
        || {
            Ok(c.agent("vm-2")
                .log_text()
                .contains("certificate renewal failed")
                .then_some(()))
        },
    )?;
    let left_h = c.agent("vm-2").metric("weft_cert_expiry_seconds")? / 3600.0;
    let still_served = (0..10).filter(|_| served(&c)).count();

    std::fs::write(&clock, (25 * 3600).to_string())?;
    let api2 = c.agent("vm-2").api();
    eventually(
        "vm-2 not ready past expiry",
        Duration::from_secs(10),
        || Ok(http_get(&api2, "/readyz").is_err().then_some(())),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let served_expired = (0..10).filter(|_| served(&c)).count();

    std::fs::write(&clock, "0")?;
    c.lab().heal()?;
    eventually("vm-2 ready again", Duration::from_secs(10), || {
        Ok(http_get(&api2, "/readyz").ok().map(|_| ()))
    })?;
    eventually("api served again", Duration::from_secs(20), || {
        Ok(served(&c).then_some(()))
    })?;
    let ok = still_served == 10 && served_expired == 0 && (8.0..10.0).contains(&left_h);
    report(
        "4c stepped clock, 24 h certificates",
        if ok { "pass" } else { "FAIL" },
        &format!(
            "+15 h with the CA cut: renewal failed and retried, {left_h:.1} h left on the metric, {still_served}/10 requests served; +25 h: not ready, {served_expired}/10 served; clock and CA back: ready and serving"
        ),
    );
    assert!(
        ok,
        "served {still_served}/10 then {served_expired}/10; {left_h} h left"
    );
    c.allow_error("expired");
    c.allow_error("certificate");
    Ok(())
}

//! The disk under the store (scenarios 14–16): kill -9 in the middle of writes, a full
//! disk, and a store deleted while the node's identity is kept. Asserts that no
//! acknowledged write is ever lost and the store always reopens; that on a full disk the
//! agent stays up, ready and routing while it refuses writes with a clear error, and
//! writes again after a restart; and that a lost store is rebuilt from the peers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weft_tests::backends::Backend;
use weft_tests::{eventually, eventually_http, http_get, Cluster};

use crate::common::{long, report};

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
                    let args = if k % 2 == 0 {
                        vec!["route", "set", "--force", &name, "--split", "v1=100"]
                    } else {
                        vec!["service", "register", "--name", &name, "--port", "9"]
                    };
                    let out = std::process::Command::new(&bin)
                        .args(args)
                        .env("WEFT_API", &api)
                        .env("WEFT_DATA_DIR", &dir)
                        .output();
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
        &[
            "route",
            "set",
            "--force",
            "reviews",
            "--split",
            "v1=90,v2=10",
        ],
    )?;
    c.register("vm-2", &["--name", "api", "--port", "9"])?;
    let api3 = c.agent("vm-3").api();
    let route_and_service = || -> anyhow::Result<Option<()>> {
        Ok((http_get(&api3, "/v1/config/route/reviews").is_ok()
            && http_get(&api3, "/v1/services")?.contains("\"api\""))
        .then_some(()))
    };
    eventually(
        "route and service on vm-3",
        Duration::from_secs(15),
        route_and_service,
    )?;
    c.agent_mut("vm-3").kill();
    let store = c.data_dir("vm-3").join("store");
    std::fs::remove_dir_all(&store)?;
    let t = Instant::now();
    c.spawn("vm-3", &[]);
    c.wait_ready("vm-3")?;
    eventually(
        "rebuilt on vm-3",
        Duration::from_secs(20),
        route_and_service,
    )?;
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
    let api = Backend::http("api");
    c.register_http("vm-2", "api", api.port())?;
    // `weft route set NAME --split v1=100` on vm-2.
    let route_set = |c: &Cluster, name: &str| {
        c.agent("vm-2")
            .cli(&["route", "set", "--force", name, "--split", "v1=100"])
    };
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
        let out = route_set(&c, &format!("full-{k}"));
        if out.status.success() {
            acked += 1;
        } else {
            refusal = Some(String::from_utf8_lossy(&out.stderr).trim().to_owned());
            break;
        }
    }
    // Still alive, ready, and routing.
    let up = c.client_upstream("vm-1", "api", 19001)?;
    eventually_http(
        "traffic through to vm-2",
        Duration::from_secs(15),
        &up,
        "api",
        "/",
        Some(200),
    )?;
    http_get(&c.agent("vm-2").api(), "/readyz")?;
    let exited = c
        .agent_mut("vm-2")
        .wait_exit(Duration::from_millis(500))
        .is_ok();
    // Space back: writes work again.
    std::fs::remove_file(&filler)?;
    let again = route_set(&c, "after-full").status.success();
    // sled keeps an I/O error for good: a restart reopens the store.
    let t = Instant::now();
    c.agent_mut("vm-2").signal("TERM");
    c.agent_mut("vm-2").wait_exit(Duration::from_secs(10))?;
    c.spawn("vm-2", &[]);
    c.wait_ready("vm-2")?;
    let after_restart = route_set(&c, "after-restart").status.success();
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

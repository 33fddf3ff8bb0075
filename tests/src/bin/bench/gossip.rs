//! Gossip at scale: many agents (separate processes) on one subnet. Measures how long a
//! new service and a config write take to be visible on every agent, how long a
//! `kill -9`ed agent takes to be marked failed everywhere, and the gossip bytes each agent
//! sends. The lossy variant runs the same inside a network namespace whose loopback drops
//! 20 % of UDP datagrams at random (nftables `numgen random`: this machine's kernel has no
//! netem; TCP is left alone so the harness's own API polling is not what gets slower).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_tests::{http_get, Cluster};

use crate::report::{Goal, Report};

/// How many agents and repetitions.
pub struct Size {
    /// Agents.
    pub agents: usize,
    /// Services registered / config writes / kills measured.
    pub reps: usize,
    /// Window for bytes/s.
    pub window: Duration,
}

impl Size {
    /// The full or quick size.
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                agents: 8,
                reps: 1,
                window: Duration::from_secs(3),
            }
        } else {
            Self {
                agents: 50,
                reps: 10,
                window: Duration::from_secs(20),
            }
        }
    }
}

fn name(i: usize) -> String {
    format!("n{:02}", i + 1)
}

/// Starts `n` agents: one bootstrap, the rest joining through it at once.
pub fn start(label: &str, n: usize) -> anyhow::Result<Cluster> {
    let mut c = Cluster::new(label);
    let quiet = ["--access-log", "off"];
    c.bootstrap(&name(0), &quiet)?;
    let seed = c.agent(&name(0)).ip.to_string();
    for i in 1..n {
        let token = c.agent(&name(0)).token("10m")?;
        c.spawn(
            &name(i),
            &["--join", &seed, "--token", &token, "--access-log", "off"],
        );
    }
    for i in 1..n {
        c.wait_ready(&name(i))?;
    }
    let names: Vec<String> = (0..n).map(name).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    c.wait_all_alive(&refs, &refs, Duration::from_secs(60 + n as u64 / 2))?;
    Ok(c)
}

/// Polls `path` on every agent in `apis` (one thread each, every `every`) until `seen`
/// accepts the body; returns the slowest agent's time from `t0`.
fn slowest_until(
    apis: &[String],
    path: &str,
    every: Duration,
    t0: Instant,
    seen: fn(&str, &str) -> bool,
    needle: &str,
) -> anyhow::Result<Duration> {
    let needle: Arc<str> = needle.into();
    let handles: Vec<_> = apis
        .iter()
        .map(|api| {
            let (api, path, needle) = (api.clone(), path.to_owned(), needle.clone());
            std::thread::spawn(move || -> anyhow::Result<Duration> {
                while t0.elapsed() < Duration::from_secs(30) {
                    if http_get(&api, &path).is_ok_and(|b| seen(&b, &needle)) {
                        return Ok(t0.elapsed());
                    }
                    std::thread::sleep(every);
                }
                anyhow::bail!("{api}: {needle} not seen within 30 s")
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    for h in handles {
        worst = worst.max(h.join().map_err(|_| anyhow::anyhow!("poller panicked"))??);
    }
    Ok(worst)
}

fn quantiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let p = |q: f64| {
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64()
    };
    (p(0.5), p(0.99))
}

/// Runs the measurements on a fresh cluster; `lossy` only changes labels and bounds.
pub fn measure(size: &Size, lossy: bool, report: &mut Report) -> anyhow::Result<()> {
    let tag = if lossy { " (20 % UDP loss)" } else { "" };
    let started = Instant::now();
    let mut c = start(
        if lossy {
            "bench-gossip-lossy"
        } else {
            "bench-gossip"
        },
        size.agents,
    )?;
    let n = size.agents;
    println!(
        "\nscenario gossip{tag}: {n} agents formed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if lossy {
        // Formed first, then the loss starts (this process runs inside the namespace).
        run("nft", &[LOSS_RULES])?;
        println!("from now on loopback drops 20 % of UDP datagrams at random");
    }
    let apis: Vec<String> = (0..n).map(|i| c.agent(&name(i)).api()).collect();
    // One polling thread per agent: every 25 ms at 50 agents, less often beyond so the
    // pollers do not starve the agents they measure.
    let poll = Duration::from_millis(25 * (n as u64 / 50).max(1));

    // Gossip bytes per agent, measured while nothing else happens.
    let out = |c: &Cluster| -> anyhow::Result<Vec<f64>> {
        (0..n)
            .map(|i| {
                c.agent(&name(i))
                    .metric("weft_gossip_bytes_total{direction=\"out\"}")
            })
            .collect()
    };
    let before = out(&c)?;
    let profile_before = profile(&c, n)?;
    std::thread::sleep(size.window);
    let after = out(&c)?;
    let profile_after = profile(&c, n)?;
    print_profile(&profile_before, &profile_after, n, size.window, report);
    let rates: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) / size.window.as_secs_f64() / 1000.0)
        .collect();
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let max = rates.iter().cloned().fold(0.0, f64::max);
    println!("gossip sent per agent: mean {mean:.1} KB/s, max {max:.1} KB/s");
    report.goal(Goal::at_most(
        &format!("gossip KB/s per agent at {n} agents{tag} (max)"),
        max,
        20.0,
    ));

    // A new service registered on one agent → visible on all.
    let mut times = Vec::new();
    for r in 0..size.reps {
        let on = name((r * 7 + 3) % n);
        let svc = format!("probe-{r}");
        let t0 = Instant::now();
        c.register(&on, &["--name", &svc, "--port", "9"])?;
        times.push(slowest_until(
            &apis,
            "/v1/services",
            poll,
            t0,
            |b, s| b.contains(s),
            &format!("\"{svc}\""),
        )?);
    }
    let (p50, p99) = quantiles(times);
    println!(
        "new service visible on all {n}: p50 {p50:.3} s, p99 {p99:.3} s ({} registrations)",
        size.reps
    );
    report.goal(Goal::at_most(
        &format!("service visible on all {n}{tag}, p99 s"),
        p99,
        if lossy { 1.0 } else { 0.5 },
    ));

    // A config write on one agent → applied on all.
    let mut times = Vec::new();
    let mut cli_times = Vec::new();
    for r in 0..size.reps {
        let on = name((r * 11 + 5) % n);
        let svc = format!("cfg-{r}");
        let t0 = Instant::now();
        c.cli_ok(&on, &["route", "set", &svc, "--split", "v1=100", "--force"])?;
        cli_times.push(t0.elapsed());
        let path = format!("/v1/config/route/{svc}");
        times.push(slowest_until(&apis, &path, poll, t0, |_, _| true, &svc)?);
    }
    let (p50, p99) = quantiles(times);
    let (cli50, cli99) = quantiles(cli_times);
    println!(
        "config write applied on all {n}: p50 {p50:.3} s, p99 {p99:.3} s ({} writes; of which the `weft route set` command itself: p50 {cli50:.3} s, p99 {cli99:.3} s)",
        size.reps
    );
    report.goal(Goal::at_most(
        &format!("config write applied on all {n}{tag}, p99 s"),
        p99,
        if lossy { 3.0 } else { 0.6 },
    ));

    // kill -9 → failed on every survivor.
    let kills = size.reps.min(n / 5).max(1);
    let mut times = Vec::new();
    for k in 0..kills {
        let victim = name(n - 1 - k);
        let survivors: Vec<String> = (0..n - 1 - k).map(|i| apis[i].clone()).collect();
        let t0 = Instant::now();
        c.agent_mut(&victim).kill();
        let needle = victim.clone();
        times.push(slowest_until(
            &survivors,
            "/v1/members",
            poll,
            t0,
            member_failed,
            &needle,
        )?);
    }
    let (p50, p99) = quantiles(times);
    println!(
        "killed agent failed on all survivors: p50 {p50:.3} s, p99 {p99:.3} s ({kills} kills)"
    );
    report.goal(Goal::at_most(
        &format!("kill -9 marked failed on all{tag}, p99 s"),
        p99,
        if lossy { 5.0 } else { 2.0 },
    ));
    Ok(())
}

/// The gossip byte profile counters (`weft_gossip_sent_*`), summed over every agent.
fn profile(c: &Cluster, n: usize) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let mut sum = std::collections::BTreeMap::new();
    for i in 0..n {
        let body = http_get(&c.agent(&name(i)).api(), "/metrics")?;
        for line in body.lines() {
            let Some(rest) = line.strip_prefix("weft_gossip_") else {
                continue;
            };
            let Some((key, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            let wanted = ["sent_", "bytes_total{direction=\"out\"}", "datagrams"];
            if wanted.iter().any(|w| key.starts_with(w)) {
                *sum.entry(key.to_owned()).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    Ok(sum)
}

/// Prints where the gossip bytes went during the window: per message kind, per part of
/// a message, and what the deltas carried by key (before compression).
fn print_profile(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    n: usize,
    window: Duration,
    report: &mut Report,
) {
    let per_agent_s = |key: &str| {
        (after.get(key).unwrap_or(&0.0) - before.get(key).unwrap_or(&0.0))
            / n as f64
            / window.as_secs_f64()
    };
    let wire = per_agent_s("bytes_total{direction=\"out\"}");
    let label = |family: &str, l: &str, v: &str| format!("{family}{{{l}=\"{v}\"}}");
    println!("where the gossip bytes go (per agent per second, sent):");
    let mut kinds = Vec::new();
    for k in ["syn", "synack", "ack"] {
        kinds.push(format!(
            "{k} {:.1}/s",
            per_agent_s(&label("sent_messages_total", "kind", k))
        ));
    }
    println!("  messages: {}", kinds.join(", "));
    let mut parts = Vec::new();
    for p in ["header", "digest", "delta"] {
        let v = per_agent_s(&label("sent_payload_bytes_total", "part", p));
        parts.push(format!(
            "{p} {:.1} KB/s ({:.0} %)",
            v / 1000.0,
            100.0 * v / wire.max(1.0)
        ));
    }
    let payload: f64 = ["header", "digest", "delta"]
        .iter()
        .map(|p| per_agent_s(&label("sent_payload_bytes_total", "part", p)))
        .sum();
    parts.push(format!(
        "sealing and fragments {:.1} KB/s",
        (wire - payload) / 1000.0
    ));
    println!(
        "  on the wire {:.1} KB/s: {}",
        wire / 1000.0,
        parts.join(", ")
    );
    let entries = per_agent_s("sent_digest_entries_total");
    let digests = per_agent_s(&label("sent_messages_total", "kind", "syn"))
        + per_agent_s(&label("sent_messages_total", "kind", "synack"));
    println!(
        "  digests: {:.1}/s listing {:.0} members each, {:.1} bytes per member entry",
        digests,
        entries / digests.max(1e-9),
        per_agent_s(&label("sent_payload_bytes_total", "part", "digest")) / entries.max(1e-9)
    );
    let mut keys = Vec::new();
    for k in [
        "record",
        "services",
        "config_digest",
        "config_entries",
        "edges",
        "figures",
        "revocations",
        "roots",
        "other",
        "framing",
    ] {
        let v = per_agent_s(&label("sent_delta_content_bytes_total", "key", k));
        if v > 0.0 {
            keys.push(format!("{k} {:.0} B/s", v));
        }
    }
    println!("  delta content before compression: {}", keys.join(", "));
    report.note(format!(
        "gossip profile per agent: wire {:.1} KB/s; {}; delta content {}",
        wire / 1000.0,
        parts.join(", "),
        keys.join(", ")
    ));
}

/// True when `/v1/members` JSON lists `who` as failed.
fn member_failed(body: &str, who: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| {
        v.as_array().is_some_and(|ms| {
            ms.iter()
                .any(|m| m["name"] == who && m["status"] == "failed")
        })
    })
}

/// No false "failed" over `duration` while `burners` threads keep the CPUs busy.
pub fn soak(size: &Size, duration: Duration, report: &mut Report) -> anyhow::Result<()> {
    let n = size.agents;
    let c = start("bench-gossip-soak", n)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let burners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    println!(
        "\nscenario gossip-soak: {n} agents, both cores busy, {} s",
        duration.as_secs()
    );
    let t0 = Instant::now();
    let mut false_failures = 0usize;
    while t0.elapsed() < duration {
        for i in 0..n {
            let body = http_get(&c.agent(&name(i)).api(), "/v1/members")?;
            let v: serde_json::Value = serde_json::from_str(&body)?;
            false_failures += v
                .as_array()
                .map_or(0, |ms| ms.iter().filter(|m| m["status"] != "alive").count());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in burners {
        let _ = b.join();
    }
    println!("member views not alive (summed over 1 s samples): {false_failures}");
    report.goal(Goal::at_most(
        &format!(
            "false failures, {n} agents, {} s, CPUs busy",
            duration.as_secs()
        ),
        false_failures as f64,
        0.0,
    ));
    Ok(())
}

/// Drops 20 % of UDP datagrams arriving on this namespace's loopback (input hook: the
/// sender sees no error, as with loss on a wire).
/// Each agent's own codec round trip on 127.0.0.1 is not a network link and is spared.
const LOSS_RULES: &str = "table inet weftloss { chain in { type filter hook input priority 0; policy accept; ip saddr 127.0.0.1 ip daddr 127.0.0.1 accept; meta l4proto udp numgen random mod 100 < 20 drop; }; }";

/// Runs `measure` again inside a fresh network namespace with 20 % UDP loss on its
/// loopback, by re-running this benchmark there (`gossip-lossy-inner`).
pub fn lossy(quick: bool) -> anyhow::Result<()> {
    let ns = format!("weft-bench-{}", std::process::id());
    let _guard = Netns::create(&ns)?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns])
        .arg(exe)
        .arg("gossip-lossy-inner");
    if quick {
        cmd.arg("--quick");
    }
    let status = cmd.status()?;
    anyhow::ensure!(status.success(), "lossy gossip run failed: {status}");
    Ok(())
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A network namespace with loopback up, deleted on drop.
struct Netns(String);

impl Netns {
    fn create(name: &str) -> anyhow::Result<Self> {
        run("ip", &["netns", "add", name])
            .map_err(|e| anyhow::anyhow!("{e} (the lossy scenario needs root and iproute2)"))?;
        let ns = Self(name.to_owned());
        run(
            "ip",
            &["netns", "exec", name, "ip", "link", "set", "lo", "up"],
        )?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

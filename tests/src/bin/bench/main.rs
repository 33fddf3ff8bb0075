//! Benchmarks that compare weft with baselines measured in the same run: the same
//! backends reached directly, through two weft agents, through an stunnel mTLS pair and
//! through an haproxy mTLS pair; and gossip at 50 agents. Never an absolute number baked
//! into a test: every goal is a ratio or a bound stated by the benchmark issue.
//!
//! Usage (release build of the agent first):
//! `cargo build --release -p weft-node && cargo run --release -p weft-tests --bin bench -- [SCENARIO] [--quick]`
//! where SCENARIO is `dataplane` (latency, throughput, bulk, connections, memory — or any
//! one of them), `serve` (start the arrangements, print their addresses and process ids, and wait: for profiling), `gossip`, `gossip-lossy`, `gossip-soak [--minutes N]`,
//! `gossip-sim [--nodes N] [--interval MS] [--window S] [--v0]` (the in-process fleet simulation,
//! 1 000 nodes by default), `startup` or `all`
//! (everything but the soak).

mod dataplane;
mod gossip;
mod gossip_sim;
mod load;
mod pairs;
mod procstat;
mod report;
mod servers;

use std::time::{Duration, Instant};

use weft_tests::{eventually, http_get, Cluster};

use crate::report::Report;

/// Scenario 8: agent start → `/readyz`.
fn startup(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let runs = if quick { 2 } else { 5 };
    let mut times = Vec::new();
    for i in 0..runs {
        let mut c = Cluster::new(&format!("bench-startup-{i}"));
        let t = Instant::now();
        c.spawn("a", &["--bootstrap", "--access-log", "off"]);
        let api = c.agent("a").api();
        eventually("ready", Duration::from_secs(20), || {
            Ok(http_get(&api, "/readyz").ok())
        })?;
        times.push(t.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2].as_secs_f64() * 1000.0;
    println!("\nscenario startup: agent start (bootstrap, new CA) → /readyz, {runs} runs");
    println!(
        "median {median:.1} ms, max {:.1} ms",
        times[times.len() - 1].as_secs_f64() * 1000.0
    );
    report.note(format!("agent start → ready: median {median:.1} ms"));
    Ok(())
}

fn dataplane(which: &str, quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let setup = dataplane::Setup::start()?;
    let plan = dataplane::Plan::new(quick);
    let all = which == "dataplane" || which == "all";
    // Memory first: "idle" then means before any load.
    if all || which == "memory" {
        dataplane::memory(&setup, &plan, report)?;
    }
    if all || which == "latency" {
        dataplane::latency(&setup, &plan, report)?;
    }
    if all || which == "throughput" {
        dataplane::throughput(&setup, &plan, report)?;
    }
    if all || which == "bulk" {
        dataplane::bulk(&setup, &plan, report)?;
    }
    if all || which == "connections" {
        dataplane::connections(&setup, &plan, report)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let minutes: u64 = args
        .iter()
        .position(|a| a == "--minutes")
        .and_then(|i| args.get(i + 1))
        .map(|m| m.parse())
        .transpose()?
        .unwrap_or(10);
    let scenario = args
        .iter()
        .find(|a| !a.starts_with("--") && a.parse::<u64>().is_err())
        .map(String::as_str)
        .unwrap_or("all");
    let mut report = Report::default();
    let mut size = gossip::Size::new(quick);
    if let Some(n) = args
        .iter()
        .position(|a| a == "--agents")
        .and_then(|i| args.get(i + 1))
    {
        size.agents = n.parse()?;
    }
    match scenario {
        "dataplane" | "latency" | "throughput" | "bulk" | "connections" | "memory" => {
            dataplane(scenario, quick, &mut report)?
        }
        "gossip" => gossip::measure(&size, false, &mut report)?,
        "gossip-lossy" => gossip::lossy(quick)?,
        "gossip-sim" => {
            let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
            let opts = gossip_sim::Options {
                nodes: value("--nodes")
                    .map(|n| n.parse())
                    .transpose()?
                    .unwrap_or(if quick { 100 } else { 1000 }),
                interval: value("--interval")
                    .map(|n| n.parse().map(Duration::from_millis))
                    .transpose()?,
                v0: args.iter().any(|a| a == "--v0"),
                window: value("--window")
                    .map(|n| n.parse().map(Duration::from_secs))
                    .transpose()?,
            };
            gossip_sim::simulate(&opts, &mut report)?
        }
        "gossip-lossy-inner" => gossip::measure(&size, true, &mut report)?,
        "gossip-soak" => {
            let d = if quick {
                Duration::from_secs(10)
            } else {
                Duration::from_secs(minutes * 60)
            };
            gossip::soak(&size, d, &mut report)?
        }
        "startup" => startup(quick, &mut report)?,
        "serve" => {
            // Starts every arrangement and waits, for profiling by hand.
            let setup = dataplane::Setup::start()?;
            setup.describe();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "all" => {
            dataplane("all", quick, &mut report)?;
            gossip::measure(&size, false, &mut report)?;
            startup(quick, &mut report)?;
            report.print();
            // The lossy run prints its own goals (it runs in another process).
            return gossip::lossy(quick);
        }
        other => anyhow::bail!(
            "unknown scenario {other:?}: dataplane, latency, throughput, bulk, connections, memory, gossip, gossip-lossy, gossip-soak, gossip-sim, startup or all"
        ),
    }
    report.print();
    Ok(())
}

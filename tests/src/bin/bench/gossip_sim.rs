//! `bench gossip-sim --nodes N [--interval MS] [--v0]`: the fleet simulation of
//! `weft_gossip::sim` (N chitchat nodes in this process, agents' settings, every message
//! encoded by chitchat's codec, virtual time) and its bars for 1 000 nodes.

use std::time::Duration;

use weft_gossip::sim::{run, syn_size, Protocol, SimConfig, UDP_MTU};

use crate::report::{Goal, Report};

/// Options from the command line.
pub struct Options {
    /// Nodes.
    pub nodes: usize,
    /// Round interval (agents: 200 ms).
    pub interval: Option<Duration>,
    /// chitchat's uncompressed digests (what agents ran before), for comparison.
    pub v0: bool,
    /// Length of each quiet window (default 10 s); shorter runs the script faster.
    pub window: Option<Duration>,
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// Runs the simulation on a current-thread runtime with the clock paused.
pub fn simulate(opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    let mut cfg = SimConfig::agents(opts.nodes);
    if let Some(i) = opts.interval {
        cfg.interval = i;
    }
    if opts.v0 {
        cfg.protocol = Protocol::V0;
    }
    if let Some(w) = opts.window {
        cfg.window = w;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    let mut sizes = Vec::new();
    for members in [1_000, 1_500, 3_000, 5_000] {
        let show = |s: Option<usize>| s.map_or_else(|| "too large".into(), |b| format!("{b} B"));
        let v0 = rt.block_on(syn_size(members, Protocol::V0))?;
        let v1 = rt.block_on(syn_size(members, Protocol::V1))?;
        sizes.push(format!("{members}: {} (V0 {})", show(v1), show(v0)));
    }
    println!(
        "\na SYN (the digest of every member) by members, datagram {} B: {}",
        UDP_MTU,
        sizes.join("; ")
    );
    report.note(format!("SYN size by members: {}", sizes.join("; ")));
    let wall = std::time::Instant::now();
    let r = rt.block_on(run(&cfg))?;
    let n = opts.nodes;
    println!(
        "\nscenario gossip-sim: {n} nodes in one process, {} ms rounds, phi {}, protocol {:?}, {} % loss after forming ({:.0} s of wall time)",
        cfg.interval.as_millis(),
        cfg.phi_threshold,
        cfg.protocol,
        cfg.loss * 100.0,
        wall.elapsed().as_secs_f64()
    );
    println!(
        "formed from a cold start (all at once, 3 seeds): {}",
        secs(r.formed)
    );
    println!(
        "sent per node: mean {:.1} KB/s, max {:.1} KB/s quiet; {:.1} KB/s with loss",
        r.bytes_per_node_s / 1000.0,
        r.max_bytes_per_node_s / 1000.0,
        r.lossy_bytes_per_node_s / 1000.0
    );
    println!(
        "alive nodes seen failed under {} % loss: {} (observer, node) samples",
        cfg.loss * 100.0,
        r.false_failures
    );
    println!("a new value on every node: {}", secs(r.new_key));
    println!(
        "{} joiners seen alive by all: {} (every earlier node sees them: {}; they see everyone: {})",
        cfg.joins,
        secs(r.joined),
        secs(r.joiners_seen),
        secs(r.joiners_see_all)
    );
    println!(
        "{} killed at once, failed everywhere: p50 {}, p99 {}, {} never",
        cfg.kills,
        secs(r.detection_at(0.5)),
        secs(r.detection_at(0.99)),
        r.undetected
    );
    println!(
        "{} s partition in halves healed (all alive everywhere): {}",
        cfg.partition_for.as_secs(),
        secs(r.healed)
    );
    println!(
        "messages over the {}-byte datagram: {}; lost to loss: {}; round-opening SYNs skipped to keep digests within {:.0} KB/s: {}; rounds at full fanout on membership news: {}",
        weft_gossip::sim::UDP_MTU,
        r.oversize,
        r.lost,
        weft_gossip::fanout::DIGEST_BUDGET / 1000.0,
        r.syns_skipped,
        r.news_rounds
    );
    let never = 1e9;
    let d = |x: Option<Duration>| x.map_or(never, |d| d.as_secs_f64());
    report.goal(Goal::at_most(
        &format!("sim {n}: membership converges after joins, s"),
        d(r.joined),
        3.0,
    ));
    report.goal(Goal::at_most(
        &format!("sim {n}: new value on every node, s"),
        d(r.new_key),
        3.0,
    ));
    report.goal(Goal::at_most(
        &format!("sim {n}: KB/s sent per node (mean, quiet)"),
        r.bytes_per_node_s / 1000.0,
        120.0,
    ));
    report.goal(Goal::at_most(
        &format!("sim {n}: messages over the datagram"),
        r.oversize as f64,
        0.0,
    ));
    report.goal(Goal::at_most(
        &format!("sim {n}: false failures under loss"),
        r.false_failures as f64,
        0.0,
    ));
    report.note(format!(
        "sim {n}: formed {}, detection p99 {}, healed {}",
        secs(r.formed),
        secs(r.detection_at(0.99)),
        secs(r.healed)
    ));
    Ok(())
}

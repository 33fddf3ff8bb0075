//! Data-plane scenarios (1–5 of the benchmark issue), each run against every
//! arrangement in turn with the same load, then compared as ratios.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::load;
use crate::pairs::{Arrangement, Backends};
use crate::procstat;
use crate::report::{Goal, Report};

/// Scenario sizes: full, or a few seconds each for `--quick`.
pub struct Plan {
    rate: u32,
    latency_secs: u64,
    wrk_secs: u64,
    bulk_bytes: u64,
    conn_secs: u64,
    streams: usize,
}

impl Plan {
    /// Full or quick.
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                rate: 200,
                latency_secs: 2,
                wrk_secs: 1,
                bulk_bytes: 64 << 20,
                conn_secs: 1,
                streams: 100,
            }
        } else {
            Self {
                rate: 1000,
                latency_secs: 20,
                wrk_secs: 10,
                bulk_bytes: 2 << 30,
                conn_secs: 5,
                streams: 1000,
            }
        }
    }
}

/// The four arrangements over one set of backends (kept alive together).
pub struct Setup {
    backends: Backends,
    arrangements: Vec<Arrangement>,
}

impl Setup {
    /// Starts the backends and every arrangement.
    pub fn start() -> anyhow::Result<Self> {
        let backends = Backends::start()?;
        let arrangements = vec![
            Arrangement::direct(&backends),
            Arrangement::weft(&backends)?,
            Arrangement::stunnel(&backends)?,
            Arrangement::haproxy(&backends)?,
        ];
        Ok(Self {
            backends,
            arrangements,
        })
    }
}

impl Setup {
    /// Prints each arrangement's addresses and process ids.
    pub fn describe(&self) {
        for a in &self.arrangements {
            println!(
                "{:<10} http {} source {} sink {} pids {:?}",
                a.name, a.http, a.source, a.sink, a.pids
            );
        }
    }
}

/// Value of `name`'s figure in a per-arrangement result list.
fn of(results: &[(&'static str, f64)], name: &str) -> f64 {
    results
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(f64::NAN, |(_, v)| *v)
}

/// Scenarios 1 and 2a: fixed-rate latency and the proxies' CPU per 1000 requests.
pub fn latency(s: &Setup, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let duration = Duration::from_secs(plan.latency_secs);
    println!(
        "\nscenario latency: HTTP/1.1 keep-alive, 1 KiB responses, {} req/s over 4 connections for {} s",
        plan.rate, plan.latency_secs
    );
    println!("latency from each request's intended send time (no coordinated omission), ms;");
    println!("CPU = user+system seconds of the arrangement's proxy processes per 1000 requests\n");
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>12}",
        "", "p50", "p90", "p99", "max", "count", "+p50", "+p99", "CPU s/1000"
    );
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut cpu = Vec::new();
    let mut direct = (0.0, 0.0);
    for a in &s.arrangements {
        load::fixed_rate(&a.http, 200, 4, Duration::from_secs(1))?;
        let before = procstat::cpu_total(&a.pids)?;
        let l = load::fixed_rate(&a.http, plan.rate, 4, duration)?;
        let used = procstat::cpu_total(&a.pids)? - before;
        let per_k = used / (l.len() as f64 / 1000.0);
        let (q50, q99) = (load::pct(&l, 0.5), load::pct(&l, 0.99));
        if a.name == "direct" {
            direct = (q50, q99);
        }
        println!(
            "{:<10} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8} {:>9.3} {:>9.3} {:>12}",
            a.name,
            q50,
            load::pct(&l, 0.9),
            q99,
            load::pct(&l, 1.0),
            l.len(),
            q50 - direct.0,
            q99 - direct.1,
            if a.pids.is_empty() {
                "-".to_owned()
            } else {
                format!("{per_k:.4}")
            }
        );
        p50.push((a.name, q50));
        p99.push((a.name, q99));
        cpu.push((a.name, per_k));
    }
    for (label, v) in [("p50", &p50), ("p99", &p99)] {
        let (w, st) = (of(v, "weft"), of(v, "stunnel"));
        println!(
            "weft {label} / stunnel {label}: {:.2} (latency); added over direct: {:.2}",
            w / st,
            (w - of(v, "direct")) / (st - of(v, "direct"))
        );
        report.goal(Goal::at_most(
            &format!("latency {label}: weft / stunnel pair"),
            w / st,
            0.8,
        ));
    }
    report.goal(Goal::at_most(
        "CPU per 1000 req: weft / stunnel pair",
        of(&cpu, "weft") / of(&cpu, "stunnel"),
        0.7,
    ));
    report.note(format!(
        "CPU s per 1000 req: weft {:.4}, stunnel {:.4}, haproxy {:.4}",
        of(&cpu, "weft"),
        of(&cpu, "stunnel"),
        of(&cpu, "haproxy")
    ));
    Ok(())
}

/// Scenario 2b: closed-loop maximum req/s with 16 keep-alive connections (wrk).
pub fn throughput(s: &Setup, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    println!(
        "\nscenario throughput: wrk, 2 threads, 16 keep-alive connections, {} s, 1 KiB responses\n",
        plan.wrk_secs
    );
    let mut rps = Vec::new();
    for a in &s.arrangements {
        let r = load::wrk(&a.http, 16, Duration::from_secs(plan.wrk_secs))?;
        println!("{:<10} {r:>12.0} req/s", a.name);
        rps.push((a.name, r));
    }
    report.goal(Goal::at_least(
        "max req/s (16 conns): weft / haproxy pair",
        of(&rps, "weft") / of(&rps, "haproxy"),
        1.2,
    ));
    Ok(())
}

/// Scenario 3: one TCP stream's bulk throughput.
pub fn bulk(s: &Setup, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    println!(
        "\nscenario bulk: one TCP stream, {} MiB from the backend to the client\n",
        plan.bulk_bytes >> 20
    );
    let mut g = Vec::new();
    for a in &s.arrangements {
        let r = load::bulk(&a.source, plan.bulk_bytes)?;
        println!("{:<10} {r:>8.2} Gbit/s", a.name);
        g.push((a.name, r));
    }
    report.goal(Goal::at_least(
        "bulk Gbit/s: weft / stunnel pair",
        of(&g, "weft") / of(&g, "stunnel"),
        1.0,
    ));
    Ok(())
}

/// Scenario 4: new TCP connections per second, one short request each.
pub fn connections(s: &Setup, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    println!(
        "\nscenario connections: 4 client threads, connect → 1 request (Connection: close) → EOF, {} s\n",
        plan.conn_secs
    );
    let mut c = Vec::new();
    for a in &s.arrangements {
        let (r, failed) = load::conn_rate(&a.http, 4, Duration::from_secs(plan.conn_secs))?;
        println!("{:<10} {r:>10.0} conn/s   failed {failed}", a.name);
        c.push((a.name, r));
        // Let TIME_WAIT and the proxies settle before the next arrangement.
        std::thread::sleep(Duration::from_secs(1));
    }
    report.goal(Goal::at_least(
        "new connections/s: weft / direct",
        of(&c, "weft") / of(&c, "direct"),
        0.7,
    ));
    Ok(())
}

/// Scenario 5: resident memory of each proxy process idle and with many open streams.
pub fn memory(s: &Setup, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    println!(
        "\nscenario memory: RSS per proxy process (MiB), idle and with {} open TCP streams\n",
        plan.streams
    );
    let sink = &s.backends.sink.count;
    let mut idle_weft = 0.0f64;
    for a in s.arrangements.iter().filter(|a| !a.pids.is_empty()) {
        let idle: Vec<f64> = a
            .pids
            .iter()
            .map(|p| procstat::rss_mib(*p))
            .collect::<anyhow::Result<_>>()?;
        let base = sink.load(Ordering::SeqCst);
        let held = load::hold(&a.sink, plan.streams)?;
        weft_tests::eventually("streams open at the sink", Duration::from_secs(30), || {
            let open = sink.load(Ordering::SeqCst) - base;
            anyhow::ensure!(
                open >= plan.streams as u64,
                "{open} of {} open",
                plan.streams
            );
            Ok(Some(()))
        })?;
        let busy: Vec<f64> = a
            .pids
            .iter()
            .map(|p| procstat::rss_mib(*p))
            .collect::<anyhow::Result<_>>()?;
        drop(held);
        weft_tests::eventually(
            "streams closed at the sink",
            Duration::from_secs(30),
            || Ok((sink.load(Ordering::SeqCst) <= base).then_some(())),
        )?;
        let fmt = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(" + ")
        };
        println!(
            "{:<10} idle {:<14} with streams {}",
            a.name,
            fmt(&idle),
            fmt(&busy)
        );
        if a.name == "weft" {
            idle_weft = idle.iter().cloned().fold(0.0, f64::max);
        }
    }
    report.goal(Goal::at_most("RSS idle per agent, MiB", idle_weft, 10.0));
    Ok(())
}

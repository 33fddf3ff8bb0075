//! What the fault scenarios share: the short/long switch and the `FAULT | …` report line,
//! clusters with an `api` service on vm-2 and vm-3 (in a lab or on loopback), a steady
//! client that records who answered each request, member-status sampling, and counting
//! what the agents logged (certificate renewals above all).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weft_tests::backends::{http_get_host, Backend};
use weft_tests::{eventually, eventually_http, http_get, Cluster};

/// Whether the suite runs in its long form (`tests/faults/long.sh` sets WEFT_FAULT_LONG=1).
pub(crate) fn long() -> bool {
    std::env::var("WEFT_FAULT_LONG").is_ok_and(|v| v == "1")
}

/// Prints the scenario's row of long.sh's table: `FAULT | scenario | outcome | figures`.
pub(crate) fn report(scenario: &str, outcome: &str, figures: &str) {
    println!("FAULT | {scenario} | {outcome} | {figures}");
}

/// The HTTP backend run inside a lab host's namespace.
pub(crate) fn backend() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fault_backend"))
}

/// Starts a lab backend in `node`'s namespace on 127.0.0.1:8080 and registers it there as
/// HTTP service `api`.
pub(crate) fn api_backend_on(c: &mut Cluster, node: &str) -> anyhow::Result<()> {
    c.spawn_in(node, backend(), &[node, "8080"])?;
    c.register_http(node, "api", 8080)
}

/// Waits up to 20 s until `http://api/` through `proxy` (an agent's HTTP proxy) answers 200.
pub(crate) fn wait_api_via(proxy: &str, what: &str) -> anyhow::Result<()> {
    eventually_http(
        what,
        Duration::from_secs(20),
        proxy,
        "api",
        "http://api/",
        Some(200),
    )
    .map(|_| ())
}

/// vm-1..3 in a lab; `api` on vm-2 and vm-3 (a backend in each namespace). Returns
/// vm-1's HTTP proxy address (upstream listeners bind loopback only, and the test is
/// outside vm-1's namespace).
pub(crate) fn lab_with_api(c: &mut Cluster) -> anyhow::Result<String> {
    lab_with_api_via(c, 3, "vm-1")
}

/// vm-1..N in a lab; `api` on vm-2 and vm-3, routable from `via` and answering through
/// its HTTP proxy, whose address is returned.
pub(crate) fn lab_with_api_via(c: &mut Cluster, n: usize, via: &str) -> anyhow::Result<String> {
    c.formed(n)?;
    for node in ["vm-2", "vm-3"] {
        api_backend_on(c, node)?;
    }
    let proxy = c.agent(via).proxy();
    for want in ["vm-2", "vm-3"] {
        routable_on(c, via, "api", want)?;
    }
    wait_api_via(&proxy, &format!("api via {via}"))?;
    Ok(proxy)
}

/// vm-1..3 on loopback with `api` (a backend in this process) on vm-2 and vm-3 and an
/// upstream for it on vm-1; returns the upstream address and the backends.
pub(crate) fn loopback_with_api(
    c: &mut Cluster,
    ca_args: &[&str],
) -> anyhow::Result<(String, Vec<Backend>)> {
    c.start_nodes(3, ca_args)?;
    let mut backends = Vec::new();
    for n in ["vm-2", "vm-3"] {
        let b = Backend::http(n);
        c.register_http(n, "api", b.port())?;
        backends.push(b);
    }
    let up = c.client_upstream("vm-1", "api", 19001)?;
    for want in ["vm-2", "vm-3"] {
        routable_on(c, "vm-1", "api", want)?;
    }
    eventually_http(
        "api answers",
        Duration::from_secs(20),
        &up,
        "api",
        "/",
        Some(200),
    )?;
    Ok((up, backends))
}

/// Waits until `observer` can route `service` to `node`: the node alive in its member
/// list and its instance healthy in its catalog. (Waiting for a response *from* a given
/// instance instead would depend on the latency-aware balancer's choices.)
pub(crate) fn routable_on(
    c: &Cluster,
    observer: &str,
    service: &str,
    node: &str,
) -> anyhow::Result<()> {
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
pub(crate) struct Sample {
    pub(crate) at: Instant,
    pub(crate) took: Duration,
    pub(crate) answered_by: Option<String>,
}

/// A thread sending one request every 20 ms until stopped.
pub(crate) struct SteadyClient {
    stopping: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl SteadyClient {
    /// Stops the client; returns one sample per request it sent.
    pub(crate) fn stop(self) -> anyhow::Result<Vec<Sample>> {
        self.stopping.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("client panicked"))
    }
}

/// Sends a GET for `http://api/` (through the HTTP proxy) every 20 ms until stopped.
pub(crate) fn steady_client(up: String) -> SteadyClient {
    steady_client_on(up, "http://api/")
}

/// Sends a GET for `target` with `Host: api` to `up` every 20 ms until stopped.
pub(crate) fn steady_client_on(up: String, target: &'static str) -> SteadyClient {
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = stopping.clone();
    let thread = std::thread::spawn(move || {
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
    });
    SteadyClient { stopping, thread }
}

/// Statuses every agent reports for every other, sampled every 250 ms for `d`; returns
/// how many samples were not `alive`.
pub(crate) fn not_alive_samples(c: &Cluster, names: &[&str], d: Duration) -> anyhow::Result<usize> {
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

/// How many times the agents `names` logged `needle`, all together.
pub(crate) fn logged(c: &Cluster, names: &[&str], needle: &str) -> usize {
    names
        .iter()
        .map(|n| c.agent(n).log_text().matches(needle).count())
        .sum()
}

/// How many times `name` logged a certificate renewal.
pub(crate) fn renewals(c: &Cluster, name: &str) -> usize {
    logged(c, &[name], "certificate renewed")
}

/// Waits up to `timeout` for `name`'s next certificate renewal.
pub(crate) fn wait_next_renewal(c: &Cluster, name: &str, timeout: Duration) -> anyhow::Result<()> {
    wait_renewal_past(c, name, renewals(c, name), timeout)
}

/// Waits up to `timeout` until `name` has logged more than `seen` renewals; a timeout
/// carries `name`'s renewal log lines.
pub(crate) fn wait_renewal_past(
    c: &Cluster,
    name: &str,
    seen: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    eventually(&format!("{name} renews"), timeout, || {
        Ok((renewals(c, name) > seen).then_some(()))
    })
    .map_err(|e| e.context(renewal_log(c, name)))
}

/// `name`'s renewal log lines, for a failure's message.
pub(crate) fn renewal_log(c: &Cluster, name: &str) -> String {
    let log = c.agent(name).log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("renew") || l.contains("expired"))
        .map(str::trim)
        .collect();
    format!("{name}'s renewal log:\n{}", lines.join("\n"))
}

/// Waits for `name`'s next renewal, so that its certificate has a whole life ahead.
pub(crate) fn wait_fresh_certificate(c: &Cluster, name: &str) -> anyhow::Result<()> {
    wait_next_renewal(c, name, Duration::from_secs(30))
}

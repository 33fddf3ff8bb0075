//! `weft rollout …`: start a progressive rollout (an operator-signed `rollout` entry),
//! steer it (pause, resume, promote, abort: the same plan signed again with another
//! command) and show where each stands. Mistakes are refused here, before anything is
//! written: a version no instance runs, a rollout already under way, bad steps or gates.

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use rand::RngCore as _;

use super::args::ClientArgs;
use super::client::ApiClient;
use crate::rollout::{Command, Plan};

/// `weft rollout …`
#[derive(Debug, Subcommand)]
pub enum RolloutAction {
    /// Start moving SERVICE's traffic to another version, step by step (operator).
    Start(StartArgs),
    /// Show rollouts: state, weight on the new version, the last step's figures against
    /// the gates, history.
    Status {
        /// Only this service.
        service: Option<String>,
        /// Common client options.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Hold the current weight (operator).
    Pause(SteerArgs),
    /// Continue a paused rollout; its step's interval starts again (operator).
    Resume(SteerArgs),
    /// Send all traffic to the new version now (operator).
    Promote(SteerArgs),
    /// Send all traffic back to the old version now (operator).
    Abort(SteerArgs),
}

/// `weft rollout start` options.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The service.
    pub service: String,
    /// The version to move to.
    #[arg(long)]
    pub to: String,
    /// The version to move from (default: the one its route sends most traffic to, or
    /// the only other version running).
    #[arg(long)]
    pub from: Option<String>,
    /// Percent on the new version at each step, increasing, ending at 100.
    #[arg(long, default_value = "10,25,50,100")]
    pub steps: String,
    /// Time at each step before it is judged (at least 2s).
    #[arg(long, default_value = "1m")]
    pub interval: String,
    /// Highest share of failed requests of the new version at a step (1% or 0.01).
    #[arg(long, default_value = "1%")]
    pub max_error_rate: String,
    /// Highest p99 latency of the new version at a step, e.g. 500ms (default: no
    /// latency gate).
    #[arg(long)]
    pub max_p99: Option<String>,
    /// Fewest requests the new version must serve in an interval to be judged; fewer
    /// and the step holds.
    #[arg(long, default_value_t = 20)]
    pub min_requests: u64,
    /// Common client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of pause, resume, promote, abort.
#[derive(Debug, Args)]
pub struct SteerArgs {
    /// The service.
    pub service: String,
    /// Common client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Parses `1%` or `0.01` into a share.
pub fn parse_rate(text: &str) -> anyhow::Result<f64> {
    let t = text.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| anyhow::anyhow!("--max-error-rate {text:?}: write a share like 1% or 0.01"))?;
    if !(0.0..=1.0).contains(&v) {
        bail!("--max-error-rate {text:?}: between 0% and 100%");
    }
    Ok(v)
}

fn parse_steps(text: &str) -> anyhow::Result<Vec<u32>> {
    text.split(',')
        .map(|s| {
            s.trim()
                .trim_end_matches('%')
                .parse::<u32>()
                .map_err(|_| anyhow::anyhow!("--steps {text:?}: percentages like 10,50,100"))
        })
        .collect()
}

fn duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text)
        .map_err(|e| anyhow::anyhow!("{flag} {text:?}: {e} (write 30s, 1m or 500ms)"))
}

/// The versions of `service` that run somewhere now, and whether every instance speaks
/// HTTP (routes, and so rollouts, act on HTTP requests).
async fn versions_running(c: &ApiClient, service: &str) -> anyhow::Result<(Vec<String>, bool)> {
    let services: serde_json::Value = c.get("/v1/services").await?;
    let instances: Vec<serde_json::Value> = services
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["service"] == service)
        .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
        .collect();
    let http = instances
        .iter()
        .all(|i| matches!(i["protocol"].as_str(), Some("http" | "http2" | "grpc")));
    let mut out: Vec<String> = instances
        .iter()
        .filter_map(|i| i["version"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out.dedup();
    Ok((out, http))
}

/// The version the route's default rule sends most traffic to, if there is a route.
async fn routed_version(c: &ApiClient, service: &str) -> Option<String> {
    let entry: serde_json::Value = c.get(&format!("/v1/config/route/{service}")).await.ok()?;
    let route: crate::routing::Route = serde_json::from_value(entry["value"].clone()).ok()?;
    route
        .rules
        .iter()
        .find(|r| r.matches == crate::routing::route::RouteMatch::default())?
        .to
        .iter()
        .max_by_key(|w| w.weight)
        .map(|w| w.version.clone())
}

async fn current(c: &ApiClient, service: &str) -> anyhow::Result<Option<serde_json::Value>> {
    let all: serde_json::Value = c.get("/v1/rollouts").await?;
    Ok(all["rollouts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["service"] == service)
        .cloned())
}

async fn start(a: &StartArgs) -> anyhow::Result<()> {
    let c = ApiClient::new(&a.client)?;
    let (running, http) = versions_running(&c, &a.service).await?;
    if running.is_empty() {
        bail!(
            "no instance of {} is registered anywhere; check the name (`weft services`)",
            a.service
        );
    }
    if !http {
        bail!(
            "{} is a TCP service: rollouts move HTTP requests between versions (register it with --protocol http, http2 or grpc)",
            a.service
        );
    }
    if !running.contains(&a.to) {
        bail!(
            "no instance of {} runs version {} (running: {}); deploy it first",
            a.service,
            a.to,
            running.join(", ")
        );
    }
    let from = match &a.from {
        Some(f) => f.clone(),
        None => match routed_version(&c, &a.service).await {
            Some(v) if v != a.to => v,
            _ => {
                let others: Vec<&String> = running.iter().filter(|v| **v != a.to).collect();
                match others.as_slice() {
                    [one] => (*one).clone(),
                    [] => bail!(
                        "{} runs only version {}; nothing to roll out from",
                        a.service,
                        a.to
                    ),
                    many => bail!(
                        "give --from: {} runs versions {}",
                        a.service,
                        many.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
        },
    };
    if !running.contains(&from) {
        bail!(
            "no instance of {} runs version {from} (running: {}); check --from",
            a.service,
            running.join(", ")
        );
    }
    if let Some(cur) = current(&c, &a.service).await? {
        let state = cur["state"].as_str().unwrap_or("");
        if matches!(state, "progressing" | "paused") {
            bail!(
                "a rollout of {} is {state} ({} → {} at {}%); promote or abort it first",
                a.service,
                cur["plan"]["from"].as_str().unwrap_or("?"),
                cur["plan"]["to"].as_str().unwrap_or("?"),
                cur["weight"]
            );
        }
    }
    let mut id = [0u8; 8];
    rand::rng().fill_bytes(&mut id);
    let plan = Plan {
        id: hex::encode(id),
        from,
        to: a.to.clone(),
        steps: parse_steps(&a.steps)?,
        interval_ms: duration("--interval", &a.interval)?.as_millis() as u64,
        max_error_rate: parse_rate(&a.max_error_rate)?,
        max_p99_ms: a
            .max_p99
            .as_deref()
            .map(|t| duration("--max-p99", t).map(|d| d.as_secs_f64() * 1000.0))
            .transpose()?,
        min_requests: a.min_requests,
        command: Command::Run,
        started_ms: crate::clock::unix_ms(),
    };
    plan.validate()
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace("`interval`", "--interval")))?;
    c.config_write("rollout", &a.service, Some(serde_json::to_value(&plan)?))
        .await?;
    if a.client.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        println!(
            "rollout of {} started: {} → {} in steps {:?}, {} each; `weft rollout status {}` follows it",
            a.service,
            plan.from,
            plan.to,
            plan.steps,
            humantime::format_duration(plan.interval()),
            a.service
        );
    }
    Ok(())
}

async fn steer(a: &SteerArgs, command: Command) -> anyhow::Result<()> {
    let c = ApiClient::new(&a.client)?;
    let entry: serde_json::Value = c
        .get(&format!("/v1/config/rollout/{}", a.service))
        .await
        .with_context(|| {
            format!(
                "no rollout of {}; start one with `weft rollout start`",
                a.service
            )
        })?;
    let mut plan: Plan = serde_json::from_value(entry["value"].clone())
        .context("the rollout entry this agent holds")?;
    if let Some(cur) = current(&c, &a.service).await? {
        let state = cur["state"].as_str().unwrap_or("");
        if matches!(state, "promoted" | "rolled_back" | "aborted") {
            bail!(
                "the rollout of {} is already {state}; start a new one with `weft rollout start`",
                a.service
            );
        }
    }
    plan.command = command;
    c.config_write("rollout", &a.service, Some(serde_json::to_value(&plan)?))
        .await?;
    let word = match command {
        Command::Run => "resumed",
        Command::Pause => "paused",
        Command::Promote => "promoted: all traffic to the new version",
        Command::Abort => "aborted: all traffic back to the old version",
    };
    println!("rollout of {} {word}", a.service);
    Ok(())
}

fn pct(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

fn print_status(r: &serde_json::Value) {
    let plan = &r["plan"];
    println!(
        "{}: {} — {} → {}, {}% on {} (steps {}, interval {} ms, gates: errors ≤ {}, {}, ≥ {} requests); driver {}",
        r["service"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
        plan["from"].as_str().unwrap_or("?"),
        plan["to"].as_str().unwrap_or("?"),
        r["weight"],
        plan["to"].as_str().unwrap_or("?"),
        plan["steps"],
        plan["interval_ms"],
        pct(&plan["max_error_rate"]),
        plan["max_p99_ms"]
            .as_f64()
            .map_or("no p99 gate".into(), |v| format!("p99 ≤ {v} ms")),
        plan["min_requests"],
        r["driver"].as_str().unwrap_or("-"),
    );
    if r["in_force"] == false {
        println!("  (no longer in force: the route of this service was written after it)");
    }
    let now = &r["now"];
    for (label, key) in [("old", "old"), ("new", "new")] {
        let f = &now[key];
        println!(
            "  now {label:<3} {:<12} {:>7} requests  {:>6} failed  p50 {} ms  p99 {} ms",
            plan[if key == "old" { "from" } else { "to" }]
                .as_str()
                .unwrap_or("?"),
            f["requests"],
            pct(&f["error_rate"]),
            f["p50_ms"],
            f["p99_ms"],
        );
    }
    for d in r["progress"]["history"].as_array().into_iter().flatten() {
        let at = d["at_ms"].as_u64().unwrap_or(0);
        let when =
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(at));
        println!(
            "  {when}  {:<8} {:>3}%  {}  ({})",
            d["action"].as_str().unwrap_or("?"),
            d["weight"],
            d["reason"].as_str().unwrap_or(""),
            d["node"].as_str().unwrap_or("?"),
        );
    }
}

/// Runs a `weft rollout` command.
pub async fn rollout(action: &RolloutAction) -> anyhow::Result<()> {
    match action {
        RolloutAction::Start(a) => start(a).await,
        RolloutAction::Pause(a) => steer(a, Command::Pause).await,
        RolloutAction::Resume(a) => steer(a, Command::Run).await,
        RolloutAction::Promote(a) => steer(a, Command::Promote).await,
        RolloutAction::Abort(a) => steer(a, Command::Abort).await,
        RolloutAction::Status { service, client } => {
            let c = ApiClient::new(client)?;
            let all: serde_json::Value = c.get("/v1/rollouts").await?;
            let list: Vec<serde_json::Value> = all["rollouts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| service.as_deref().is_none_or(|s| r["service"] == s))
                .cloned()
                .collect();
            if client.json {
                match service {
                    Some(_) => println!(
                        "{}",
                        serde_json::to_string_pretty(
                            list.first().unwrap_or(&serde_json::Value::Null)
                        )?
                    ),
                    None => println!("{}", serde_json::to_string_pretty(&list)?),
                }
                return Ok(());
            }
            if list.is_empty() {
                match service {
                    Some(s) => bail!(
                        "no rollout of {s}; start one with `weft rollout start {s} --to VERSION`"
                    ),
                    None => println!("no rollouts"),
                }
            }
            for r in &list {
                print_status(r);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_steps_parse_or_name_the_fix() {
        assert_eq!(parse_rate("1%").expect("ok"), 0.01);
        assert_eq!(parse_rate("0.05").expect("ok"), 0.05);
        assert!(parse_rate("150%").is_err());
        assert!(parse_rate("lots")
            .expect_err("bad")
            .to_string()
            .contains("1% or 0.01"));
        assert_eq!(parse_steps("10, 50,100%").expect("ok"), vec![10, 50, 100]);
        assert!(parse_steps("10,x").is_err());
    }
}

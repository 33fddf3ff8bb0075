//! `weft status` (this agent at a glance: ready or why not, certificate and CA expiry,
//! peers, config agreement, listeners) and `weft doctor` (checks that print the fix for
//! each problem they find: clock skew against peers, ports, the data directory,
//! the `.weft` DNS and systemd-resolved, the nftables lock-down).

use std::time::Duration;

use anyhow::bail;
use weft_web::{MemberView, NodeStatus};

use super::args::ClientArgs;
use super::client::ApiClient;

/// Clock offset against a peer worth a warning, and one that breaks certificates.
const SKEW_WARN_MS: i64 = 1_000;
const SKEW_FAIL_MS: i64 = 30_000;

fn until(unix: u64) -> String {
    let now = weft_ca::unix(crate::clock::now());
    if unix == 0 {
        "-".into()
    } else if unix > now {
        format!(
            "in {}",
            humantime::format_duration(Duration::from_secs((unix - now) / 60 * 60))
        )
    } else {
        format!(
            "EXPIRED {} ago",
            humantime::format_duration(Duration::from_secs(now - unix))
        )
    }
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// Peers (other than this node) whose applied config differs from ours.
fn disagreeing<'a>(me: &NodeStatus, members: &'a [MemberView]) -> Vec<&'a str> {
    members
        .iter()
        .filter(|m| !m.is_self && m.status == "alive" && !m.config_digest.is_empty())
        .filter(|m| m.config_digest != me.config_digest)
        .map(|m| m.name.as_str())
        .collect()
}

/// `weft status`: exits 1 when the agent is not ready.
pub async fn status(args: &ClientArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(args)?;
    let me: NodeStatus = client.get("/v1/self").await?;
    let members: Vec<MemberView> = client.get("/v1/members").await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "self": me, "members": members }))?
        );
    } else {
        print_status(&me, &members);
    }
    match (&me.ready, &me.not_ready_reason) {
        (true, _) => Ok(()),
        (false, reason) => bail!(
            "not ready: {}",
            reason.as_deref().unwrap_or("(no reason given)")
        ),
    }
}

fn print_status(me: &NodeStatus, members: &[MemberView]) {
    let row = |k: &str, v: String| println!("{k:<12} {v}");
    row(
        "node",
        format!("{} (cluster {}), weft {}", me.name, me.cluster, me.version),
    );
    row(
        "ready",
        if me.ready {
            "yes".into()
        } else {
            format!(
                "NO: {}",
                me.not_ready_reason
                    .as_deref()
                    .unwrap_or("(no reason given)")
            )
        },
    );
    row(
        "certificate",
        format!(
            "expires {}{}",
            until(me.cert_expiry_unix),
            if me.ca {
                "; this node is a CA replica"
            } else {
                ""
            }
        ),
    );
    row(
        "cluster CA",
        format!("expires {}", until(me.ca_expiry_unix)),
    );
    let count = |s: &str| members.iter().filter(|m| m.status == s).count();
    let failed: Vec<&str> = members
        .iter()
        .filter(|m| m.status == "failed")
        .map(|m| m.name.as_str())
        .collect();
    row(
        "members",
        format!(
            "{} alive, {} failed{}, {} left",
            count("alive"),
            failed.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(" ({})", failed.join(", "))
            },
            count("left")
        ),
    );
    let others = members
        .iter()
        .filter(|m| !m.is_self && m.status == "alive")
        .count();
    let differ = disagreeing(me, members);
    row(
        "config",
        if differ.is_empty() {
            format!(
                "digest {}, the same on all {others} alive peers",
                short(&me.config_digest)
            )
        } else {
            format!(
                "digest {}, DIFFERENT on {} (converging, or they cannot reach this node over QUIC)",
                short(&me.config_digest),
                differ.join(", ")
            )
        },
    );
    row(
        "listeners",
        if me.listener_faults.is_empty() {
            format!(
                "all open (proxy {}{})",
                me.proxy,
                me.dns
                    .as_deref()
                    .map(|d| format!(", dns {d}"))
                    .unwrap_or_default()
            )
        } else {
            me.listener_faults.join("; ")
        },
    );
    for w in &me.warnings {
        row("warning", w.clone());
    }
}

/// One doctor finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Ok,
    Note,
    Warn,
    Fail,
}

struct Report {
    worst: Verdict,
}

impl Report {
    fn say(&mut self, v: Verdict, what: &str, text: impl AsRef<str>) {
        let tag = match v {
            Verdict::Ok => "ok  ",
            Verdict::Note => "note",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        println!("{tag}  {what:<12} {}", text.as_ref());
        self.worst = self.worst.max(v);
    }
}

/// `weft doctor`: exits 1 when a check fails.
pub async fn doctor(args: &ClientArgs) -> anyhow::Result<()> {
    let mut r = Report { worst: Verdict::Ok };
    let client = ApiClient::new(args)?;
    let me: NodeStatus = match client.get("/v1/self").await {
        Ok(s) => s,
        Err(e) => {
            r.say(
                Verdict::Fail,
                "agent",
                format!("{e:#}; fix: `systemctl start weft`, then `journalctl -u weft -n 50` says why it stopped"),
            );
            bail!("the agent does not answer; nothing else can be checked");
        }
    };
    r.say(
        Verdict::Ok,
        "agent",
        format!("{} answers, weft {}", me.name, me.version),
    );
    match (&me.ready, &me.not_ready_reason) {
        (true, _) => r.say(Verdict::Ok, "ready", "yes"),
        (false, reason) => r.say(
            Verdict::Fail,
            "ready",
            reason.as_deref().unwrap_or("not ready"),
        ),
    }
    let now = weft_ca::unix(crate::clock::now());
    if me.cert_expiry_unix < now + 3600 {
        r.say(
            Verdict::Warn,
            "certificate",
            format!("expires {}; fix: a CA replica must be reachable over UDP 7443 for renewal (`weft members` shows which are alive)", until(me.cert_expiry_unix)),
        );
    } else {
        r.say(
            Verdict::Ok,
            "certificate",
            format!("expires {}", until(me.cert_expiry_unix)),
        );
    }
    for f in &me.listener_faults {
        r.say(Verdict::Fail, "listener", f);
    }
    if me.listener_faults.is_empty() {
        r.say(
            Verdict::Ok,
            "listeners",
            "every configured listener is open",
        );
    }

    let members: Vec<MemberView> = client.get("/v1/members").await?;
    let failed: Vec<&str> = members
        .iter()
        .filter(|m| m.status == "failed")
        .map(|m| m.name.as_str())
        .collect();
    if failed.is_empty() {
        r.say(Verdict::Ok, "members", "no failed member");
    } else {
        r.say(Verdict::Warn, "members", format!("failed: {}; fix: UDP 7946 (gossip) and 7443 (QUIC) must pass between the hosts; a host gone for good: weft force-leave NAME", failed.join(", ")));
    }
    let differ = disagreeing(&me, &members);
    if differ.is_empty() {
        r.say(
            Verdict::Ok,
            "config",
            "every alive peer has applied the same config",
        );
    } else {
        r.say(Verdict::Warn, "config", format!("{} applied another config than this node; fix: if it lasts, UDP 7443 from them to this node is blocked", differ.join(", ")));
    }

    let doc: serde_json::Value = client.get("/v1/doctor").await?;
    check_clock(&mut r, &doc);
    check_data_dir(&mut r, &me.data_dir);
    check_dns(&mut r, me.dns.as_deref()).await;
    check_nft(&mut r);

    if r.worst == Verdict::Fail {
        bail!("some checks failed; each FAIL line says the fix");
    }
    Ok(())
}

fn check_clock(r: &mut Report, doc: &serde_json::Value) {
    let samples = doc["clock"].as_array().cloned().unwrap_or_default();
    if samples.is_empty() {
        r.say(Verdict::Note, "clock", "no alive peer to compare with");
        return;
    }
    let mut worst: Option<(String, i64, u64)> = None;
    for s in &samples {
        let node = s["node"].as_str().unwrap_or("?").to_owned();
        if let Some(e) = s["error"].as_str() {
            r.say(Verdict::Note, "clock", format!("{node}: not measured: {e}"));
            continue;
        }
        let offset = s["offset_ms"].as_i64().unwrap_or(0);
        let rtt = s["rtt_ms"].as_u64().unwrap_or(0);
        // The true offset is within ± rtt/2 of the measured one.
        let bound = offset.abs().saturating_sub((rtt / 2) as i64);
        if worst.as_ref().is_none_or(|w| bound > w.1) {
            worst = Some((node, bound, rtt));
        }
    }
    let Some((node, skew, rtt)) = worst else {
        return;
    };
    let fix = "fix: run NTP on every host (`timedatectl set-ntp true`, or chrony)";
    let text = format!(
        "largest offset {skew} ms (at {node}, over {} peer(s), round trip {rtt} ms)",
        samples.len()
    );
    if skew >= SKEW_FAIL_MS {
        r.say(
            Verdict::Fail,
            "clock",
            format!(
                "{text}: certificates from a CA this far off look not yet valid or expired; {fix}"
            ),
        );
    } else if skew >= SKEW_WARN_MS {
        r.say(Verdict::Warn, "clock", format!("{text}; {fix}"));
    } else {
        r.say(Verdict::Ok, "clock", text);
    }
}

fn check_data_dir(r: &mut Report, dir: &str) {
    use std::os::unix::fs::MetadataExt as _;
    if dir.is_empty() {
        return;
    }
    match std::fs::metadata(dir) {
        Ok(m) if m.mode() & 0o077 != 0 => r.say(
            Verdict::Fail,
            "data dir",
            format!(
                "{dir} is mode {:o}: others can read its keys; fix: chmod 700 {dir}",
                m.mode() & 0o7777
            ),
        ),
        Ok(m) => r.say(
            Verdict::Ok,
            "data dir",
            format!(
                "{dir} is private (mode {:o}, uid {})",
                m.mode() & 0o7777,
                m.uid()
            ),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => r.say(
            Verdict::Note,
            "data dir",
            format!("{dir}: not readable by this user (run as root to check it)"),
        ),
        Err(e) => r.say(Verdict::Warn, "data dir", format!("{dir}: {e}")),
    }
}

async fn check_dns(r: &mut Report, dns: Option<&str>) {
    let Some(addr) = dns.and_then(|d| d.parse::<std::net::SocketAddr>().ok()) else {
        r.say(Verdict::Note, "dns", "the .weft DNS is off (`dns` key)");
        return;
    };
    match ask_dns(addr).await {
        Ok(()) => r.say(
            Verdict::Ok,
            "dns",
            format!("the agent answers .weft on {addr}"),
        ),
        Err(e) => {
            r.say(Verdict::Fail, "dns", format!("no answer from {addr}: {e}; fix: another program may hold the port (`ss -lunp 'sport = :{}'`)", addr.port()));
            return;
        }
    }
    let drop_in = std::path::Path::new("/etc/systemd/resolved.conf.d/weft.conf");
    if !drop_in.exists() {
        r.say(
            Verdict::Note,
            "resolver",
            "this host does not resolve *.weft by itself; fix (optional): `weft dns install`",
        );
        return;
    }
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if resolv.contains("127.0.0.53") {
        r.say(
            Verdict::Ok,
            "resolver",
            "systemd-resolved sends *.weft to the agent",
        );
    } else {
        r.say(Verdict::Warn, "resolver", "`weft dns install` was run, but /etc/resolv.conf does not use systemd-resolved; fix: `ln -sf /run/systemd/resolve/stub-resolv.conf /etc/resolv.conf`");
    }
}

async fn ask_dns(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii("doctor.weft.")?,
        RecordType::A,
    ));
    let bind: std::net::SocketAddr = if addr.is_ipv4() {
        ([127, 0, 0, 1], 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.send_to(&m.to_vec()?, addr).await?;
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .map_err(|_| anyhow::anyhow!("timed out after 2 s"))??;
    Message::from_vec(&buf[..n])?;
    Ok(())
}

fn check_nft(r: &mut Report) {
    // Only where the lock-down is in use: its table exists while an intercepting agent runs.
    let out = std::process::Command::new("nft")
        .args(["list", "table", "inet", "weft"])
        .output();
    match out {
        Ok(o) if o.status.success() => r.say(
            Verdict::Ok,
            "nftables",
            "table inet weft is in force (intercept)",
        ),
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("Operation not permitted") => r.say(
            Verdict::Note,
            "nftables",
            "not checked: needs root",
        ),
        _ => r.say(
            Verdict::Note,
            "nftables",
            "no lock-down table (fine unless `intercept = true`; then the agent lacks CAP_NET_ADMIN: see the unit file)",
        ),
    }
}

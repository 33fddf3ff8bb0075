//! `intercept = true`: the host's firewall made part of the mesh, in an nftables table
//! weft owns (`table inet weft`) and nothing else touches.
//!
//! * Lock-down: a connection to a registered service's port is dropped unless it comes
//!   over loopback from the agent (or from the service's own user), so the mesh — with its
//!   mTLS, policy and metrics — is the only way in; another host reaching `10.0.0.5:9080`
//!   directly gets nothing.
//! * Interception: what a registered service's processes (those of a service that names
//!   its `user`) open towards any instance of a service, by that instance's real address
//!   and port, is redirected to the agent (`proxy::listeners::serve_intercepted`), which
//!   sends it through the mesh as that service. Processes of no service are left alone.
//!
//! The ruleset is generated here (`ruleset`, pure) and applied with the `nft` command in
//! one transaction that replaces the whole table (`apply`): chosen over a netlink crate
//! because the text is what an operator reads in `nft list table inet weft`, the
//! transaction is atomic, and nftables ships `nft` wherever it ships the kernel side.
//! The table is rebuilt whenever the local services change and deleted when the agent
//! stops; an agent that crashes leaves it in force (closed, not open) until it starts
//! again or someone runs `nft delete table inet weft`.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Why the table cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// `nft` is missing or failed.
    #[error("intercept = true: {0}")]
    Nft(String),
}

/// One local service as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    /// Its port.
    pub port: u16,
    /// The uid of its own processes, if named (they may reach their own port).
    pub user: Option<u32>,
}

/// The table for the local `services` and the `instances` (address, port) of every
/// service in the catalog, with `agent_uid` the agent's own uid and `redirect_port` the
/// agent's interception listener on 127.0.0.1.
pub fn ruleset(
    services: &[Guarded],
    instances: &[std::net::SocketAddrV4],
    agent_uid: u32,
    redirect_port: u16,
) -> String {
    let mut out = String::from("table inet weft {\n");
    let mut uids: Vec<u32> = services.iter().filter_map(|s| s.user).collect();
    uids.sort_unstable();
    uids.dedup();
    let mut targets: Vec<String> = instances
        .iter()
        .map(|a| format!("{} . {}", a.ip(), a.port()))
        .collect();
    targets.sort();
    targets.dedup();
    if !uids.is_empty() && !targets.is_empty() {
        let uids = uids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "\tchain intercept_out {{\n\
             \t\ttype nat hook output priority -100; policy accept;\n\
             \t\tmeta skuid {agent_uid} return\n\
             \t\tmeta skuid {{ {uids} }} ip daddr . tcp dport {{ {} }} counter redirect to :{redirect_port} comment \"weft: through the mesh\"\n\
             \t}}\n",
            targets.join(", ")
        ));
    }
    out.push_str(
        "\
         \tchain lockdown_in {\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"lo\" accept\n",
    );
    let mut ports: Vec<u16> = services.iter().map(|s| s.port).collect();
    ports.sort_unstable();
    ports.dedup();
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if !ports.is_empty() {
        out.push_str(&format!(
            "\t\ttcp dport {{ {list} }} counter drop comment \"weft: reach services through the mesh\"\n"
        ));
    }
    out.push_str(
        "\t}\n\
         \tchain lockdown_out {\n\
         \t\ttype filter hook output priority filter; policy accept;\n",
    );
    if !ports.is_empty() {
        out.push_str(&format!("\t\tmeta skuid {agent_uid} accept\n"));
        let mut by_port: Vec<&Guarded> = services.iter().collect();
        by_port.sort_by_key(|s| s.port);
        for s in by_port {
            if let Some(uid) = s.user {
                out.push_str(&format!(
                    "\t\toifname \"lo\" tcp dport {} meta skuid {uid} accept\n",
                    s.port
                ));
            }
        }
        out.push_str(&format!(
            "\t\toifname \"lo\" tcp dport {{ {list} }} counter drop comment \"weft: local processes too\"\n"
        ));
    }
    out.push_str("\t}\n}\n");
    out
}

fn nft(script: &str) -> Result<(), InterceptError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            InterceptError::Nft(format!(
                "cannot run nft ({e}): install nftables (apt install nftables) or set intercept = false"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| InterceptError::Nft(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| InterceptError::Nft(format!("nft: {e}")))?;
    if !out.status.success() {
        return Err(InterceptError::Nft(format!(
            "nft refused the ruleset: {} (the agent needs CAP_NET_ADMIN)",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Replaces the whole table with `ruleset` in one transaction.
pub fn apply(ruleset: &str) -> Result<(), InterceptError> {
    nft(&format!(
        "table inet weft\ndelete table inet weft\n{ruleset}"
    ))
}

/// Deletes the table (nothing else is touched).
pub fn remove() -> Result<(), InterceptError> {
    nft("table inet weft\ndelete table inet weft\n")
}

/// This process's real uid (from /proc, without unsafe code).
pub fn own_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_drops_other_hosts_and_other_local_users_but_lets_the_agent_in() {
        let r = ruleset(
            &[
                Guarded {
                    port: 9080,
                    user: Some(1001),
                },
                Guarded {
                    port: 6379,
                    user: None,
                },
            ],
            &["10.0.0.5:9080".parse().expect("addr")],
            0,
            15006,
        );
        assert!(
            r.contains("meta skuid { 1001 } ip daddr . tcp dport { 10.0.0.5 . 9080 } counter redirect to :15006"),
            "{r}"
        );
        assert!(r.starts_with("table inet weft {"), "{r}");
        assert!(r.contains("iifname \"lo\" accept"));
        assert!(r.contains("tcp dport { 6379, 9080 } counter drop"), "{r}");
        assert!(r.contains("meta skuid 0 accept"));
        assert!(
            r.contains("oifname \"lo\" tcp dport 9080 meta skuid 1001 accept"),
            "{r}"
        );
        assert!(
            r.contains("oifname \"lo\" tcp dport { 6379, 9080 } counter drop"),
            "{r}"
        );
        let empty = ruleset(&[], &[], 0, 15006);
        assert!(
            !empty.contains("drop") && !empty.contains("redirect"),
            "nothing to do: {empty}"
        );
    }
}

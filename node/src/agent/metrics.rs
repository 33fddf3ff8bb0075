//! Prometheus text exposition of the agent's state.

use std::fmt::{Display, Write as _};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use weft_ca::unix;
use weft_gossip::MemberStatus;

use super::node::Node;

/// Writes one metric family: HELP, TYPE, then `name{labels} value` per sample (an empty
/// label string writes `name value`).
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(String, &dyn Display)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Renders `/metrics`.
pub async fn render(node: &Node) -> String {
    let mut out = String::new();
    let members = node.members().await;
    let counts: Vec<(MemberStatus, usize)> = [
        MemberStatus::Alive,
        MemberStatus::Failed,
        MemberStatus::Left,
    ]
    .into_iter()
    .map(|s| (s, members.iter().filter(|m| m.status == s).count()))
    .collect();
    let samples: Vec<(String, &dyn Display)> = counts
        .iter()
        .map(|(s, n)| (format!("status=\"{s}\""), n as &dyn Display))
        .collect();
    family(
        &mut out,
        "weft_members",
        "gauge",
        "Cluster members by status, as this node sees them.",
        &samples,
    );

    let (_, leaf) = node.cert();
    let remaining = leaf.not_after_unix as i64 - unix(crate::clock::now()) as i64;
    let renewals = node.renewals.load(Ordering::Relaxed);
    let failures = node.renew_failures.load(Ordering::Relaxed);
    family(
        &mut out,
        "weft_cert_expiry_seconds",
        "gauge",
        "Seconds until this node's certificate expires.",
        &[(String::new(), &remaining)],
    );
    family(
        &mut out,
        "weft_cert_renewals_total",
        "counter",
        "Certificate renewals since start.",
        &[(String::new(), &renewals)],
    );
    family(
        &mut out,
        "weft_cert_renewal_failures",
        "gauge",
        "Consecutive failed renewal attempts.",
        &[(String::new(), &failures)],
    );

    let stats = node.gossip.stats();
    let dropped = stats.dropped_by_reason();
    let samples: Vec<(String, &dyn Display)> = dropped
        .iter()
        .map(|(reason, n)| (format!("reason=\"{reason}\""), n as &dyn Display))
        .collect();
    family(
        &mut out,
        "weft_gossip_dropped_total",
        "counter",
        "Gossip datagrams dropped, by reason.",
        &samples,
    );
    let rejected = stats.rejected_records.load(Ordering::Relaxed);
    family(
        &mut out,
        "weft_gossip_rejected_records_total",
        "counter",
        "Gossiped records whose signature or certificate did not verify.",
        &[(String::new(), &rejected)],
    );
    let (bytes_in, bytes_out) = (
        stats.bytes_in.load(Ordering::Relaxed),
        stats.bytes_out.load(Ordering::Relaxed),
    );
    family(
        &mut out,
        "weft_gossip_bytes_total",
        "counter",
        "Gossip bytes on the wire, by direction.",
        &[
            ("direction=\"in\"".into(), &bytes_in),
            ("direction=\"out\"".into(), &bytes_out),
        ],
    );

    let entries = node.config.live_count();
    family(
        &mut out,
        "weft_config_entries",
        "gauge",
        "Live cluster-config entries held by this node.",
        &[(String::new(), &entries)],
    );
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let age = format!(
        "{:.1}",
        now_ms.saturating_sub(node.config_synced_at_ms.load(Ordering::Relaxed)) as f64 / 1000.0
    );
    family(
        &mut out,
        "weft_config_digest_age_seconds",
        "gauge",
        "Seconds since this node's config digest last matched every alive peer's.",
        &[(String::new(), &age)],
    );
    out.push_str(&node.metrics.render());
    out
}

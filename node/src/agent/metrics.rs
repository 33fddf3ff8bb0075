//! Prometheus text exposition of the agent's state.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use weft_ca::unix;
use weft_gossip::MemberStatus;

use super::node::Node;

/// Renders `/metrics`.
pub async fn render(node: &Node) -> String {
    let mut out = String::new();
    let members = node.members().await;
    let _ = writeln!(
        out,
        "# HELP weft_members Cluster members by status, as this node sees them."
    );
    let _ = writeln!(out, "# TYPE weft_members gauge");
    for status in [
        MemberStatus::Alive,
        MemberStatus::Failed,
        MemberStatus::Left,
    ] {
        let n = members.iter().filter(|m| m.status == status).count();
        let _ = writeln!(out, "weft_members{{status=\"{status}\"}} {n}");
    }
    let (_, leaf) = node.cert();
    let remaining = leaf.not_after_unix as i64 - unix(SystemTime::now()) as i64;
    let _ = writeln!(
        out,
        "# HELP weft_cert_expiry_seconds Seconds until this node's certificate expires."
    );
    let _ = writeln!(out, "# TYPE weft_cert_expiry_seconds gauge");
    let _ = writeln!(out, "weft_cert_expiry_seconds {remaining}");
    let _ = writeln!(
        out,
        "# HELP weft_cert_renewals_total Certificate renewals since start."
    );
    let _ = writeln!(out, "# TYPE weft_cert_renewals_total counter");
    let _ = writeln!(
        out,
        "weft_cert_renewals_total {}",
        node.renewals.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP weft_cert_renewal_failures Consecutive failed renewal attempts."
    );
    let _ = writeln!(out, "# TYPE weft_cert_renewal_failures gauge");
    let _ = writeln!(
        out,
        "weft_cert_renewal_failures {}",
        node.renew_failures.load(Ordering::Relaxed)
    );

    let stats = node.gossip.stats();
    let _ = writeln!(
        out,
        "# HELP weft_gossip_dropped_total Gossip datagrams dropped, by reason."
    );
    let _ = writeln!(out, "# TYPE weft_gossip_dropped_total counter");
    for (reason, n) in stats.dropped_by_reason() {
        let _ = writeln!(out, "weft_gossip_dropped_total{{reason=\"{reason}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP weft_gossip_rejected_records_total Gossiped records whose signature or certificate did not verify.");
    let _ = writeln!(out, "# TYPE weft_gossip_rejected_records_total counter");
    let _ = writeln!(
        out,
        "weft_gossip_rejected_records_total {}",
        stats.rejected_records.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP weft_gossip_bytes_total Gossip bytes on the wire, by direction."
    );
    let _ = writeln!(out, "# TYPE weft_gossip_bytes_total counter");
    let _ = writeln!(
        out,
        "weft_gossip_bytes_total{{direction=\"in\"}} {}",
        stats.bytes_in.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "weft_gossip_bytes_total{{direction=\"out\"}} {}",
        stats.bytes_out.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP weft_config_entries Live cluster-config entries held by this node."
    );
    let _ = writeln!(out, "# TYPE weft_config_entries gauge");
    let _ = writeln!(out, "weft_config_entries {}", node.config.live_count());
    let synced = node.config_synced_at_ms.load(Ordering::Relaxed);
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let _ = writeln!(out, "# HELP weft_config_digest_age_seconds Seconds since this node's config digest last matched every alive peer's.");
    let _ = writeln!(out, "# TYPE weft_config_digest_age_seconds gauge");
    let _ = writeln!(
        out,
        "weft_config_digest_age_seconds {:.1}",
        now_ms.saturating_sub(synced) as f64 / 1000.0
    );
    out.push_str(&node.metrics.render());
    out
}

//! The dashboard's service graph: every service as a node, and the edges observed by
//! every alive member in the last minute (their gossiped summaries, merged), from gossip
//! alone, so any node's dashboard draws the whole mesh.

use weft_gossip::{Member, MemberStatus};

use super::edges::{merge, EdgeSummary};
use crate::catalog::Catalog;

/// The graph as the API serves it: `{"services": [...], "edges": [...]}`.
pub fn graph(
    members: &[Member],
    catalog: &Catalog,
    versions: &std::collections::BTreeMap<(String, String), super::versions::Figures>,
) -> serde_json::Value {
    let summaries = members
        .iter()
        .filter(|m| {
            m.status == MemberStatus::Alive
                && m.edge_summary.len() <= weft_gossip::membership::MAX_EDGES_VALUE
        })
        .filter_map(|m| serde_json::from_str::<Vec<EdgeSummary>>(&m.edge_summary).ok())
        .flatten();
    let edges = merge(summaries);
    let mut services: Vec<String> = catalog
        .instances
        .iter()
        .map(|i| i.service.to_string())
        .chain(
            edges
                .iter()
                .flat_map(|e| [e.source.clone(), e.destination.clone()]),
        )
        .filter(|s| s != "-")
        .collect();
    services.sort();
    services.dedup();
    // Per destination version, cluster-wide over the last minute (routed requests).
    let versions: Vec<serde_json::Value> = versions
        .iter()
        .filter(|(_, f)| f.requests > 0)
        .map(|((destination, version), f)| {
            serde_json::json!({
                "destination": destination,
                "version": version,
                "rps": f.requests as f64 / 60.0,
                "requests": f.requests,
                "error_rate": f.error_rate,
                "p50_ms": f.p50_ms,
                "p99_ms": f.p99_ms,
            })
        })
        .collect();
    serde_json::json!({ "services": services, "edges": edges, "versions": versions })
}

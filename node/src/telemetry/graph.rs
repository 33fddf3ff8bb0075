//! The dashboard's service graph: every service as a node, and the edges observed by
//! every alive member in the last minute (their gossiped summaries, merged), from gossip
//! alone, so any node's dashboard draws the whole mesh.

use weft_gossip::{Member, MemberStatus};

use super::edges::{merge, EdgeSummary};
use crate::catalog::Catalog;

/// The graph as the API serves it: `{"services": [...], "edges": [...]}`.
pub fn graph(members: &[Member], catalog: &Catalog) -> serde_json::Value {
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
    serde_json::json!({ "services": services, "edges": edges })
}

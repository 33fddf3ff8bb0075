//! Partitions (scenarios 10 and 11): a node cut off from everyone, and a node cut off from
//! the control side only (the CA and all gossip) while its data path still works.
//! Asserts that the partitioned node is detected as failed within 5 s and no request is
//! routed to it afterwards, that it is alive and serving again after healing, and that
//! the cut-off node keeps routing, without a failed request, on the catalog it last knew.

use std::time::{Duration, Instant};

use weft_tests::{eventually, Cluster};

use crate::common::{
    lab_with_api, lab_with_api_via, long, report, routable_on, steady_client, Sample,
};

/// Scenario 10: a partition isolates vm-3. vm-1 marks it failed within the detection
/// bound and stops routing to it; after healing it is alive and serves again.
#[test]
fn partition_isolates_a_node_then_heals() -> anyhow::Result<()> {
    let mut c = Cluster::new_lab("partition_isolates_a_node_then_heals")?;
    let up = lab_with_api(&mut c)?;
    let client = steady_client(up);
    std::thread::sleep(Duration::from_secs(1));

    let cut = Instant::now();
    c.lab().isolate(c.host("vm-3"))?;
    c.wait_status("vm-1", "vm-3", "failed", Duration::from_secs(10))?;
    let detected = cut.elapsed();
    std::thread::sleep(Duration::from_secs(if long() { 30 } else { 3 }));

    c.lab().heal()?;
    let healed = Instant::now();
    c.wait_all_see_all(&["vm-1", "vm-2", "vm-3"], Duration::from_secs(20))?;
    routable_on(&c, "vm-1", "api", "vm-3")?;
    let back = healed.elapsed();
    let samples = client.stop()?;

    // Requests started after vm-1 knew vm-3 was gone must all succeed, on vm-2.
    let settled = cut + detected + Duration::from_millis(500);
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at > settled && s.at < healed)
        .collect();
    let failed_after = after.iter().filter(|s| s.answered_by.is_none()).count();
    let to_vm3_after = after
        .iter()
        .filter(|s| s.answered_by.as_deref() == Some("vm-3"))
        .count();
    let during_cut: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= cut && s.at <= settled)
        .collect();
    let failed_during = during_cut
        .iter()
        .filter(|s| s.answered_by.is_none())
        .count();
    let slowest = during_cut.iter().map(|s| s.took).max().unwrap_or_default();
    report(
        "10 partition isolates a node",
        if failed_after == 0 && to_vm3_after == 0 { "pass" } else { "FAIL" },
        &format!(
            "failed on all observers in {detected:.2?}; {failed_during} of {} requests failed between cut and detection (slowest {slowest:.2?}); {failed_after} of {} failed after; serving again {back:.2?} after healing",
            during_cut.len(),
            after.len()
        ),
    );
    assert_eq!(
        failed_after, 0,
        "requests failed after the failure was detected"
    );
    assert_eq!(to_vm3_after, 0, "requests went to the isolated node");
    assert!(
        detected < Duration::from_secs(5),
        "detection took {detected:?}"
    );
    Ok(())
}

/// Scenario 11: vm-4 loses the CA and all gossip at once (only the QUIC data path to the
/// `api` nodes still works): it marks everyone failed and keeps routing to the instances
/// it last knew, on certificates that are still valid.
#[test]
fn cut_off_node_keeps_routing_on_what_it_last_knew() -> anyhow::Result<()> {
    let mut c = Cluster::new_lab("cut_off_node_keeps_routing_on_what_it_last_knew")?;
    let proxy = lab_with_api_via(&mut c, 4, "vm-4")?;
    let client = steady_client(proxy);
    std::thread::sleep(Duration::from_secs(1));
    let cut = Instant::now();
    let (v1, v2, v3, v4) = (
        c.host("vm-1"),
        c.host("vm-2"),
        c.host("vm-3"),
        c.host("vm-4"),
    );
    c.lab().cut(v4, v1)?;
    c.lab().cut_gossip(v4, v2)?;
    c.lab().cut_gossip(v4, v3)?;
    let vm4 = c.agent("vm-4");
    eventually(
        "vm-4 sees every peer failed",
        Duration::from_secs(15),
        || {
            Ok(["vm-1", "vm-2", "vm-3"]
                .iter()
                .all(|n| vm4.status_of(n).ok().flatten().as_deref() == Some("failed"))
                .then_some(()))
        },
    )?;
    let detected = cut.elapsed();
    std::thread::sleep(Duration::from_secs(if long() { 60 } else { 5 }));
    let samples = client.stop()?;
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at > cut + detected).collect();
    let failed = after.iter().filter(|s| s.answered_by.is_none()).count();
    let failed_total = samples
        .iter()
        .filter(|s| s.at > cut && s.answered_by.is_none())
        .count();
    report(
        "11 control side unreachable, data path up",
        if failed == 0 { "pass" } else { "FAIL" },
        &format!(
            "every peer failed on vm-4 after {detected:.2?}; {} requests after that, {failed} failed ({failed_total} failed since the cut)",
            after.len()
        ),
    );
    assert_eq!(
        failed, 0,
        "requests failed while routing on the last known catalog"
    );
    Ok(())
}

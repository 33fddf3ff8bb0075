//! The fleet simulation (`weft_gossip::sim`) at 100 nodes on tokio's paused clock: the
//! same script `bench gossip-sim` runs at 1 000, small enough for every `cargo test`.
//! The bounds are the bars for 1 000 nodes; 100 must meet them easily.

use std::time::Duration;

use weft_gossip::sim::{run, syn_size, Protocol, SimConfig, UDP_MTU};

#[tokio::test(start_paused = true)]
async fn a_hundred_nodes_converge_detect_and_heal_within_the_bars() {
    let mut cfg = SimConfig::agents(100);
    cfg.window = Duration::from_secs(5);
    cfg.partition_for = Duration::from_secs(5);
    let wall = std::time::Instant::now();
    let r = run(&cfg).await.expect("simulation runs");
    println!("{r:#?}\nwall time {:.1} s", wall.elapsed().as_secs_f64());

    assert!(r.formed.is_some(), "100 nodes never formed: {r:?}");
    assert_eq!(
        r.oversize, 0,
        "a message exceeded the datagram at 100 nodes"
    );
    assert!(r.lost > 0, "the loss rate was not applied");
    assert!(
        r.bytes_per_node_s > 0.0 && r.bytes_per_node_s <= 120_000.0,
        "bytes per node per second: {}",
        r.bytes_per_node_s
    );
    let bar = Duration::from_secs(3);
    assert!(
        r.new_key.is_some_and(|t| t <= bar),
        "new value: {:?}",
        r.new_key
    );
    assert!(r.joined.is_some_and(|t| t <= bar), "joins: {:?}", r.joined);
    assert_eq!(r.undetected, 0, "kills never detected everywhere");
    assert!(
        r.detection_at(0.99)
            .is_some_and(|t| t <= Duration::from_secs(5)),
        "detection under 5 % loss: {:?}",
        r.detection
    );
    assert!(
        r.healed.is_some_and(|t| t <= Duration::from_secs(10)),
        "heal: {:?}",
        r.healed
    );
    assert_eq!(
        r.false_failures, 0,
        "alive nodes seen failed under 5 % loss"
    );
}

/// chitchat's uncompressed digest (V0, what agents sent before) stops fitting a datagram
/// between 1 000 and 1 500 members with a real fleet's ids: past that a node cannot open a
/// round at all. The compressed digest agents send now (V1) fits at 3 000.
#[tokio::test(start_paused = true)]
async fn the_digest_fits_a_datagram_past_a_thousand_members() {
    let v0_1000 = syn_size(1000, Protocol::V0).await.expect("runs");
    let v0_1500 = syn_size(1500, Protocol::V0).await.expect("runs");
    let v1_3000 = syn_size(3000, Protocol::V1).await.expect("runs");
    println!("SYN: V0 1000 {v0_1000:?}, V0 1500 {v0_1500:?}, V1 3000 {v1_3000:?}");
    assert!(v0_1000.is_some_and(|n| n > UDP_MTU / 2), "{v0_1000:?}");
    assert_eq!(v0_1500, None, "V0 at 1 500 members should not fit");
    assert!(v1_3000.is_some_and(|n| n < UDP_MTU), "{v1_3000:?}");
}

//! Fault suite: agents as separate hosts in network namespaces (or on loopback), broken
//! one way per module, each test asserting what must still hold and printing a
//! `FAULT | scenario | outcome | figures` line. `tests/faults/long.sh` runs the same
//! tests longer (WEFT_FAULT_LONG=1) and prints those lines as a table.
//!
//! Scenarios by number, and where they live:
//!
//! | # | breaks | module |
//! | --- | --- | --- |
//! | 1 | a join token, replayed or reused after a wipe | `join` |
//! | 2–3 | the CA's CSR policy, asked over the wire | `certificates` |
//! | 4 | the CA, unreachable past half life and past expiry (also on a stepped clock) | `certificates` |
//! | 5 | certificates, rotated every 10 s under traffic | `certificates` |
//! | 6 | a node's membership, revoked with a tunnel open | `revocation` |
//! | 7 | gossip, forged (`tests/tests/gossip_attacks.rs`) | — |
//! | 8 | the gossip key, rotated | `keys` |
//! | 9 | links: 20 % loss, one-way cuts | `loss` |
//! | 10–11 | the network: a partitioned node, a node cut off from the control side | `partition` |
//! | 12 | nodes, restarted one after another under load | `restarts` |
//! | 13 | backends failing everything: no retry storm (`tests/tests/traffic.rs`) | — |
//! | 14–16 | the disk: kill -9 during writes, a full disk, a lost store | `disk` |
//! | 17 | parsers, fuzzed (`tests/faults/long.sh`) | — |
//! | 18 | HTTP from an app: smuggling, ambiguous framing, path tricks | `http` |
//! | 19 | one agent, flooded (`tests/tests/floods.rs`) | — |
//! | 20 | the bootstrap node (root holder), destroyed with two replicas left | `replicas` |
//! | 21–22 | one name at two replicas at once; a token replayed at another replica | `replicas` |
//! | 23 | the root, rotated under traffic with a node down at the start | `replicas` |
//! | 24 | a revocation set larger than one gossip value (600 serials) | `replicas` |
//! | 25 | the root kept offline: replicas issue nodes, tokens and operators | `replicas` |

mod common;

mod certificates;
mod disk;
mod http;
mod join;
mod keys;
mod loss;
mod partition;
mod replicas;
mod restarts;
mod revocation;

//! Per-version figures: for each (destination, version) this node sent requests to, the
//! running totals since the agent started — requests, failures and a log-scale latency
//! histogram. Each node publishes its totals in gossip (`weft.figures`); any node sums
//! every member's totals and subtracts an earlier sum to get cluster-wide figures for an
//! interval (`delta`), which is what a rollout is judged on and what `/v1/graph` shows
//! per version. Totals, not windows: a node that missed a round loses nothing, and the
//! interval is whatever the reader chooses. Memory is bounded by `MAX_PAIRS`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::edges::LAT_BUCKETS;

/// Most (destination, version) pairs counted; new ones beyond it are not.
pub const MAX_PAIRS: usize = 256;
/// Most pairs published in gossip (the busiest).
pub const MAX_PUBLISHED: usize = 40;

/// Running totals of one (destination, version).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Requests.
    pub n: u64,
    /// Failed requests (5xx, mesh refusals, timeouts, gRPC server failures).
    pub e: u64,
    /// Latency histogram: upper bounds 0.25 ms × 2^i.
    pub h: [u64; LAT_BUCKETS],
}

impl Totals {
    /// Counts one request.
    pub fn record(&mut self, error: bool, latency_ms: f64) {
        self.n += 1;
        if error {
            self.e += 1;
        }
        let i = super::edges::lat_bucket(latency_ms);
        self.h[i] += 1;
    }

    fn add(&mut self, o: &Totals) {
        self.n += o.n;
        self.e += o.e;
        for (a, b) in self.h.iter_mut().zip(o.h) {
            *a += b;
        }
    }

    /// `self - earlier`, or `self` when a counter went backwards (the node restarted).
    fn since(&self, earlier: &Totals) -> Totals {
        if earlier.n > self.n
            || earlier.e > self.e
            || self.h.iter().zip(earlier.h).any(|(a, b)| b > *a)
        {
            return self.clone();
        }
        let mut h = [0; LAT_BUCKETS];
        for (i, slot) in h.iter_mut().enumerate() {
            *slot = self.h[i] - earlier.h[i];
        }
        Totals {
            n: self.n - earlier.n,
            e: self.e - earlier.e,
            h,
        }
    }

    /// Rates and quantiles of these totals.
    pub fn figures(&self) -> Figures {
        Figures {
            requests: self.n,
            errors: self.e,
            error_rate: if self.n == 0 {
                0.0
            } else {
                self.e as f64 / self.n as f64
            },
            p50_ms: super::edges::quantile_of(&self.h, self.n, 0.50),
            p99_ms: super::edges::quantile_of(&self.h, self.n, 0.99),
        }
    }
}

/// Figures of one version over an interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// errors / requests (0 with no requests).
    pub error_rate: f64,
    /// Median latency, ms (histogram bucket bound; 0 with no requests).
    pub p50_ms: f64,
    /// 99th percentile latency, ms (histogram bucket bound; 0 with no requests).
    pub p99_ms: f64,
}

/// This node's totals: destination → version → totals (looked up by `&str`, so a
/// request allocates nothing once its pair is known).
#[derive(Debug, Default)]
pub struct VersionTotals {
    pairs: HashMap<String, HashMap<String, Totals>>,
    count: usize,
}

impl VersionTotals {
    /// Counts one request to `version` of `destination`.
    pub fn record(&mut self, destination: &str, version: &str, error: bool, latency_ms: f64) {
        if let Some(t) = self
            .pairs
            .get_mut(destination)
            .and_then(|by_version| by_version.get_mut(version))
        {
            t.record(error, latency_ms);
            return;
        }
        if self.count >= MAX_PAIRS {
            return;
        }
        let mut t = Totals::default();
        t.record(error, latency_ms);
        self.pairs
            .entry(destination.to_owned())
            .or_default()
            .insert(version.to_owned(), t);
        self.count += 1;
    }

    /// Every pair and its totals, in no order.
    fn iter(&self) -> impl Iterator<Item = ((&String, &String), &Totals)> {
        self.pairs
            .iter()
            .flat_map(|(d, by_version)| by_version.iter().map(move |(v, t)| ((d, v), t)))
    }

    /// Every pair's totals (for `/metrics`).
    pub fn snapshot(&self) -> Vec<((String, String), Totals)> {
        let mut v: Vec<_> = self
            .iter()
            .map(|((d, ver), t)| ((d.clone(), ver.clone()), t.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// What this node publishes: the busiest `MAX_PUBLISHED` pairs.
    pub fn published(&self) -> Published {
        let mut v: Vec<_> = self.iter().collect();
        v.sort_by(|a, b| b.1.n.cmp(&a.1.n).then_with(|| a.0.cmp(&b.0)));
        Published {
            f: v.into_iter()
                .take(MAX_PUBLISHED)
                .map(|((d, ver), t)| PublishedPair {
                    d: d.clone(),
                    v: ver.clone(),
                    t: t.clone(),
                })
                .collect(),
        }
    }
}

/// One pair as gossiped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedPair {
    /// Destination.
    pub d: String,
    /// Version.
    pub v: String,
    /// Totals.
    pub t: Totals,
}

/// A node's gossiped totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    /// Pairs.
    pub f: Vec<PublishedPair>,
}

impl Published {
    /// Parses a member's gossiped value (anything malformed or oversized counts as none).
    pub fn parse(raw: &str) -> Self {
        if raw.is_empty() || raw.len() > weft_gossip::MAX_FIGURES_VALUE {
            return Self::default();
        }
        serde_json::from_str(raw).unwrap_or_default()
    }
}

/// Every member's totals at one moment: (node, its generation) → pair → totals.
#[derive(Debug, Clone, Default)]
pub struct ClusterTotals {
    nodes: BTreeMap<(String, u64), HashMap<(String, String), Totals>>,
}

impl ClusterTotals {
    /// Adds one member's published value.
    pub fn add_member(&mut self, node: &str, generation: u64, published: Published) {
        let pairs = published.f.into_iter().map(|p| ((p.d, p.v), p.t)).collect();
        self.nodes.insert((node.to_owned(), generation), pairs);
    }

    /// Cluster-wide figures of each (destination, version) between `earlier` and `self`:
    /// per node the difference (a node that restarted or is new counts from zero).
    pub fn delta(&self, earlier: &ClusterTotals) -> BTreeMap<(String, String), Figures> {
        let mut sum: BTreeMap<(String, String), Totals> = BTreeMap::new();
        for (node, pairs) in &self.nodes {
            let before = earlier.nodes.get(node);
            for (pair, t) in pairs {
                let d = match before.and_then(|b| b.get(pair)) {
                    Some(b) => t.since(b),
                    None => t.clone(),
                };
                sum.entry(pair.clone()).or_default().add(&d);
            }
        }
        sum.into_iter().map(|(k, t)| (k, t.figures())).collect()
    }
}

/// The cluster's totals as seen over the last minute, for figures over a recent window
/// (`/v1/graph`, `/v1/rollouts`): a sample at most every `RECENT_EVERY_MS`, at most
/// `RECENT_SAMPLES` of them (memory: samples × members × published pairs).
#[derive(Debug, Default)]
pub struct Recent {
    samples: std::collections::VecDeque<(u64, ClusterTotals)>,
}

/// Samples kept (70 s at one per 5 s).
pub const RECENT_SAMPLES: usize = 14;
/// Least time between two samples.
pub const RECENT_EVERY_MS: u64 = 5_000;

impl Recent {
    /// Adds the totals seen at `now_ms` (ignored within `RECENT_EVERY_MS` of the last).
    pub fn push(&mut self, now_ms: u64, totals: ClusterTotals) {
        if self
            .samples
            .back()
            .is_some_and(|(last, _)| now_ms < last + RECENT_EVERY_MS)
        {
            return;
        }
        self.samples.push_back((now_ms, totals));
        while self.samples.len() > RECENT_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// Figures of each (destination, version) over about the last `secs` seconds.
    pub fn window(&self, secs: u64) -> BTreeMap<(String, String), Figures> {
        let Some((newest_ms, newest)) = self.samples.back() else {
            return BTreeMap::new();
        };
        let from = newest_ms.saturating_sub(secs * 1000);
        let earliest = self
            .samples
            .iter()
            .find(|(ms, _)| *ms >= from)
            .map(|(_, t)| t)
            .unwrap_or(newest);
        newest.delta(earliest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(n: u64, e: u64, ms: f64) -> Published {
        let mut t = VersionTotals::default();
        for i in 0..n {
            t.record("reviews", "v2", i < e, ms);
        }
        t.published()
    }

    #[test]
    fn deltas_sum_nodes_and_survive_restarts() {
        let mut a = ClusterTotals::default();
        a.add_member("n1", 1, published(100, 0, 1.0));
        a.add_member("n2", 1, published(50, 0, 1.0));
        let mut b = ClusterTotals::default();
        b.add_member("n1", 1, published(150, 10, 1.0));
        // n2 restarted (new generation): its 30 count from zero.
        b.add_member("n2", 2, published(30, 0, 1.0));
        // n3 is new.
        b.add_member("n3", 1, published(20, 0, 300.0));
        let f = &b.delta(&a)[&("reviews".to_owned(), "v2".to_owned())];
        assert_eq!(f.requests, 50 + 30 + 20);
        assert_eq!(f.errors, 10);
        assert!((f.error_rate - 0.1).abs() < 1e-9);
        assert_eq!(f.p50_ms, 1.0);
        assert!(f.p99_ms >= 256.0, "{}", f.p99_ms);
    }

    #[test]
    fn recent_windows_subtract_the_oldest_sample_inside_them() {
        let mut r = Recent::default();
        let snap = |n| {
            let mut c = ClusterTotals::default();
            c.add_member("n1", 1, published(n, 0, 1.0));
            c
        };
        r.push(0, snap(10));
        r.push(30_000, snap(40));
        r.push(60_000, snap(100));
        let key = ("reviews".to_owned(), "v2".to_owned());
        assert_eq!(r.window(30)[&key].requests, 60);
        assert_eq!(r.window(60)[&key].requests, 90);
        assert_eq!(r.window(0)[&key].requests, 0);
    }

    #[test]
    fn a_counter_going_backwards_counts_from_zero() {
        let mut a = ClusterTotals::default();
        a.add_member("n1", 1, published(100, 0, 1.0));
        let mut b = ClusterTotals::default();
        b.add_member("n1", 1, published(10, 0, 1.0));
        assert_eq!(
            b.delta(&a)[&("reviews".to_owned(), "v2".to_owned())].requests,
            10
        );
    }

    #[test]
    fn pairs_are_bounded_and_garbage_parses_to_nothing() {
        let mut t = VersionTotals::default();
        for i in 0..(MAX_PAIRS + 5) {
            t.record(&format!("s{i}"), "v1", false, 1.0);
        }
        assert_eq!(t.count, MAX_PAIRS);
        assert_eq!(t.snapshot().len(), MAX_PAIRS);
        assert_eq!(t.published().f.len(), MAX_PUBLISHED);
        assert_eq!(Published::parse("{not json"), Published::default());
    }

    proptest::proptest! {
        #[test]
        fn parsing_gossip_never_panics(s in ".{0,200}") {
            let _ = Published::parse(&s);
        }
    }
}

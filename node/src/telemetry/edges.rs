//! Live per-edge statistics without Prometheus: for each source → destination edge this
//! node sends on, a ring of 5-second buckets covering the last 15 minutes, each with a
//! request count, an error count and a log-scale latency histogram. Memory is bounded:
//! at most `MAX_EDGES` edges × `BUCKETS` buckets × (8 + 4 × `LAT_BUCKETS`) bytes
//! (≈ 2.4 MB at the limits). Pure apart from the clock passed in.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Bucket width, seconds.
pub const BUCKET_SECS: u64 = 5;
/// Buckets kept (15 minutes).
pub const BUCKETS: usize = 180;
/// Edges tracked at most; new edges beyond it are not tracked.
pub const MAX_EDGES: usize = 256;
/// Latency histogram buckets: upper bounds 0.25 ms × 2^i.
pub const LAT_BUCKETS: usize = 14;

#[derive(Debug, Clone, Default)]
struct Bucket {
    epoch: u64,
    requests: u32,
    errors: u32,
    latency: [u32; LAT_BUCKETS],
}

/// One edge's ring.
#[derive(Debug, Clone)]
struct Ring {
    buckets: Vec<Bucket>,
}

impl Default for Ring {
    fn default() -> Self {
        Self {
            buckets: vec![Bucket::default(); BUCKETS],
        }
    }
}

/// The histogram bucket of a latency.
pub(crate) fn lat_bucket(ms: f64) -> usize {
    let mut bound = 0.25;
    for i in 0..LAT_BUCKETS {
        if ms <= bound {
            return i;
        }
        bound *= 2.0;
    }
    LAT_BUCKETS - 1
}

fn lat_bound_ms(i: usize) -> f64 {
    0.25 * f64::from(1u32 << i)
}

/// An edge's recent numbers, as gossiped and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSummary {
    /// Source service or "-".
    pub source: String,
    /// Destination service.
    pub destination: String,
    /// Requests per second over the window.
    pub rps: f64,
    /// Share of requests that failed (5xx, refused, errors), 0..1.
    pub error_rate: f64,
    /// Median latency, ms (bucket upper bound).
    pub p50_ms: f64,
    /// 99th percentile latency, ms (bucket upper bound).
    pub p99_ms: f64,
}

/// All edges of this node, by source then destination (looked up by `&str`: nothing is
/// allocated per request once an edge exists). The same structure keeps the per-version
/// series of the service pages, keyed by destination then version.
#[derive(Debug, Default)]
pub struct EdgeStats {
    rings: HashMap<String, HashMap<String, Ring>>,
    count: usize,
}

/// One 5-second bucket of a series, as the service page draws it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Start of the bucket, Unix seconds.
    pub t: u64,
    /// Requests per second in it.
    pub rps: f64,
    /// Share that failed, 0..1 (0 with no requests).
    pub error_rate: f64,
    /// Median latency, ms (bucket upper bound; 0 with no requests).
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

impl EdgeStats {
    /// Records one request or stream at Unix second `now`.
    pub fn record(
        &mut self,
        source: &str,
        destination: &str,
        error: bool,
        latency_ms: f64,
        now: u64,
    ) {
        let known = self
            .rings
            .get(source)
            .is_some_and(|d| d.contains_key(destination));
        if !known {
            if self.count >= MAX_EDGES {
                return;
            }
            self.count += 1;
            self.rings
                .entry(source.to_owned())
                .or_default()
                .insert(destination.to_owned(), Ring::default());
        }
        let Some(ring) = self
            .rings
            .get_mut(source)
            .and_then(|d| d.get_mut(destination))
        else {
            return;
        };
        let epoch = now / BUCKET_SECS;
        let b = &mut ring.buckets[(epoch % BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        b.requests = b.requests.saturating_add(1);
        if error {
            b.errors = b.errors.saturating_add(1);
        }
        let i = lat_bucket(latency_ms);
        b.latency[i] = b.latency[i].saturating_add(1);
    }

    /// Summaries over the last `window_secs` (rounded to whole buckets) at `now`.
    pub fn summaries(&self, window_secs: u64, now: u64) -> Vec<EdgeSummary> {
        let current = now / BUCKET_SECS;
        let n = (window_secs / BUCKET_SECS).clamp(1, BUCKETS as u64);
        let mut out: Vec<EdgeSummary> = self
            .rings
            .iter()
            .flat_map(|(src, dsts)| dsts.iter().map(move |(dst, ring)| (src, dst, ring)))
            .filter_map(|(src, dst, ring)| {
                let (mut req, mut err, mut lat) = (0u64, 0u64, [0u64; LAT_BUCKETS]);
                for b in &ring.buckets {
                    if b.epoch + n > current && b.epoch <= current {
                        req += u64::from(b.requests);
                        err += u64::from(b.errors);
                        for (t, c) in lat.iter_mut().zip(b.latency) {
                            *t += u64::from(c);
                        }
                    }
                }
                (req > 0).then(|| EdgeSummary {
                    source: src.clone(),
                    destination: dst.clone(),
                    rps: req as f64 / (n * BUCKET_SECS) as f64,
                    error_rate: err as f64 / req as f64,
                    p50_ms: quantile(&lat, req, 0.50),
                    p99_ms: quantile(&lat, req, 0.99),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.source, &a.destination).cmp(&(&b.source, &b.destination)));
        out
    }

    /// The last 15 minutes of every ring under `first`, bucket by bucket (oldest first,
    /// empty buckets included), by second key: for the version series, a service's
    /// versions.
    pub fn series(&self, first: &str, now: u64) -> Vec<(String, Vec<Point>)> {
        let current = now / BUCKET_SECS;
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        let mut out: Vec<(String, Vec<Point>)> = self
            .rings
            .get(first)
            .into_iter()
            .flatten()
            .map(|(second, ring)| {
                let points = (oldest..=current)
                    .map(|epoch| {
                        let b = &ring.buckets[(epoch % BUCKETS as u64) as usize];
                        let (req, err) = if b.epoch == epoch {
                            (u64::from(b.requests), u64::from(b.errors))
                        } else {
                            (0, 0)
                        };
                        let lat: [u64; LAT_BUCKETS] = if b.epoch == epoch {
                            b.latency.map(u64::from)
                        } else {
                            [0; LAT_BUCKETS]
                        };
                        Point {
                            t: epoch * BUCKET_SECS,
                            rps: req as f64 / BUCKET_SECS as f64,
                            error_rate: if req > 0 {
                                err as f64 / req as f64
                            } else {
                                0.0
                            },
                            p50_ms: quantile_of(&lat, req, 0.50),
                            p99_ms: quantile_of(&lat, req, 0.99),
                        }
                    })
                    .collect();
                (second.clone(), points)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Quantile `q` of a histogram holding `total` samples (bucket upper bound; 0 when empty).
pub(crate) fn quantile_of(lat: &[u64; LAT_BUCKETS], total: u64, q: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    quantile(lat, total, q)
}

fn quantile(lat: &[u64; LAT_BUCKETS], total: u64, q: f64) -> f64 {
    let target = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in lat.iter().enumerate() {
        seen += c;
        if seen >= target {
            return lat_bound_ms(i);
        }
    }
    lat_bound_ms(LAT_BUCKETS - 1)
}

/// Merges the summaries several nodes published for the same edges: rates and errors
/// add up, latency quantiles take the worst.
pub fn merge(all: impl IntoIterator<Item = EdgeSummary>) -> Vec<EdgeSummary> {
    let mut by_edge: HashMap<(String, String), EdgeSummary> = HashMap::new();
    for s in all {
        let key = (s.source.clone(), s.destination.clone());
        match by_edge.get_mut(&key) {
            None => {
                by_edge.insert(key, s);
            }
            Some(m) => {
                let total = m.rps + s.rps;
                if total > 0.0 {
                    m.error_rate = (m.error_rate * m.rps + s.error_rate * s.rps) / total;
                }
                m.rps = total;
                m.p50_ms = m.p50_ms.max(s.p50_ms);
                m.p99_ms = m.p99_ms.max(s.p99_ms);
            }
        }
    }
    let mut out: Vec<EdgeSummary> = by_edge.into_values().collect();
    out.sort_by(|a, b| (&a.source, &a.destination).cmp(&(&b.source, &b.destination)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_errors_and_quantiles() {
        let mut s = EdgeStats::default();
        let now = 1_000_000;
        for i in 0..100 {
            let lat = if i < 98 { 0.2 } else { 100.0 };
            s.record("web", "api", i % 10 == 0, lat, now - (i % 50));
        }
        let sum = &s.summaries(60, now)[0];
        assert!((sum.rps - 100.0 / 60.0).abs() < 1e-9, "{}", sum.rps);
        assert!((sum.error_rate - 0.1).abs() < 1e-9);
        assert_eq!(sum.p50_ms, 0.25);
        assert!(sum.p99_ms >= 100.0);
        // Fifteen minutes later it has aged out.
        assert!(s.summaries(60, now + 16 * 60).is_empty());
    }

    #[test]
    fn edges_are_bounded() {
        let mut s = EdgeStats::default();
        for i in 0..(MAX_EDGES + 10) {
            s.record("a", &format!("svc{i}"), false, 1.0, 100);
        }
        assert_eq!(s.summaries(60, 100).len(), MAX_EDGES);
    }

    #[test]
    fn a_series_has_every_bucket_of_fifteen_minutes() {
        let mut s = EdgeStats::default();
        let now = 1_000_000;
        for _ in 0..10 {
            s.record("reviews", "v1", false, 2.0, now);
            s.record("reviews", "v2", true, 50.0, now - 60);
        }
        let series = s.series("reviews", now);
        assert_eq!(series.len(), 2);
        let (v1, v2) = (&series[0], &series[1]);
        assert_eq!((v1.0.as_str(), v2.0.as_str()), ("v1", "v2"));
        assert_eq!(v1.1.len(), BUCKETS);
        let last = v1.1.last().expect("points");
        assert_eq!(last.rps, 2.0);
        assert_eq!(last.error_rate, 0.0);
        let v2_hit = v2.1.iter().find(|p| p.rps > 0.0).expect("a v2 bucket");
        assert_eq!(v2_hit.error_rate, 1.0);
        assert!(v2_hit.p99_ms >= 50.0);
        assert!(s.series("ratings", now).is_empty());
    }

    #[test]
    fn merging_adds_rates() {
        let e = |rps: f64, err: f64, p99: f64| EdgeSummary {
            source: "a".into(),
            destination: "b".into(),
            rps,
            error_rate: err,
            p50_ms: 1.0,
            p99_ms: p99,
        };
        let m = merge([e(10.0, 0.0, 5.0), e(30.0, 0.4, 2.0)]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].rps, 40.0);
        assert!((m[0].error_rate - 0.3).abs() < 1e-9);
        assert_eq!(m[0].p99_ms, 5.0);
    }
}

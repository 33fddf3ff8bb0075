//! Route rules: the `route` entries (ordered HTTP matches, each sending to version
//! subsets by weight; the entry name is the destination service) and the version choice
//! for one request. Decisions are pure; the balancer then picks an instance of the
//! chosen version (`load_balancer`).

use serde::{Deserialize, Serialize};

use crate::config::ValueError;

/// How a path is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum PathMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Regular expression (RE2 syntax, linear time).
    Regex(String),
}

/// How a header is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// Equal to this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Only presence is required (when neither exact nor regex is set).
    #[serde(default)]
    pub present: bool,
}

/// What a rule matches; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Path condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Method condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

/// A version subset and its weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedVersion {
    /// Version label.
    pub version: String,
    /// Relative weight.
    pub weight: u32,
}

/// One rule: a match and where matching requests go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Conditions (empty: every request).
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// Destinations.
    pub to: Vec<WeightedVersion>,
}

/// Sticky A/B: the same user always lands on the same version of a weighted split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Sticky {
    /// Hash of this request header's value.
    Header(String),
    /// Hash of this cookie's value.
    Cookie(String),
}

/// Traffic mirroring: a copy of a share of requests goes to another version,
/// fire-and-forget (its answers are discarded; it never delays or fails the request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The version copies go to.
    pub version: String,
    /// Percent of requests copied (1–100).
    pub percent: u32,
}

/// A `route` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Rules, first match wins; no match → any version.
    pub rules: Vec<RouteRule>,
    /// Makes weighted choices stable per user (requests without the value are random).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// Copies a share of requests to another version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
}

/// A request as routing sees it.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    /// Normalised path.
    pub path: &'a str,
    /// Method.
    pub method: &'a str,
    /// Header lookup (lower-case name).
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
}

fn regex(field: &'static str, pattern: &str) -> Result<regex::Regex, ValueError> {
    if pattern.len() > 512 {
        return Err(ValueError::new(field, "regex longer than 512 bytes"));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| ValueError::new(field, e.to_string()))
}

fn label_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl Route {
    /// Checks every field; names the first bad one.
    pub fn validate(&self) -> Result<(), ValueError> {
        if self.rules.is_empty() || self.rules.len() > 64 {
            return Err(ValueError::new("rules", "between 1 and 64 rules"));
        }
        if let Some(m) = &self.mirror {
            if !label_ok(&m.version) {
                return Err(ValueError::new(
                    "mirror.version",
                    format!("{:?}: up to 63 of [A-Za-z0-9._-]", m.version),
                ));
            }
            if !(1..=100).contains(&m.percent) {
                return Err(ValueError::new("mirror.percent", "between 1 and 100"));
            }
        }
        for r in &self.rules {
            if r.to.is_empty() || r.to.len() > 16 {
                return Err(ValueError::new("rules.to", "between 1 and 16 destinations"));
            }
            if r.to.iter().map(|w| u64::from(w.weight)).sum::<u64>() == 0 {
                return Err(ValueError::new(
                    "rules.to.weight",
                    "weights must not all be 0",
                ));
            }
            for w in &r.to {
                if !label_ok(&w.version) {
                    return Err(ValueError::new(
                        "rules.to.version",
                        format!("{:?}: up to 63 of [A-Za-z0-9._-]", w.version),
                    ));
                }
                if w.weight > 10_000 {
                    return Err(ValueError::new("rules.to.weight", "at most 10000"));
                }
            }
            match &r.matches.path {
                Some(PathMatch::Exact(p) | PathMatch::Prefix(p)) if !p.starts_with('/') => {
                    return Err(ValueError::new("rules.match.path", "must start with /"))
                }
                Some(PathMatch::Regex(p)) => {
                    regex("rules.match.path.regex", p)?;
                }
                _ => {}
            }
            if let Some(m) = &r.matches.method {
                if m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(ValueError::new(
                        "rules.match.method",
                        "an upper-case HTTP method",
                    ));
                }
            }
            for h in &r.matches.headers {
                if h.name.is_empty()
                    || !h
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(ValueError::new(
                        "rules.match.headers.name",
                        format!("{:?} is not a header name", h.name),
                    ));
                }
                if let Some(re) = &h.regex {
                    regex("rules.match.headers.regex", re)?;
                }
            }
        }
        Ok(())
    }

    /// The stable draw for `req` in `0..total` when the route is sticky and the request
    /// carries the header or cookie (FNV-1a of the value).
    pub fn sticky_draw(&self, req: &RequestView<'_>, total: u64) -> Option<u64> {
        let value = match self.sticky.as_ref()? {
            Sticky::Header(h) => (req.header)(&h.to_ascii_lowercase())?.to_owned(),
            Sticky::Cookie(c) => (req.header)("cookie")?
                .split(';')
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(k, _)| k == c)
                .map(|(_, v)| v.to_owned())?,
        };
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in value.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Some(h % total.max(1))
    }

    /// The rule matching `req`, if any.
    pub fn matching_rule(&self, req: &RequestView<'_>) -> Option<&RouteRule> {
        self.rules.iter().find(|r| rule_matches(&r.matches, req))
    }

    /// The version for `req`: the first matching rule's weighted choice, with `draw` a
    /// uniform number in `0..total weight`. None: no rule matched, any version.
    pub fn pick_version(
        &self,
        req: &RequestView<'_>,
        draw: impl FnOnce(u64) -> u64,
    ) -> Option<String> {
        let rule = self.matching_rule(req)?;
        let total: u64 = rule.to.iter().map(|w| u64::from(w.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut x = draw(total);
        for w in &rule.to {
            if x < u64::from(w.weight) {
                return Some(w.version.clone());
            }
            x -= u64::from(w.weight);
        }
        rule.to.last().map(|w| w.version.clone())
    }
}

/// Compiled regexes by pattern, so requests never compile one (bounded; cleared when full).
fn cached_regex(pattern: &str) -> Option<regex::Regex> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = map.get(pattern) {
        return r.clone();
    }
    if map.len() >= 1024 {
        map.clear();
    }
    let compiled = regex("", pattern).ok();
    map.insert(pattern.to_owned(), compiled.clone());
    compiled
}

fn rule_matches(m: &RouteMatch, req: &RequestView<'_>) -> bool {
    let path_ok = match &m.path {
        None => true,
        Some(PathMatch::Exact(p)) => req.path == p,
        Some(PathMatch::Prefix(p)) => req.path.starts_with(p.as_str()),
        Some(PathMatch::Regex(p)) => cached_regex(p).is_some_and(|re| re.is_match(req.path)),
    };
    let method_ok = m.method.as_deref().is_none_or(|x| x == req.method);
    let headers_ok = m.headers.iter().all(|h| {
        let v = (req.header)(&h.name.to_ascii_lowercase());
        match (&h.exact, &h.regex) {
            (Some(e), _) => v == Some(e.as_str()),
            (None, Some(r)) => v.is_some_and(|v| cached_regex(r).is_some_and(|re| re.is_match(v))),
            (None, None) => v.is_some(),
        }
    });
    path_ok && method_ok && headers_ok
}

/// Parses `v1=90,v2=10` into weighted versions.
pub fn parse_split(s: &str) -> Result<Vec<WeightedVersion>, ValueError> {
    s.split(',')
        .map(|part| {
            let (v, w) = part.split_once('=').ok_or_else(|| {
                ValueError::new("split", format!("{part:?}: expected VERSION=WEIGHT"))
            })?;
            let weight = w.trim().parse().map_err(|_| {
                ValueError::new("split", format!("{part:?}: weight must be a number"))
            })?;
            Ok(WeightedVersion {
                version: v.trim().to_owned(),
                weight,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(path: &'a str, header: &'a dyn Fn(&str) -> Option<&'a str>) -> RequestView<'a> {
        RequestView {
            path,
            method: "GET",
            header,
        }
    }

    #[test]
    fn split_weights() {
        let r = Route {
            rules: vec![RouteRule {
                matches: RouteMatch::default(),
                to: parse_split("v1=90,v2=10").expect("split"),
            }],
            sticky: None,
            mirror: None,
        };
        r.validate().expect("valid");
        let none = |_: &str| None;
        let mut counts = [0u32; 2];
        for x in 0..100 {
            match r.pick_version(&view("/", &none), |_| x).as_deref() {
                Some("v1") => counts[0] += 1,
                Some("v2") => counts[1] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(counts, [90, 10]);
    }

    #[test]
    fn header_match_goes_first() {
        let r = Route {
            rules: vec![
                RouteRule {
                    matches: RouteMatch {
                        headers: vec![HeaderMatch {
                            name: "x-user".into(),
                            exact: Some("beta".into()),
                            regex: None,
                            present: false,
                        }],
                        ..Default::default()
                    },
                    to: parse_split("v2=1").expect("split"),
                },
                RouteRule {
                    matches: RouteMatch::default(),
                    to: parse_split("v1=1").expect("split"),
                },
            ],
            sticky: None,
            mirror: None,
        };
        let beta = |n: &str| (n == "x-user").then_some("beta");
        let other = |_: &str| None;
        assert_eq!(
            r.pick_version(&view("/", &beta), |_| 0).as_deref(),
            Some("v2")
        );
        assert_eq!(
            r.pick_version(&view("/", &other), |_| 0).as_deref(),
            Some("v1")
        );
    }

    #[test]
    fn sticky_users_keep_their_version() {
        let r = Route {
            rules: vec![RouteRule {
                matches: RouteMatch::default(),
                to: parse_split("v1=50,v2=50").expect("split"),
            }],
            sticky: Some(Sticky::Cookie("session".into())),
            mirror: None,
        };
        let mut seen = std::collections::HashSet::new();
        for user in 0..200 {
            let cookie = format!("theme=dark; session=user{user}");
            let lookup = |n: &str| (n == "cookie").then_some(cookie.as_str());
            let v = view("/", &lookup);
            let first = r.pick_version(&v, |t| r.sticky_draw(&v, t).expect("sticky"));
            for _ in 0..5 {
                assert_eq!(
                    r.pick_version(&v, |t| r.sticky_draw(&v, t).expect("sticky")),
                    first
                );
            }
            seen.insert(first);
        }
        assert_eq!(seen.len(), 2, "users are spread over both versions");
    }

    #[test]
    fn validation_names_fields() {
        let bad = Route {
            rules: vec![RouteRule {
                matches: RouteMatch {
                    path: Some(PathMatch::Regex("(".into())),
                    ..Default::default()
                },
                to: parse_split("v1=1").expect("split"),
            }],
            sticky: None,
            mirror: None,
        };
        assert_eq!(
            bad.validate().map_err(|e| e.field),
            Err("rules.match.path.regex")
        );
        let zero = Route {
            rules: vec![RouteRule {
                matches: RouteMatch::default(),
                to: parse_split("v1=0").expect("split"),
            }],
            sticky: None,
            mirror: None,
        };
        assert_eq!(zero.validate().map_err(|e| e.field), Err("rules.to.weight"));
        assert!(parse_split("v1").is_err());
    }
}

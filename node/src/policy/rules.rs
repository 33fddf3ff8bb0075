//! Policy rules: the `policy` entries (the default, `allow` in a new cluster, and
//! allow/deny rules from a source service to a destination service, optionally per path
//! prefix and method) and `decide`. A matching deny beats a matching allow; with no match
//! the default decides. Pure: enforcement (counting, logging) is in `enforce.rs`.

use serde::{Deserialize, Serialize};

use super::path::normalize_path;
use crate::config::ValueError;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
}

/// The entry named `default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDefault {
    /// What happens with no matching rule.
    pub default: Action,
    /// Log and count would-be denials without enforcing them.
    #[serde(default)]
    pub dry_run: bool,
}

impl Default for PolicyDefault {
    fn default() -> Self {
        Self {
            default: Action::Allow,
            dry_run: false,
        }
    }
}

/// Any other policy entry: one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Source service, `-` for traffic without a source service, or `*`.
    pub source: String,
    /// Destination service or `*`.
    pub destination: String,
    /// allow or deny.
    pub action: Action,
    /// HTTP only: path prefix (matched on the normalised path, at segment boundaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP only: method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

fn name_ok(s: &str) -> bool {
    s == "*" || s == "-" || weft_ca::ServiceName::new(s).is_ok()
}

impl PolicyRule {
    /// Checks every field; names the first bad one.
    pub fn validate(&self) -> Result<(), ValueError> {
        if !name_ok(&self.source) {
            return Err(ValueError::new(
                "source",
                format!("{:?}: a service name, - or *", self.source),
            ));
        }
        if !name_ok(&self.destination) || self.destination == "-" {
            return Err(ValueError::new(
                "destination",
                format!("{:?}: a service name or *", self.destination),
            ));
        }
        if let Some(p) = &self.path {
            match normalize_path(p) {
                Ok(n) if n == *p => {}
                _ => {
                    return Err(ValueError::new(
                        "path",
                        format!("{p:?}: a normalised path starting with /"),
                    ))
                }
            }
        }
        if let Some(m) = &self.method {
            if m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(ValueError::new("method", "an upper-case HTTP method"));
            }
        }
        Ok(())
    }

    fn matches(&self, src: &str, dst: &str, http: Option<(&str, &str)>) -> bool {
        let who = (self.source == "*" || self.source == src)
            && (self.destination == "*" || self.destination == dst);
        if !who {
            return false;
        }
        match http {
            // An L4 stream has no path or method: rules that need them do not apply.
            None => self.path.is_none() && self.method.is_none(),
            Some((path, method)) => {
                self.path
                    .as_deref()
                    .is_none_or(|p| path_has_prefix(path, p))
                    && self.method.as_deref().is_none_or(|m| m == method)
            }
        }
    }
}

fn path_has_prefix(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix)
            && (prefix.ends_with('/') || path.as_bytes().get(prefix.len()) == Some(&b'/')))
}

/// The applied policy: the default and the rules by name, sorted by name.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    /// The `default` entry.
    pub default: PolicyDefault,
    /// Every other entry.
    pub rules: Vec<(String, PolicyRule)>,
}

impl PolicySet {
    /// The first rule for `src → dst` that decides by path or method: a raw stream to
    /// an HTTP service cannot be checked against it.
    pub fn http_rule_for(&self, src: &str, dst: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|(_, r)| {
                (r.source == "*" || r.source == src)
                    && (r.destination == "*" || r.destination == dst)
                    && (r.path.is_some() || r.method.is_some())
            })
            .map(|(n, _)| n.as_str())
    }
}

/// The outcome for one request or stream, with what decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether traffic passes (true in dry-run even when the verdict is deny).
    pub allowed: bool,
    /// The verdict before dry-run.
    pub verdict: Action,
    /// The deciding rule's name, or `default`.
    pub rule: String,
    /// Why, in words.
    pub reason: String,
    /// Dry-run was on.
    pub dry_run: bool,
}

/// Decides `src → dst` (`http`: normalised path and method, for HTTP requests).
pub fn decide<'a>(
    default: &PolicyDefault,
    rules: impl IntoIterator<Item = (&'a str, &'a PolicyRule)>,
    src: &str,
    dst: &str,
    http: Option<(&str, &str)>,
) -> Decision {
    let mut allow: Option<&str> = None;
    let mut deny: Option<&str> = None;
    for (name, rule) in rules {
        if rule.matches(src, dst, http) {
            match rule.action {
                Action::Deny => {
                    deny.get_or_insert(name);
                }
                Action::Allow => {
                    allow.get_or_insert(name);
                }
            }
        }
    }
    let (verdict, rule, reason) = match (deny, allow) {
        (Some(d), _) => (
            Action::Deny,
            d.to_owned(),
            format!("rule {d} denies {src} → {dst}"),
        ),
        (None, Some(a)) => (
            Action::Allow,
            a.to_owned(),
            format!("rule {a} allows {src} → {dst}"),
        ),
        (None, None) => (
            default.default,
            "default".to_owned(),
            format!(
                "no rule matches {src} → {dst}; the default is {:?}",
                default.default
            )
            .to_lowercase(),
        ),
    };
    Decision {
        allowed: verdict == Action::Allow || default.dry_run,
        verdict,
        rule,
        reason,
        dry_run: default.dry_run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(src: &str, dst: &str, action: Action, path: Option<&str>) -> PolicyRule {
        PolicyRule {
            source: src.into(),
            destination: dst.into(),
            action,
            path: path.map(Into::into),
            method: None,
        }
    }

    #[test]
    fn deny_beats_allow_and_default_applies() {
        let d = PolicyDefault {
            default: Action::Deny,
            dry_run: false,
        };
        let allow = rule("client", "hello", Action::Allow, None);
        let deny_admin = rule("*", "hello", Action::Deny, Some("/admin"));
        let rules = [("allow-client-hello", &allow), ("deny-admin", &deny_admin)];
        let ok = decide(&d, rules, "client", "hello", Some(("/x", "GET")));
        assert!(ok.allowed);
        assert_eq!(ok.rule, "allow-client-hello");
        let admin = decide(&d, rules, "client", "hello", Some(("/admin/users", "GET")));
        assert!(!admin.allowed);
        assert_eq!(admin.rule, "deny-admin");
        assert!(
            decide(
                &d,
                rules,
                "client",
                "hello",
                Some(("/administrator", "GET"))
            )
            .allowed,
            "segment boundary"
        );
        let other = decide(&d, rules, "other", "hello", None);
        assert!(!other.allowed);
        assert_eq!(other.rule, "default");
        // L4: the path-scoped deny does not apply, the allow does.
        assert!(decide(&d, rules, "client", "hello", None).allowed);
    }

    #[test]
    fn dry_run_allows_but_reports() {
        let d = PolicyDefault {
            default: Action::Deny,
            dry_run: true,
        };
        let dec = decide(&d, [], "a", "b", None);
        assert!(dec.allowed && dec.verdict == Action::Deny && dec.dry_run);
    }

    #[test]
    fn validation() {
        assert!(rule("a", "b", Action::Allow, Some("/x")).validate().is_ok());
        assert_eq!(
            rule("a", "-", Action::Allow, None)
                .validate()
                .map_err(|e| e.field),
            Err("destination")
        );
        assert_eq!(
            rule("<x>", "b", Action::Allow, None)
                .validate()
                .map_err(|e| e.field),
            Err("source")
        );
        assert_eq!(
            rule("a", "b", Action::Allow, Some("/a/../b"))
                .validate()
                .map_err(|e| e.field),
            Err("path")
        );
    }
}

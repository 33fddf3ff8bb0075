//! Errors and serde helpers shared by every typed config value (the cluster-config kinds
//! in `policy`, `routing` and `resilience`): a refusal names the field and the fix, and
//! durations are parsed once, when a value is validated, into `Duration`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// A config value that does not validate: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {message}")]
pub struct ValueError {
    /// The field (dotted path).
    pub field: &'static str,
    /// Why.
    pub message: String,
}

impl ValueError {
    /// A refusal of `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Checks that `d` lies in `min..=max`.
pub fn check_range(
    field: &'static str,
    d: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ValueError> {
    if d < min || d > max {
        return Err(ValueError::new(
            field,
            format!("must be between {min:?} and {max:?}"),
        ));
    }
    Ok(())
}

fn parse<E: serde::de::Error>(text: &str) -> Result<Duration, E> {
    humantime::parse_duration(text).map_err(|e| {
        E::custom(format!(
            "{text:?}: {e} (write a duration like 250ms, 5s or 1m)"
        ))
    })
}

/// `Duration` written as text (`"250ms"`, `"5s"`) in JSON.
pub mod duration_text {
    use super::*;

    /// Reads `"5s"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text)
    }

    /// Writes `"5s"`.
    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }
}

/// `Option<Duration>` written as text in JSON.
pub mod opt_duration_text {
    use super::*;

    /// Reads `"5s"` or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| parse(&t))
            .transpose()
    }

    /// Writes `"5s"` or null.
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
    struct T {
        #[serde(with = "duration_text")]
        d: Duration,
        #[serde(default, with = "opt_duration_text")]
        o: Option<Duration>,
    }

    #[test]
    fn durations_round_trip_as_text() {
        let t: T = serde_json::from_str(r#"{"d":"1500ms","o":"2s"}"#).expect("parses");
        assert_eq!(t.d, Duration::from_millis(1500));
        assert_eq!(t.o, Some(Duration::from_secs(2)));
        let back: T =
            serde_json::from_value(serde_json::to_value(&t).expect("json")).expect("round trip");
        assert_eq!(back, t);
        let err = serde_json::from_str::<T>(r#"{"d":"soon"}"#).expect_err("refused");
        assert!(err.to_string().contains("\"soon\""), "{err}");
    }
}

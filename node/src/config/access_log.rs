//! Where the access log goes (`access_log` in the file, `--access-log`): a config value
//! parsed once here; `telemetry::access_log` writes it.

use std::path::PathBuf;

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Not written.
    Off,
    /// Standard output (journald under systemd).
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

/// An access log target that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("empty access log target (use off, stdout or a file path)")]
pub struct EmptyTarget;

impl std::str::FromStr for AccessLogTarget {
    type Err = EmptyTarget;
    fn from_str(s: &str) -> Result<Self, EmptyTarget> {
        match s {
            "off" => Ok(Self::Off),
            "stdout" | "-" => Ok(Self::Stdout),
            "" => Err(EmptyTarget),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

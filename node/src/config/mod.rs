//! Agent configuration: the TOML file and the effective settings.

pub mod file;
pub mod settings;

pub use file::{ConfigError, FileConfig, ServiceConfig};
pub use settings::{LogFormat, Settings};

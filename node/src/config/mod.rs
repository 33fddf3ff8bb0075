//! This node's configuration: the TOML file (`file`), the agent's flags (`flags`), the
//! effective settings resolved from both (`settings`), seed addresses (`seed`), and the
//! error and duration helpers shared by every typed config value (`value`).

pub mod access_log;
pub mod file;
pub mod flags;
pub mod seed;
pub mod settings;
pub mod value;

pub use file::{ConfigError, FileConfig, ServiceConfig};
pub use flags::AgentArgs;
pub use settings::{LogFormat, Settings};
pub use value::ValueError;

//! Who may talk to whom: the `policy` rules (`rules`), the path normaliser they are
//! matched against (`path`), and the one enforcement point every stream and request
//! passes through (`enforce`), whichever side of the mesh it is checked on.

pub mod enforce;
pub mod path;
pub mod rules;

pub use enforce::enforce;
pub use path::{normalize_path, PathError};
pub use rules::{decide, Action, Decision, PolicyDefault, PolicyRule, PolicySet};

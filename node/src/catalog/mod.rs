//! Services: this node's own (`registry`, `spec`) and the cluster-wide view built from
//! verified gossip (`view`).

pub mod registry;
pub mod spec;
pub mod view;

pub use registry::{LocalServices, RegistryError};
pub use spec::{ServiceSpec, UpstreamSpec};
pub use view::{Catalog, Instance, SharedCatalog};

//! Services: this node's own (`registry`, `spec`) and the cluster-wide view built from
//! verified gossip (`view`).

pub mod health;
pub mod registry;
pub mod spec;
pub mod view;

pub use registry::{LocalServices, RegistryError};
pub use spec::{ServiceSpec, UpstreamSpec};
pub use view::{Catalog, Instance, SharedCatalog};
/// tcp or http: how a service speaks (published in gossip, read by the data plane).
pub use weft_gossip::Protocol;

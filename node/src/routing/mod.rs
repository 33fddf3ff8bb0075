//! Where a request goes: the route rules that choose a version (`route`), and the load
//! balancer that chooses an instance of it (`load_balancer` over the pure `balancer`).

pub mod balancer;
pub mod load_balancer;
pub mod route;

pub use load_balancer::{endpoint_key, LoadBalancer};
pub use route::{parse_split, RequestView, Route};

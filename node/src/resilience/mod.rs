//! What keeps one slow or failing service from taking others down: timeouts, retries and
//! their budget (`retry`), the circuit breaker and outlier ejection (`outlier`), fault
//! injection (`fault`) and rate limits (`ratelimit`). `settings`, `fault` and `ratelimit`
//! define the cluster-config entries; `state` holds this node's per-destination state.

pub mod fault;
pub mod outlier;
pub mod ratelimit;
pub mod retry;
pub mod settings;
pub mod state;

pub use fault::Fault;
pub use ratelimit::{RateLimit, TokenBucket};
pub use retry::{RetryPolicy, DEFAULT_ATTEMPTS};
pub use settings::{Outlier, Resilience};
pub use state::{InFlight, ResilienceState};

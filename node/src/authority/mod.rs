//! Who may change the cluster. A node speaks for itself, never for the cluster: its own
//! key grants only node-local actions. Every cluster-wide change (config entries, join
//! tokens, revocations, gossip keys, operators) is an `Act` signed with an operator
//! credential (`credential`, held by the CLI) and verified by every node that applies or
//! executes it (`verify`), not only by the node whose API received it. The one thing a
//! node writes in its own name is the progress of a rollout it drives (`node_signed`),
//! accepted only within the plan an operator signed.

pub mod credential;
pub mod envelope;
pub mod execute;
pub mod node_signed;
pub mod signed;
pub mod verify;

pub use credential::{Credential, CredentialError};
pub use signed::{Act, Payload, Signed};
pub use verify::{AuthError, Authority, RefusedLabels, Revocations, Verified};

//! The data plane: stream header (`header`), reaching instances (`dial`), inbound
//! streams (`inbound`), L4 splicing (`tcp`), L7 HTTP (`http`) and the local listeners
//! (`listeners`).

pub mod dial;
pub mod framing;
pub mod header;
pub mod http;
pub mod inbound;
pub mod io;
pub mod listeners;
pub mod tcp;
pub mod traffic;

//! Addresses and admission control.

pub mod ratelimit;
pub mod seed;

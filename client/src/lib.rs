//! The uclab client core.
//!
//! Protocol logic lives in sans-IO engines (`handle_*` inputs, `poll_output` outputs,
//! `poll_timeout` deadlines; no clock reads, no sockets, randomness from a seeded stream).
//! [`driver`] is the one async loop that moves bytes, time and events between an engine and a
//! [`uclab_net::Net`]; it makes no protocol decision.

pub mod action;
mod blf;
pub mod call;
pub mod client;
pub mod discovery;
pub mod driver;
pub mod event;
pub mod im;
pub mod io;
pub mod phone;
pub mod resolver;
pub mod signal;
pub mod signin;
pub mod srv;
mod uas;

/// Time in the client core: the offset from the scenario epoch (virtual in simulation).
pub type Time = std::time::Duration;

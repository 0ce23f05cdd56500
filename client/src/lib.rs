//! The uclab client core.
//!
//! Protocol logic lives in sans-IO engines (`handle_*` inputs, `poll_output` outputs,
//! `poll_timeout` deadlines; no clock reads, no sockets, randomness from a seeded stream).
//! [`driver`] is the one async loop that moves bytes, time and events between an engine and a
//! [`uclab_net::Net`]; it makes no protocol decision.
//!
//! # Where things live
//!
//! - [`client`]: the composite engine. It owns the routing: every id names the engine that
//!   made it ([`io::Owner`]), one [`resolver::Resolver`] holds every engine's DNS queries, and
//!   each input goes to exactly the engine that owns it. Children tell it what happened
//!   through [`signal::Signal`]s; [`event::ClientEvent`]s are what the transcript reads.
//! - One folder per engine family: [`discovery`] (SPEC SD1–SD9), [`edge`] (MRA1: the edge
//!   configuration, its token, and the [`edge::Transport`] other engines' HTTP takes outside),
//!   [`signin`] (AU1–AU5, CFG1–CFG3), [`im`] (IMP1, HA1–HA4: SOAP, XMPP negotiation, stanzas, rooms, failover),
//!   [`sip`] (CC1–CC7: registration, voice failover and SRST, calls, BLF, the UAS).
//! - Shared infrastructure beside them: [`io`] (inputs, outputs, ids), [`resolver`],
//!   [`signal`], [`action`] (what a user asks for), [`driver`].
//!
//! A new client engine (the edge, a federated server) gets its own folder and an [`io::Owner`]
//! variant; the composite starts it, routes its ids to it and reads its signals. A new path to
//! an existing service (sign-in through the edge) is a transport the existing engine uses, not
//! a copy of its logic.

pub mod action;
mod bootstrap;
pub mod client;
pub mod discovery;
pub mod driver;
pub mod edge;
pub mod event;
pub mod im;
pub mod io;
pub mod resolver;
pub mod signal;
pub mod signin;
pub mod sip;
#[cfg(test)]
mod testing;

pub use sip::{call, phone};

/// Time in the client core: the offset from the scenario epoch (virtual in simulation).
pub type Time = std::time::Duration;

//! The softphone (SPEC CC1–CC7): registration with CUCM and its failover to a backup node or
//! the SRST router ([`phone`]), calls ([`call`]), BLF watches (`blf`) and the UAS side of
//! transactions over UDP (`uas`).

mod blf;
pub mod call;
pub mod phone;
mod uas;

/// The User-Agent of a Jabber softphone (WIRE.md "SIP to CUCM").
pub const USER_AGENT: &str = "Cisco-CSF";

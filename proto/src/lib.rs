//! Codecs of uclab: bytes in, validated values out, no I/O.
//!
//! Each protocol module parses at the boundary into plain owned types (the smoltcp
//! `Packet` → `Repr` habit) and renders the one-line summaries the transcript shows.

pub mod base64;
pub mod dialback;
pub mod dns;
pub mod dscp;
pub mod edge;
pub mod jid;
pub mod pidf;
pub mod provision;
pub mod rtp;
pub mod sdp;
pub mod sip;
pub mod soap;
pub mod stun;
pub mod text;
pub mod uds;
pub mod xmpp;

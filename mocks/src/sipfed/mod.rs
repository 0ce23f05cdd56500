//! SIP federation (SPEC FED3, issue 18): presence and 1:1 IM between domains over SIP on
//! mutual TLS (port 5061), as a Lync/Skype-style domain federates. Both ends use it: IM&P's SIP
//! federation gateway (`imp::sipgw`, which maps it to XMPP) and the foreign SIP domain node
//! (`sip_domain`, whose users it serves).
//!
//! - [`Endpoint`] (`endpoint.rs`) is the sans-IO engine of one domain: subscriptions both ways
//!   (SUBSCRIBE/NOTIFY, RFC 6665, event package `presence` with PIDF bodies, RFC 3856/3863 by
//!   [`uclab_proto::pidf`]), MESSAGE (RFC 3428, `text/plain`), and the answers its subset gives
//!   to everything else. It tells its owner what happened through [`Signal`]s and is told what
//!   to do by commands ([`Endpoint::subscribe`], [`Endpoint::notify`], [`Endpoint::message`]).
//! - `serve.rs` moves its bytes: a listener on 5061 that requires a client certificate, one
//!   outbound connection per foreign domain found by a static route or
//!   `_sipfederationtls._tcp` SRV (WIRE.md "DNS"), every request checked against the domain
//!   the peer's certificate names.
//!
//! Only basic presence and 1:1 IM cross (FED3): an INVITE (calls, MSRP file transfer,
//! conferencing) is answered 405 with the methods that are allowed.

mod endpoint;
pub mod serve;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use endpoint::{ConnId, Endpoint, Kind, Output, Signal, bare};

/// The SIP over TLS port (RFC 3261 §19.1.2), federation's listener.
pub const SIP_TLS_PORT: u16 = 5061;
/// Seconds a subscription lasts unless refreshed (what is asked for and the most granted).
pub const SUB_EXPIRES: u32 = 3600;
/// The least a subscription may ask for (RFC 6665 §4.2.1.1 `423 Interval Too Brief` below).
pub const MIN_EXPIRES: u32 = 60;
/// How long a request waits for its final answer (RFC 3261 Timer F, 64 × T1).
pub const TIMER_F: Duration = Duration::from_secs(32);
/// Subscriptions one endpoint holds each way at most; beyond, a SUBSCRIBE gets 503.
pub const MAX_SUBSCRIPTIONS: usize = 200_000;
/// Requests waiting for an answer at most; beyond, a command fails at once with 503.
pub const MAX_PENDING: usize = 100_000;
/// The methods the federation subset carries (the `Allow` of a 405).
pub const ALLOW: &str = "SUBSCRIBE, NOTIFY, MESSAGE, OPTIONS";

/// A `peer` check for [`Endpoint::handle`] in tests: requests from `domain` only.
#[cfg(test)]
pub(crate) fn certified(domain: &str) -> impl Fn(&str) -> Result<(), String> + '_ {
    move |d: &str| {
        if d == domain {
            Ok(())
        } else {
            Err(format!("the TLS peer's certificate does not name {d}"))
        }
    }
}

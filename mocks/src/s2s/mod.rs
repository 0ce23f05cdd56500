//! XMPP server-to-server streams (RFC 6120 with XEP-0220 Server Dialback; issue 18, SPEC FED1),
//! sans-IO: one [`Stream`] per TCP connection, in one of three roles.
//!
//! - [`Stream::outbound`]: we are the initiating server with stanzas for `remote`. Header →
//!   STARTTLS (required: a peer that does not offer it gets nothing) → TLS → restarted stream →
//!   SASL EXTERNAL when the peer offers it and its certificate verified, else dialback
//!   (`<db:result>` with [`uclab_proto::dialback::key`]) → stanzas flow; until then they wait
//!   in a queue of at most [`MAX_QUEUE`].
//! - [`Stream::inbound`]: a peer connected to us. Header (`to` one of [`S2sConfig::domains`]) →
//!   `<starttls><required/>` → TLS → features: EXTERNAL when the peer's client certificate names
//!   the domain its header claims, and dialback → either `<success/>`, or the key goes out to be
//!   checked ([`Action::Verify`]) and the caller answers with [`Stream::handle_verified`]. The
//!   same stream answers `<db:verify/>` for our own domains (we are the authoritative server).
//! - [`Stream::verifier`]: the connection a receiving server opens to the authoritative server
//!   of the claimed domain, only to ask `<db:verify/>` (XEP-0220 §2.1.2); it ends with
//!   [`Action::Verified`].
//!
//! Like `quinn-proto`'s `Connection`, the methods are getters ([`Stream::remote`],
//! [`Stream::is_done`], [`Stream::poll_timeout`]), inputs (`handle_*`), one command
//! ([`Stream::send_stanza`]) and the output [`Stream::poll`]: every input must be followed by a
//! complete drain of `poll`. Time comes in as `now`; the engine reads no clock and draws no
//! random number (the inbound stream id is the caller's). Deadlines: [`SETUP_DEADLINE`] to
//! authenticate, [`IDLE`] without a stanza once authenticated; a peer not yet authenticated
//! sending more than [`MAX_STANZAS_PER_SECOND`] elements in a second is cut off with
//! `policy-violation`.
//!
//! Failures, outbound: what is queued is returned with [`Action::Bounce`] and a stanza error
//! condition (RFC 6120 §8.3.3): a peer's `host-unknown` stream error → `remote-server-not-found`,
//! any other stream error, a closed connection or bad XML → `remote-connection-failed`, no
//! STARTTLS offered → `policy-violation`, no authentication method in common or SASL refused →
//! `not-authorized`, dialback key `invalid` → `internal-server-error` and a dialback `error` →
//! `remote-server-timeout` (both required by XEP-0220 §2.1.1 and §2.4), the setup deadline →
//! `remote-server-timeout`, the queue full → `resource-constraint`. Inbound failures are stream
//! errors (RFC 6120 §4.9.3), logged and followed by [`Action::Close`]; dialback errors for a
//! domain pair (a `to` that is not ours) are `type='error'` answers that leave the stream up, as
//! XEP-0220 §2.2 requires.

use std::time::Duration;

use uclab_proto::xmpp::Element;

pub mod serve;
mod stream;
#[cfg(test)]
mod tests;

pub use stream::Stream;

/// Most stanzas an outbound stream holds while it is being set up; one more is bounced with
/// `resource-constraint`. Well under [`MAX_STANZAS_PER_SECOND`]: the queue goes out at once
/// when the stream is authenticated, and must not look like a flood to a peer like us.
pub const MAX_QUEUE: usize = 100;
/// From the connection to authentication (RFC 6120 leaves it to the server; 30 s is the figure
/// of IM&P's client sign-in).
pub const SETUP_DEADLINE: Duration = Duration::from_secs(30);
/// An authenticated stream with no stanza either way for this long is closed (gracefully:
/// nothing is queued then).
pub const IDLE: Duration = Duration::from_secs(600);
/// Most elements a peer not yet authenticated may send in one second; one more is a flood
/// (`policy-violation`). An authenticated peer is not cut for volume (docs/decisions.md).
pub const MAX_STANZAS_PER_SECOND: u32 = 200;

/// What a server's S2S streams do; shared by all its streams.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S2sConfig {
    /// Domains this server serves (streams `to` anything else get host-unknown).
    pub domains: Vec<String>,
    /// Dialback secret (XEP-0220 §2.4).
    pub secret: String,
    /// Offer (inbound) and use (outbound) SASL EXTERNAL when the certificates allow it.
    pub sasl_external: bool,
    /// Offer and use Server Dialback.
    pub dialback: bool,
}

/// How a remote domain was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// SASL EXTERNAL with the certificates of the TLS layer (RFC 6120 §6.3.4).
    Sasl,
    /// Server Dialback (XEP-0220).
    Dialback,
}

/// What a stream asks its connection to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Upgrade to TLS now (after `<proceed/>` was written or read). `server`: we are the TLS
    /// server. Outbound: check the peer's certificate against `name`.
    StartTls {
        /// We are the TLS server (an inbound stream).
        server: bool,
        /// Inbound: our domain the peer asked for (the certificate to present); outbound: the
        /// name to check the server's certificate against.
        name: String,
    },
    /// Inbound (receiving server) asks the I/O to verify a dialback key with the authoritative
    /// server of `domain` (XEP-0220 §2.1.2): the I/O opens a [`Stream::verifier`] to it, and
    /// reports back with [`Stream::handle_verified`].
    Verify {
        /// The domain the peer claims (the sender domain).
        domain: String,
        /// Our domain it wants to send to (the target domain).
        receiving: String,
        /// The id of this stream (the one the key is bound to).
        id: String,
        /// The key the peer sent.
        key: String,
    },
    /// The remote domain is authenticated on this stream (inbound: it may now send stanzas
    /// from that domain; outbound: we may now send).
    Authenticated {
        /// The remote domain.
        domain: String,
        /// By what means.
        auth: Auth,
    },
    /// Inbound: a stanza from the authenticated remote domain to one of our domains.
    Stanza(Element),
    /// Outbound: stanzas that were queued and will never go on this stream (it failed), with
    /// the RFC 6120 condition to bounce them with (`remote-server-not-found`,
    /// `remote-server-timeout`, `remote-connection-failed`, `not-authorized`,
    /// `policy-violation`, ...).
    Bounce(Vec<Element>, String),
    /// A verifier stream's answer: the key for (domain, id) was valid or not.
    Verified {
        /// The domain whose key was checked (the verifier's `remote`).
        domain: String,
        /// The stream id the key was bound to.
        id: String,
        /// The authoritative server said `valid`.
        valid: bool,
    },
    /// Transcript line (never a key or secret in clear: `db:result` with from/to/type only).
    Log {
        /// About what the peer sent (else what we sent or decided).
        inbound: bool,
        /// The line.
        line: String,
    },
    /// Close the connection after writing what came before.
    Close,
}

//! What a child engine tells the composite (issue 15): typed signals, kept apart from
//! [`ClientEvent`](crate::event::ClientEvent), which is what the transcript and expectations
//! read. A child's output queue holds both, in order, so the composite acts on a signal at the
//! point where it happened.

use std::net::SocketAddr;

use crate::event::Via;
use crate::io::Output;

/// Why another UDS server might succeed where this sign-in failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// UDS answered 503: overloaded, try another server (WIRE.md).
    Overloaded,
    /// The first UDS server did not answer at all (connection or timeout).
    Unreachable,
}

/// Who authenticates the user (SPEC AU2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authenticator {
    /// IM&P (product type "Unified CM (IM and Presence Service)").
    Cup,
    /// Webex Messenger (CAS hit or product type Webex).
    Webex,
    /// CUCM alone (no IM&P profile: phone mode).
    Cucm,
}

impl Authenticator {
    /// Name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cup => "cup",
            Self::Webex => "webex",
            Self::Cucm => "cucm",
        }
    }
}

/// A child engine's news for the composite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SPEC SD4/AU2: the Webex CAS says the services domain is a Webex one.
    CasWebex,
    /// The CAS lookup finished, whatever it said (SPEC SD4; MRA3 waits for it).
    CasDone,
    /// Discovery reached a service (SPEC SD5, SD6).
    ServiceReached {
        /// Which record led there.
        via: Via,
        /// `host:port`.
        target: String,
        /// The address connected to.
        addr: SocketAddr,
    },
    /// Discovery found no service.
    DiscoveryFailed,
    /// Sign-in finished; `authenticator` decides what starts next (SPEC AU2–AU4).
    SignedIn {
        /// Who authenticated the user.
        authenticator: Authenticator,
    },
    /// Sign-in failed. The composite may try another server ([`Retry`]); if it does not, it
    /// reports `SignInFailed` with `reason`.
    SignInFailed {
        /// Why.
        error: crate::signin::SignInError,
        /// Whether another server might do better.
        retry: Option<Retry>,
    },
    /// SPEC MRA1: the edge answered get_edge_config; sign-in can run through it.
    EdgeReady,
    /// The edge did not let the client in. With `retry_in` the edge engine tries again
    /// itself after that long; the composite may instead try the next edge.
    EdgeFailed {
        /// Why.
        error: crate::edge::EdgeError,
        /// When the same edge is tried again, if it is.
        retry_in: Option<std::time::Duration>,
    },
}

/// One item of a child engine's output queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Emit {
    /// For the driver (forwarded as it is).
    Out(Output),
    /// For the composite only.
    Signal(Signal),
}

impl From<Output> for Emit {
    fn from(o: Output) -> Self {
        Self::Out(o)
    }
}

impl From<Signal> for Emit {
    fn from(s: Signal) -> Self {
        Self::Signal(s)
    }
}

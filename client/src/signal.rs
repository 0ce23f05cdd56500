//! What a child engine tells the composite (issue 15): typed signals, kept apart from
//! [`ClientEvent`](crate::event::ClientEvent), which is what the transcript and expectations
//! read. A child's output queue holds both, in order, so the composite acts on a signal at the
//! point where it happened.

use std::net::SocketAddr;

use crate::event::Via;
use crate::io::Output;
use crate::signin::{Authenticator, Retry};

/// A child engine's news for the composite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SPEC SD4/AU2: the Webex CAS says the services domain is a Webex one.
    CasWebex,
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
        /// Why, for the user.
        reason: String,
        /// Whether another server might do better.
        retry: Option<Retry>,
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

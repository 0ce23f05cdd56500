//! Why a sign-in failed (SPEC AU1–AU5), grouped by whose fault. Each renders to the words the
//! transcript has always shown.

use uclab_proto::uds::XmlError;

use crate::io::NetError;
use crate::resolver::ResolveFailure;

/// A sign-in failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    // The user's.
    /// SPEC AU5: UDS refused the credentials (401); never retried.
    #[error("wrong credentials")]
    WrongCredentials,
    /// No cluster knows the user.
    #[error("user {0} not found in any cluster")]
    UnknownUser(String),

    // The network's.
    /// A step got no answer in time.
    #[error("timeout at {step}")]
    Timeout {
        /// The step (`clusterUser`, `user`, …).
        step: &'static str,
    },
    /// A step's request failed on the network.
    #[error("{step}: {error}")]
    Net {
        /// The step.
        step: &'static str,
        /// What the network said.
        error: NetError,
    },
    /// A host has no address.
    #[error("{0} does not resolve")]
    NoAddress(String),
    /// Looking a host up failed.
    #[error("{host} lookup: {reason}")]
    Lookup {
        /// The host.
        host: String,
        /// Why.
        reason: ResolveFailure,
    },
    /// The user's home cluster has no address.
    #[error("home cluster {0} does not resolve")]
    HomeNoAddress(String),
    /// Looking the home cluster up failed.
    #[error("home cluster lookup: {0}")]
    HomeLookup(ResolveFailure),

    // The server's.
    /// WIRE.md: UDS answered 503, overloaded (another server may do better).
    #[error("{step}: HTTP 503 (overloaded)")]
    Overloaded {
        /// The step.
        step: &'static str,
    },
    /// Through the edge a 403: Expressway-C's HTTP allow list, or the server itself (SPEC
    /// MRA1; the transcript's line at C says which).
    #[error("{step}: HTTP 403 through the edge")]
    EdgeRefused {
        /// The step.
        step: &'static str,
    },
    /// UDS answered another status than 200.
    #[error("{step}: HTTP {status}")]
    Status {
        /// The step.
        step: &'static str,
        /// The status.
        status: u16,
    },
    /// A UDS answer did not read as its document.
    #[error("{what}: {error}")]
    Malformed {
        /// Which answer (`clusterUser`, `user`, `devices`, `service profile`).
        what: &'static str,
        /// Why.
        error: XmlError,
    },
}

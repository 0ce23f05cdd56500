//! Why the edge did not let the client in (SPEC MRA1, AU5), grouped by whose fault.

use uclab_proto::uds::XmlError;

use crate::io::NetError;
use crate::resolver::ResolveFailure;

/// An edge failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    // The user's.
    /// SPEC AU5: the edge refused the credentials (401, realm Cisco-Edge); never retried.
    #[error("wrong credentials (edge {host}: HTTP 401, realm Cisco-Edge)")]
    WrongCredentials {
        /// The edge.
        host: String,
    },

    // The deployment's.
    /// SPEC MRA1: Expressway-E's certificate does not name the domain; the edge is refused.
    #[error("edge {host} refused: its certificate does not name {domain} (MRA1): {detail}")]
    Certificate {
        /// The edge.
        host: String,
        /// The domain the certificate must name.
        domain: String,
        /// What TLS said.
        detail: String,
    },
    /// SPEC MRA1: Expressway-C found no `_cisco-uds` record inside.
    #[error("edge config: no _cisco-uds service inside (MRA1)")]
    NoUds,
    /// WIRE.md: an empty `userUdsServer`.
    #[error("no UDS server address")]
    NoUdsServer,
    /// The answer did not read as a `getEdgeConfigResponse`.
    #[error("edge config: {0}")]
    Malformed(XmlError),

    // The network's.
    /// The edge could not be reached.
    #[error("edge {host}: {error}")]
    Unreachable {
        /// The edge.
        host: String,
        /// What the network said.
        error: NetError,
    },
    /// The edge's address could not be looked up.
    #[error("edge {host} lookup: {reason}")]
    Lookup {
        /// The edge.
        host: String,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error("edge {host}: timeout")]
    Timeout {
        /// The edge.
        host: String,
    },
    /// E answered 502/503/504: the traversal zone to C is down, or C could not reach the
    /// host inside (SPEC MRA1).
    #[error("edge {host}: HTTP {status} (traversal zone down or inside unreachable)")]
    Traversal {
        /// The edge.
        host: String,
        /// The status.
        status: u16,
    },
    /// Another status.
    #[error("edge {host}: HTTP {status}")]
    Status {
        /// The edge.
        host: String,
        /// The status.
        status: u16,
    },
}

impl EdgeError {
    /// Whether trying the same edge again later may succeed (WIRE.md: "no UDS server address"
    /// retries after 15 s; a traversal zone comes back).
    pub fn retry_later(&self) -> bool {
        matches!(
            self,
            Self::NoUdsServer
                | Self::Traversal { .. }
                | Self::Unreachable { .. }
                | Self::Timeout { .. }
                | Self::Lookup { .. }
        )
    }

    /// Whether another edge (the next `_collab-edge` target) may do better.
    pub fn next_target(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Timeout { .. } | Self::Lookup { .. })
    }

    /// A lookup failure.
    pub fn lookup(host: &str, reason: &ResolveFailure) -> Self {
        Self::Lookup { host: host.to_owned(), reason: reason.to_string() }
    }
}

//! Why an IM session stopped (SPEC AU4, AU5, HA1), grouped by whose fault. Each renders to the
//! words the transcript has always shown.

use uclab_proto::uds::XmlError;

use crate::io::NetError;

/// An IM session failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImError {
    // The user's.
    /// SPEC AU5: SOAP refused the credentials; never retried.
    #[error("wrong credentials")]
    WrongCredentials,
    /// The XMPP server refused the SASL exchange (its condition).
    #[error("XMPP sign-in refused: {0}")]
    Refused(String),

    // The network's (or every node down).
    /// No IM&P server answered SOAP.
    #[error("no IM&P server reachable")]
    NoSoapServer,
    /// No XMPP node answered; why the last one failed.
    #[error("no XMPP node reachable ({0})")]
    NoXmppNode(String),
    /// The configuration named no XMPP node at all.
    #[error("no XMPP node reachable")]
    NoXmppNodeConfigured,
    /// A direct session's stream broke.
    #[error("XMPP stream lost: {0}")]
    StreamLost(NetError),
    /// SPEC HA1: a failover found nothing; the session stops until the user signs in again.
    #[error("{0}: stopped until the user signs in again")]
    Stopped(Box<Self>),

    // The server's.
    /// A SOAP answer did not read as SOAP.
    #[error("SOAP {op}: {error}")]
    SoapMalformed {
        /// The operation.
        op: &'static str,
        /// Why.
        error: XmlError,
    },
    /// A SOAP fault other than the ones the client handles.
    #[error("SOAP {op}: {subcode}: {reason}")]
    SoapFault {
        /// The operation.
        op: &'static str,
        /// The fault's subcode.
        subcode: String,
        /// Its reason text.
        reason: String,
    },
    /// `get-all-config` named no presence domain.
    #[error("SOAP get-all-config: no presence domain")]
    NoPresenceDomain,
    /// A SOAP answer of the wrong kind for the operation.
    #[error("SOAP {op}: unexpected answer {answer}")]
    Unexpected {
        /// The operation.
        op: &'static str,
        /// What came, as debug text.
        answer: String,
    },
    /// The server did not offer the SASL mechanism the client needs.
    #[error("XMPP: {0} not offered")]
    MechanismNotOffered(&'static str),
    /// Through the edge: Expressway refused a SOAP request (SPEC MRA1: off its allow list,
    /// or the credentials not good there).
    #[error("SOAP {op}: HTTP {status} through the edge")]
    EdgeRefused {
        /// The operation.
        op: &'static str,
        /// The edge's status.
        status: u16,
    },
    /// The server refused resource binding.
    #[error("XMPP: resource binding refused")]
    BindRefused,
}

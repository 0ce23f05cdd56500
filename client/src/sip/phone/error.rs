//! Why a registration leg failed (SPEC CC1–CC3, CC5), grouped by whose fault. Each renders to
//! the words the transcript has always shown (`phone-state` reasons).

use uclab_proto::sip::frame::FrameError;

use crate::io::NetError;

/// A leg's failure: what moves the phone to the next member (CC3) or SRST (CC5).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    // The user's.
    /// The registrar refused the digest answer a second time.
    #[error("wrong credentials")]
    WrongCredentials,

    // The network's.
    /// The connection failed or broke.
    #[error("connection: {0}")]
    Connection(NetError),
    /// A step (resolve, connect) got no answer in time.
    #[error("no answer")]
    NoAnswer,
    /// The REGISTER transaction timed out.
    #[error("no answer to REGISTER")]
    NoAnswerToRegister,
    /// The keepalive ping (CRLF or OPTIONS) got no answer.
    #[error("no answer to keepalive ping")]
    NoAnswerToPing,
    /// The node's name has no address.
    #[error("does not resolve")]
    NoAddress,

    // The server's.
    /// A challenge the phone cannot answer (not digest MD5).
    #[error("unsupported challenge")]
    UnsupportedChallenge,
    /// A final error response to REGISTER.
    #[error("{code} {reason}")]
    Refused {
        /// The status.
        code: u16,
        /// Its reason phrase.
        reason: &'static str,
    },
    /// The stream did not frame as SIP (RFC 3261 §18.3).
    #[error("framing: {0}")]
    Framing(FrameError),
    /// The edge's answer to the STUN keepalive did not read as STUN (issue 17).
    #[error("STUN: {0}")]
    Stun(uclab_proto::stun::StunError),
}

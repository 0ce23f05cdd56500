//! The DSCP values the products mark their traffic with (SPEC MEDIA2; RFC 4594 classes).

/// Call signalling (SIP) and IM&P traffic (XMPP, SOAP): CS3.
pub const SIGNALLING: u8 = 24;
/// IM&P traffic: CS3, as signalling.
pub const IMP: u8 = SIGNALLING;
/// Audio media (RTP): EF.
pub const AUDIO: u8 = 46;
/// Video media (RTP): AF41.
pub const VIDEO: u8 = 34;

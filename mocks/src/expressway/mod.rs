//! Expressway-C and Expressway-E: mobile and remote access through the edge (SPEC MRA1,
//! MRA2, SD8; WIRE.md "Expressway MRA"; PORTS 7001, 8443).
//!
//! E sits in the DMZ and serves the edge on HTTPS 8443: it checks what it can alone (the path
//! decodes, the domain is its own, the request carries credentials) and carries the rest over
//! the traversal zone to C, which decides (tokens, the allow list, the user's credentials
//! against CUCM) and talks to the inside. C opens the zone (TLS to E's 7001, both ends
//! presenting lab certificates); E never connects inward. No zone: 503 at once; a zone that
//! dies or stays silent while a request waits: 502 after [`REQUEST_DEADLINE`].
//!
//! XMPP goes through the edge too (issue 17): E serves 5222 ([`xmpp_edge`], sans-IO, driven
//! by [`e_xmpp`]) up to the client's SASL `<auth>`, then opens a channel to C over a second
//! zone (TLS to E's 7400, as in the product), and C ([`inside`]) carries the stream to the
//! user's current home IM&P node; from then on both relay bytes.
//!
//! Parts, each using only those after it: [`e`] and [`e_xmpp`] (the edge and E's end of the
//! zones), [`zone`] (C's end of the zones, [`serve_c`]), [`handle`] (what C does with a
//! request), [`inside`] (what C does with a channel), [`c`] (C's settings and state),
//! [`xmpp_edge`] (E's XMPP session, pure), [`traversal`] (the zones' frames, pure),
//! [`allow`] (the HTTP allow list), [`tokens`] (`X-Auth` tokens), [`crate::resolve`] (the stub
//! resolver), [`upstream`] (C's HTTP client inside). `tests.rs` tests the pure parts.

pub mod allow;
pub mod c;
pub mod c_media;
pub mod e;
pub mod e_media;
pub mod e_sip;
pub mod e_xmpp;
pub mod handle;
pub mod inside;
pub mod inside_sip;
pub mod sip_rewrite;
#[cfg(test)]
mod tests;
pub mod tokens;
pub mod traversal;
pub mod upstream;
pub mod xmpp_edge;
pub mod zone;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use traversal::{Frame, FrameError};

/// C pings E this often on an idle zone.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// Either end takes the zone for dead after this long without a byte from the other (three
/// missed keepalives: a partition, a crashed peer).
pub const DEAD_AFTER: Duration = Duration::from_secs(30);
/// How long E waits for C's answer to a request before it answers 502.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Requests waiting on one zone at most (E answers 503 beyond; C answers 503 beyond as many
/// in progress).
pub const MAX_PENDING: usize = 1024;

/// Channels open on one zone at most (E refuses a new client stream beyond, C closes a new
/// channel beyond as many running).
pub const MAX_CHANNELS: usize = 4096;
/// A channel's events waiting for its task at most: a task that falls this far behind (its
/// peer does not read) has its channel closed rather than the zone's memory grow.
pub const CHANNEL_QUEUE: usize = 64;

/// The two zones C opens to each E (issue 17): HTTP on 7001, XMPP on 7400, as in the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ZoneKind {
    /// The HTTP zone (SPEC PORTS 7001): `REQ`/`RESP`.
    Http,
    /// The XMPP zone (7400): channels.
    Xmpp,
}

/// The XMPP traversal zone's port on E.
pub const XMPP_TRAVERSAL_PORT: u16 = 7400;

/// What arrives for one channel from the other end of the zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChanEvent {
    /// Bytes of the stream.
    Data(Vec<u8>),
    /// The other end closed the channel, and why.
    Close(String),
    /// E's answer about a media relay (C's side only).
    Media(String),
}

/// Runs Expressway-E until the node stops.
pub use e::serve as serve_e;
/// Runs Expressway-C until the node stops.
pub use zone::serve as serve_c;

/// Why a zone connection ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ZoneEnd {
    /// The peer closed it.
    #[error("closed by the peer")]
    Closed,
    /// Nothing from the peer for [`DEAD_AFTER`].
    #[error("silent for {}s", DEAD_AFTER.as_secs())]
    Silent,
    /// Bytes that are not frames.
    #[error("garbage: {0}")]
    Garbage(#[from] FrameError),
    /// A frame this end never takes (a request sent to C's side of E, …).
    #[error("unexpected frame")]
    Unexpected,
    /// A read or write failed.
    #[error("{0}")]
    Io(String),
    /// A newer zone from the same peer took over.
    #[error("replaced by a newer zone")]
    Replaced,
}

/// The next frame from `rd` (bytes carried over in `buf`), or why there is none.
pub(crate) async fn next_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
    idle: Duration,
) -> Result<Frame, ZoneEnd> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(f) = Frame::decode(buf)? {
            return Ok(f);
        }
        match uclab_net::time::timeout(idle, rd.read(&mut chunk)).await {
            Err(_) => return Err(ZoneEnd::Silent),
            Ok(Ok(0)) => return Err(ZoneEnd::Closed),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(ZoneEnd::Io(e.kind().to_string())),
        }
    }
}

/// Writes the frames of `rx` to `wr`, each within [`DEAD_AFTER`] (a peer that stops reading
/// cannot hold the writer for ever), until the channel closes.
pub(crate) async fn writer<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(b) = rx.recv().await {
        let sent = uclab_net::time::timeout(DEAD_AFTER, async {
            wr.write_all(&b).await?;
            wr.flush().await
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
    }
    let _ = uclab_net::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
}

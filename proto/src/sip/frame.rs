//! Stream framing for SIP over TCP and TLS (RFC 3261 §18.3): a message is its head up to
//! the empty line, then exactly Content-Length octets of body. Keepalive CRLFs between
//! messages (RFC 5626 §3.5.1: a double CRLF ping is answered with a single CRLF pong) are
//! skipped and reported. Nothing beyond [`MAX_MESSAGE`] is buffered.

use super::{MAX_MESSAGE, head_end};

/// What the framer found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// One whole message, to [`super::parse`].
    Message(Vec<u8>),
    /// A CRLF CRLF keepalive ping; answer with CRLF.
    Ping,
    /// A whole STUN message between SIP messages (the MRA softphone's keepalive to the edge,
    /// issue 17), to [`crate::stun::decode`]. Told from SIP by its first octet (0 or 1, where
    /// SIP starts with a letter) and the magic cookie.
    Stun(Vec<u8>),
}

/// Why a stream cannot be framed any more: the framing is lost and the connection is closed
/// (RFC 4475 §3.1.2.3, §3.3.9).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A head without its end within [`MAX_MESSAGE`].
    #[error("message head larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// Content-Length missing a number, repeated with other values, or beyond the limit.
    #[error("bad Content-Length: {0}")]
    BadLength(String),
    /// The peer closed the stream inside a message (the part is kept for an error answer).
    #[error("stream closed inside a message")]
    Truncated(Vec<u8>),
}

/// Splits a byte stream into SIP messages.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    failed: bool,
}

impl StreamFramer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next frame, `Ok(None)` when more bytes are needed. After an error the framer
    /// yields nothing more.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.failed {
            return Ok(None);
        }
        // Keepalives between messages.
        let lead = self.buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
        if lead > 0 {
            let ping = self.buf[..lead].windows(4).any(|w| w == b"\r\n\r\n");
            if lead == self.buf.len() && !ping {
                // Keep at most what could still become a ping: a flood of line ends is not
                // buffered.
                if lead > 3 {
                    self.buf.drain(..lead - 3);
                }
                return Ok(None);
            }
            self.buf.drain(..lead);
            if ping {
                return Ok(Some(Frame::Ping));
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        if self.buf[0] <= 1 {
            return self.stun();
        }
        let Some((head_len, body_at)) = head_end(&self.buf) else {
            if self.buf.len() > MAX_MESSAGE {
                return self.fail(FrameError::TooLarge);
            }
            return Ok(None);
        };
        let len = match content_length(&self.buf[..head_len]) {
            Ok(l) => l,
            Err(e) => return self.fail(e),
        };
        if len > MAX_MESSAGE || body_at + len > MAX_MESSAGE {
            return self.fail(FrameError::BadLength(format!("{len} octets is beyond the limit")));
        }
        if self.buf.len() < body_at + len {
            return Ok(None);
        }
        let msg: Vec<u8> = self.buf.drain(..body_at + len).collect();
        Ok(Some(Frame::Message(msg)))
    }

    /// Whether part of a message is buffered (its first octet has arrived, its end has
    /// not): the reader's partial-message deadline runs while this holds.
    pub fn partial(&self) -> bool {
        !self.failed && self.buf.iter().any(|b| !matches!(b, b'\r' | b'\n'))
    }

    /// The peer closed the stream: what is left, if anything, is a truncated message.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        let rest = std::mem::take(&mut self.buf);
        if self.failed || rest.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return Ok(());
        }
        self.failed = true;
        Err(FrameError::Truncated(rest))
    }

    /// A STUN message at the front: whole, waited for, or garbage (no cookie, too long).
    fn stun(&mut self) -> Result<Option<Frame>, FrameError> {
        use crate::stun::{HEADER, MAGIC, MAX_MESSAGE as MAX_STUN};
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
        if self.buf[4..8] != MAGIC.to_be_bytes() || HEADER + len > MAX_STUN {
            return self.fail(FrameError::BadLength("not SIP and not STUN".into()));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        Ok(Some(Frame::Stun(self.buf.drain(..HEADER + len).collect())))
    }

    fn fail(&mut self, e: FrameError) -> Result<Option<Frame>, FrameError> {
        self.failed = true;
        self.buf.clear();
        Err(e)
    }
}

/// The Content-Length of a head (0 when absent, as RFC 2543-era senders do without a body).
fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    let text = String::from_utf8_lossy(head);
    let mut found: Option<usize> = None;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).peekable();
    lines.next(); // start line
    while let Some(l) = lines.next() {
        let Some((name, value)) = l.split_once(':') else { continue };
        let name = name.trim_end();
        if !(name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l")) {
            continue;
        }
        let mut value = value.trim().to_owned();
        while let Some(next) = lines.peek().filter(|n| n.starts_with([' ', '\t'])) {
            value.push_str(next.trim());
            lines.next();
        }
        let n = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
            .then(|| value.parse::<usize>().ok())
            .flatten()
            .ok_or_else(|| FrameError::BadLength(value.chars().take(20).collect()))?;
        match found {
            Some(f) if f != n => return Err(FrameError::BadLength("two different values".into())),
            _ => found = Some(n),
        }
    }
    Ok(found.unwrap_or(0))
}

//! Which captured frame carries each transcript message, and what the message said (issue 20:
//! a ladder arrow names its frame in capture.pcapng and shows the decoded message).
//!
//! Every node makes a message's transcript line just before it writes the message, so a
//! message's bytes are what its sender writes on that flow after the line and before the next
//! line on the same flow (in the same direction). On a plain flow those are the payloads of
//! the frames written, and the message's frame is the first of them. Under TLS they are the
//! plaintext the TLS stream took ([`crate::tls::Seeded`] reports it), and the frame is the
//! first one carrying ciphertext written while, or after, the plaintext was taken.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::capture::{AddrKey, Capture, addr_key};
use crate::spill::{Chunked, SpillFile, SpillReader};

/// Bytes of one message kept for display; the rest is cut (a TFTP file is the largest).
pub const DETAIL_MAX: usize = 16 * 1024;

/// One direction of a flow: `(from, to)`.
type Dir = (AddrKey, AddrKey);

fn dir(from: SocketAddr, to: SocketAddr) -> Dir {
    (addr_key(from), addr_key(to))
}

/// What is known of one message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageBytes {
    /// Its frame, as an index into the frames in the order they were recorded.
    pub record: Option<u32>,
    /// What its sender wrote (plaintext under TLS), at most [`DETAIL_MAX`] bytes.
    pub bytes: Vec<u8>,
    /// Whether more was written than is kept.
    pub cut: bool,
}

#[derive(Debug, Default)]
struct Open {
    id: u32,
    bytes: Vec<u8>,
    cut: bool,
}

#[derive(Debug, Default)]
struct DirFlow {
    /// The message the bytes written now belong to.
    open: Option<Open>,
    /// Messages whose plaintext TLS took and whose ciphertext is still to be written.
    waiting: Vec<u32>,
    /// While a TLS plaintext write goes on: the first frame it wrote, once one was.
    armed: Option<Option<u32>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    record: Option<u32>,
    /// Where its bytes are: in the spill file, or in `kept` (`at` is then the index).
    at: u64,
    len: u32,
    cut: bool,
    on_disk: bool,
}

/// The message log of one capture.
#[derive(Debug, Default)]
pub(crate) struct MessageLog {
    flows: BTreeMap<Dir, DirFlow>,
    tls: BTreeSet<Dir>,
    entries: Chunked<Entry>,
    kept: Vec<Vec<u8>>,
    spill: Option<SpillFile>,
}

impl MessageLog {
    pub(crate) fn new() -> Self {
        Self { spill: SpillFile::create("messages"), ..Self::default() }
    }

    /// A transcript line for a message `from → to` was made: what is written next on that
    /// direction belongs to it. Returns its id.
    pub(crate) fn mark(&mut self, from: SocketAddr, to: SocketAddr) -> u32 {
        let id = self.entries.len() as u32;
        self.entries.push(Entry::default());
        let f = self.flows.entry(dir(from, to)).or_default();
        let old = f.open.replace(Open { id, ..Open::default() });
        if let Some(o) = old {
            self.close(o);
        }
        id
    }

    fn close(&mut self, o: Open) {
        let e = &mut self.entries[o.id as usize];
        e.cut = o.cut;
        e.len = o.bytes.len() as u32;
        if o.bytes.is_empty() {
            return;
        }
        if let Some(file) = &mut self.spill
            && let Ok(at) = file.append(&o.bytes)
        {
            (e.at, e.on_disk) = (at, true);
            return;
        }
        e.at = self.kept.len() as u64;
        self.kept.push(o.bytes);
    }

    /// `(from, to)` carries TLS from now on (both directions).
    pub(crate) fn tls(&mut self, a: SocketAddr, b: SocketAddr) {
        self.tls.insert(dir(a, b));
        self.tls.insert(dir(b, a));
    }

    /// `a`–`b` is a new connection: in clear until a TLS handshake says otherwise.
    pub(crate) fn clear(&mut self, a: SocketAddr, b: SocketAddr) {
        self.tls.remove(&dir(a, b));
        self.tls.remove(&dir(b, a));
    }

    /// Data `from → to` whose first frame is `record` was recorded.
    pub(crate) fn written(&mut self, from: SocketAddr, to: SocketAddr, record: u32, data: &[u8]) {
        let tls = self.tls.contains(&dir(from, to));
        let Some(f) = self.flows.get_mut(&dir(from, to)) else { return };
        if tls {
            match &mut f.armed {
                Some(first @ None) => *first = Some(record),
                Some(Some(_)) => {}
                None => {
                    for id in f.waiting.drain(..) {
                        self.entries[id as usize].record = Some(record);
                    }
                }
            }
            return;
        }
        let Some(o) = &mut f.open else { return };
        if o.bytes.is_empty() && !o.cut {
            self.entries[o.id as usize].record = Some(record);
        }
        append(o, data);
    }

    /// A TLS stream `from → to` is about to be handed plaintext.
    pub(crate) fn arm(&mut self, from: SocketAddr, to: SocketAddr) {
        self.flows.entry(dir(from, to)).or_default().armed = Some(None);
    }

    /// The TLS stream `from → to` took `plain` (perhaps nothing) since [`arm`](Self::arm).
    pub(crate) fn plain(&mut self, from: SocketAddr, to: SocketAddr, plain: &[u8]) {
        let Some(f) = self.flows.get_mut(&dir(from, to)) else { return };
        let first = f.armed.take().flatten();
        if let Some(o) = &mut f.open
            && !plain.is_empty()
        {
            if o.bytes.is_empty() && !o.cut {
                f.waiting.push(o.id);
            }
            append(o, plain);
        }
        if let Some(record) = first {
            for id in f.waiting.drain(..) {
                self.entries[id as usize].record = Some(record);
            }
        }
    }

    /// Every message, closing the open ones (the run is over), to be read by id.
    pub(crate) fn into_store(mut self, numbers: Vec<u32>) -> MessageStore {
        let open: Vec<Open> = self.flows.values_mut().filter_map(|f| f.open.take()).collect();
        for o in open {
            self.close(o);
        }
        let reader = self.spill.as_mut().and_then(|f| f.reader().ok());
        MessageStore { entries: self.entries, kept: self.kept, reader, _file: self.spill, numbers }
    }

    /// Every message, by id, closing the open ones (tests).
    #[cfg(test)]
    pub(crate) fn take_all(self) -> Vec<MessageBytes> {
        let mut store = self.into_store(Vec::new());
        (0..store.len() as u32).filter_map(|id| store.raw(id)).collect()
    }
}

/// The messages of a finished run, read back by id (their bytes stay on disk until asked for:
/// a 3,000-client run's are hundreds of MB).
pub struct MessageStore {
    entries: Chunked<Entry>,
    kept: Vec<Vec<u8>>,
    reader: Option<SpillReader>,
    /// Kept so the file stays until the store goes.
    _file: Option<SpillFile>,
    /// The pcapng number of each recorded frame, by record.
    numbers: Vec<u32>,
}

impl std::fmt::Debug for MessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStore")
            .field("messages", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl MessageStore {
    /// Messages in the store.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn raw(&mut self, id: u32) -> Option<MessageBytes> {
        let e = *self.entries.get(id as usize)?;
        let bytes = match (e.len, e.on_disk) {
            (0, _) => Vec::new(),
            (_, true) => {
                self.reader.as_mut().and_then(|r| r.get(e.at, e.len).ok()).unwrap_or(&[]).to_vec()
            }
            (_, false) => self.kept.get(e.at as usize).cloned().unwrap_or_default(),
        };
        Some(MessageBytes { record: e.record, bytes, cut: e.cut })
    }

    /// Message `id`: its frame's number in the pcapng (1-based, the file's order), and what
    /// its sender wrote.
    pub fn get(&mut self, id: u32) -> Option<(Option<u32>, MessageBytes)> {
        let m = self.raw(id)?;
        Some((m.record.and_then(|r| self.numbers.get(r as usize).copied()), m))
    }
}

fn append(o: &mut Open, data: &[u8]) {
    let room = DETAIL_MAX.saturating_sub(o.bytes.len());
    o.bytes.extend_from_slice(&data[..data.len().min(room)]);
    o.cut |= data.len() > room;
}

/// Where a TLS stream's plaintext is reported: the capture and the TCP connection under it.
#[derive(Clone, Debug)]
pub(crate) struct PlainTap {
    pub(crate) capture: Capture,
    pub(crate) local: SocketAddr,
    pub(crate) peer: SocketAddr,
}

thread_local! {
    /// While a TLS handshake is polled: the tapped connection under it, once it was used.
    static PROBE: RefCell<Option<Option<PlainTap>>> = const { RefCell::new(None) };
}

/// Runs `f` with the probe set to `probe`, and returns what `f` left in it.
pub(crate) fn with_probe<R>(
    probe: Option<Option<PlainTap>>,
    f: impl FnOnce() -> R,
) -> (R, Option<Option<PlainTap>>) {
    /// Puts back what was there, also when `f` panics.
    struct Restore(Option<Option<Option<PlainTap>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(before) = self.0.take() {
                PROBE.with(|p| *p.borrow_mut() = before);
            }
        }
    }
    let mut restore = Restore(Some(PROBE.with(|p| p.replace(probe))));
    let r = f();
    let before = restore.0.take().unwrap_or_default();
    let after = PROBE.with(|p| p.replace(before));
    (r, after)
}

/// Called by a tapped TCP connection as it is used: a TLS handshake being polled learns it.
pub(crate) fn probe(tap: impl FnOnce() -> PlainTap) {
    PROBE.with(|p| {
        let mut p = p.borrow_mut();
        if let Some(slot @ None) = &mut *p {
            let t = tap();
            t.capture.tls_flow(t.local, t.peer);
            *slot = Some(t);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn plain_bytes_follow_their_line() {
        let (c, s) = (a("10.0.0.1:40000"), a("10.0.0.2:53"));
        let mut log = MessageLog::new();
        let q = log.mark(c, s);
        log.written(c, s, 3, b"query");
        let r = log.mark(s, c);
        log.written(s, c, 4, b"answer");
        log.written(s, c, 5, b" more");
        let none = log.mark(c, s);
        let all = log.take_all();
        assert_eq!(
            all[q as usize],
            MessageBytes { record: Some(3), bytes: b"query".to_vec(), cut: false }
        );
        assert_eq!(all[r as usize].record, Some(4));
        assert_eq!(all[r as usize].bytes, b"answer more");
        assert_eq!(all[none as usize], MessageBytes::default());
    }

    #[test]
    fn tls_plaintext_gets_the_ciphertext_frame() {
        let (c, s) = (a("10.0.0.1:40000"), a("10.0.0.2:443"));
        let mut log = MessageLog::new();
        log.written(c, s, 0, b"hello"); // before any line: nobody's
        log.tls(c, s);
        let m = log.mark(c, s);
        log.written(c, s, 1, b"\x16\x03 handshake"); // not the message's
        log.arm(c, s);
        log.written(c, s, 2, b"\x17 record");
        log.written(c, s, 3, b"\x17 second segment");
        log.plain(c, s, b"GET / HTTP/1.1\r\n\r\n");
        // Plaintext taken, ciphertext written later (a full socket).
        let later = log.mark(c, s);
        log.arm(c, s);
        log.plain(c, s, b"POST");
        log.written(c, s, 7, b"\x17 flushed");
        // The ports used again by a new connection, in clear.
        log.clear(s, c);
        let again = log.mark(c, s);
        log.written(c, s, 9, b"OPTIONS");
        let all = log.take_all();
        assert_eq!(all[again as usize].record, Some(9));
        assert_eq!(all[again as usize].bytes, b"OPTIONS");
        assert_eq!(all[later as usize].record, Some(7));
        assert_eq!(all[m as usize].record, Some(2));
        assert_eq!(all[m as usize].bytes, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(all[later as usize].bytes, b"POST");
    }

    #[test]
    fn the_probe_is_put_back_after_a_panic() {
        let r = std::panic::catch_unwind(|| with_probe(Some(None), || panic!("in a handshake")));
        assert!(r.is_err());
        assert!(PROBE.with(|p| p.borrow().is_none()), "no handshake is being polled");
        let ((), left) = with_probe(Some(None), || ());
        assert!(matches!(left, Some(None)), "nothing used a connection");
    }

    #[test]
    fn long_messages_are_cut() {
        let (c, s) = (a("10.0.0.1:40000"), a("10.0.0.2:80"));
        let mut log = MessageLog::default();
        let m = log.mark(c, s);
        log.written(c, s, 0, &vec![b'x'; DETAIL_MAX + 10]);
        log.written(c, s, 9, b"y");
        let got = log.take_all().remove(m as usize);
        assert!(got.cut && got.bytes.len() == DETAIL_MAX && got.record == Some(0));
    }
}

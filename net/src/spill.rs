//! Bytes a simulated run keeps on disk rather than in memory until its outputs are written
//! (issue 19): capture frames and transcript lines, appended as they come to a temporary file
//! that goes when its owner does.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// An append-only temporary file.
pub(crate) struct SpillFile {
    file: io::BufWriter<std::fs::File>,
    path: PathBuf,
    written: u64,
}

impl SpillFile {
    /// A new file in the temporary directory, named for `what`; `None` where none can be made
    /// (the caller then keeps its bytes in memory).
    pub(crate) fn create(what: &str) -> Option<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("uclab-{}-{n}.{what}", std::process::id()));
        let f = std::fs::File::options().write(true).create_new(true).open(&path).ok()?;
        Some(Self { file: io::BufWriter::with_capacity(1 << 20, f), path, written: 0 })
    }

    /// Appends `b`; returns where it starts.
    pub(crate) fn append(&mut self, b: &[u8]) -> io::Result<u64> {
        self.file.write_all(b)?;
        let at = self.written;
        self.written += b.len() as u64;
        Ok(at)
    }

    /// Every byte appended so far (what reached the file, then what waits in the buffer; after
    /// a failed append, possibly part of that one too).
    pub(crate) fn bytes(&self) -> io::Result<Vec<u8>> {
        let mut b = std::fs::read(&self.path)?;
        b.extend_from_slice(self.file.buffer());
        Ok(b)
    }

    /// Reads the bytes back piece by piece (all of them flushed first): a run's outputs are
    /// assembled without holding the whole file in memory.
    pub(crate) fn reader(&mut self) -> io::Result<SpillReader> {
        self.file.flush()?;
        let file = std::fs::File::open(&self.path)?;
        Ok(SpillReader { file, windows: Default::default(), last: 0, buf: Vec::new() })
    }

    /// Where it is.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// Lines of text kept in a temporary file where one was made, in memory otherwise; read back
/// whole and in order (issue 19: a run's TLS key log, five lines a handshake, is written into
/// the pcapng only at the end).
#[derive(Debug, Default)]
pub(crate) struct SpilledText {
    file: Option<SpillFile>,
    /// Lines kept in memory: all of them without a file, and every line after a failed write
    /// (so the order stays).
    mem: String,
}

impl SpilledText {
    /// Text on disk, named for `what` (in memory where no file can be made).
    pub(crate) fn on_disk(what: &str) -> Self {
        Self { file: SpillFile::create(what), mem: String::new() }
    }

    /// Appends `line` and a newline.
    pub(crate) fn push_line(&mut self, line: &str) {
        if let Some(f) = &mut self.file
            && self.mem.is_empty()
            && f.append(format!("{line}\n").as_bytes()).is_ok()
        {
            return;
        }
        self.mem.push_str(line);
        self.mem.push('\n');
    }

    /// Every line, in order. After a failed write the file may end in part of the line that
    /// failed, which is in memory too: the file counts up to its last newline.
    pub(crate) fn text(&self) -> String {
        let mut on_disk = self.file.as_ref().and_then(|f| f.bytes().ok()).unwrap_or_default();
        on_disk.truncate(on_disk.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1));
        let mut s = String::from_utf8(on_disk).unwrap_or_default();
        s.push_str(&self.mem);
        s
    }
}

/// Entries of a [`Chunked`] list per block.
const BLOCK: usize = 4096;

/// A list that only grows, kept in blocks of [`BLOCK`] entries: it never holds room for twice
/// what it has, and never copies itself to grow (issue 19: CAP1's frame and line indexes
/// are millions of entries, and a doubling `Vec` held up to half of its room empty, plus the
/// old and new copies together while it grew).
#[derive(Clone, Debug)]
pub(crate) struct Chunked<T> {
    blocks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self { blocks: Vec::new(), len: 0 }
    }
}

impl<T> Chunked<T> {
    /// Appends `v`.
    pub(crate) fn push(&mut self, v: T) {
        match self.blocks.last_mut() {
            Some(b) if b.len() < BLOCK => b.push(v),
            _ => {
                let mut b = Vec::with_capacity(BLOCK);
                b.push(v);
                self.blocks.push(b);
            }
        }
        self.len += 1;
    }

    /// How many entries it has.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether it has none.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entry `i` (every block but the last is full).
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.blocks.get(i / BLOCK)?.get(i % BLOCK)
    }

    /// Entry `i`, to change.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.blocks.get_mut(i / BLOCK)?.get_mut(i % BLOCK)
    }

    /// The entries in the order they were pushed.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.blocks.iter().flatten()
    }
}

impl<T> std::ops::Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        self.get(i).expect("index within the list")
    }
}

impl<T> std::ops::IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        self.get_mut(i).expect("index within the list")
    }
}

impl<T> IntoIterator for Chunked<T> {
    type Item = T;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<T>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.blocks.into_iter().flatten()
    }
}

/// Reads pieces of a [`SpillFile`], cheaply when they come in the order they were written.
pub(crate) struct SpillReader {
    file: std::fs::File,
    /// The two windows of the file read last: where each starts, and its bytes.
    windows: [(u64, Vec<u8>); 2],
    /// The window used last (the other one is replaced on a miss).
    last: usize,
    /// A piece longer than a window.
    buf: Vec<u8>,
}

/// Bytes a [`SpillReader`] window holds.
const WINDOW: usize = 64 * 1024;

impl SpillReader {
    /// The `len` bytes written at `at`.
    ///
    /// Readers go mostly forward, with jumps: the messages of a run are read in the order of
    /// their transcript lines but were written when each was complete, so a flow's last
    /// message sits at the end of the file. Two windows keep both places (issue 19: a
    /// `BufReader` of 1 MiB refilled itself at each jump and back, 6% of CAP1's time).
    pub(crate) fn get(&mut self, at: u64, len: u32) -> io::Result<&[u8]> {
        let len = len as usize;
        let inside = |(start, bytes): &(u64, Vec<u8>)| {
            at >= *start && at - start + len as u64 <= bytes.len() as u64
        };
        let w = match (inside(&self.windows[self.last]), inside(&self.windows[1 - self.last])) {
            (true, _) => self.last,
            (_, true) => 1 - self.last,
            _ if len > WINDOW => {
                self.buf.resize(len, 0);
                read_at(&self.file, &mut self.buf, at)?;
                return Ok(&self.buf);
            }
            _ => {
                let w = 1 - self.last;
                let (start, bytes) = &mut self.windows[w];
                bytes.resize(WINDOW, 0);
                let n = fill_at(&self.file, bytes, at)?;
                bytes.truncate(n);
                *start = at;
                if n < len {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                w
            }
        };
        self.last = w;
        let (start, bytes) = &self.windows[w];
        let from = (at - start) as usize;
        Ok(&bytes[from..from + len])
    }
}

/// Fills `buf` from `at`, short only at the end of the file; returns how much it read.
fn fill_at(file: &std::fs::File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt as _;
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads all of `buf` from `at`.
fn read_at(file: &std::fs::File, buf: &mut [u8], at: u64) -> io::Result<()> {
    if fill_at(file, buf, at)? < buf.len() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// `bytes[at..at + len]`, or nothing if the file came up short.
pub(crate) fn slice(bytes: &[u8], at: u64, len: u32) -> Option<&[u8]> {
    bytes.get(usize::try_from(at).ok()?..usize::try_from(at).ok()? + len as usize)
}

impl std::fmt::Debug for SpillFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpillFile({}, {} bytes)", self.path.display(), self.written)
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_gives_each_piece_wherever_it_jumps() {
        let mut f = SpillFile::create("test-reader").expect("a temporary file");
        let data: Vec<u8> = (0..(3 * WINDOW + 100)).map(|i| (i * 7 % 251) as u8).collect();
        let mut at = Vec::new();
        // Pieces of every size, one longer than a window.
        for (i, piece) in data.chunks(1000).enumerate().take(50) {
            at.push((f.append(piece).expect("append"), piece.len() as u32, i * 1000));
        }
        let big = f.append(&data).expect("append");
        let mut r = f.reader().expect("reader");
        // Forward, then jumps between the start, the far end and back.
        let order = [0, 1, 2, 49, 3, 48, 4, 10, 9, 30, 0];
        for &i in &order {
            let (a, len, off) = at[i];
            assert_eq!(r.get(a, len).expect("piece"), &data[off..off + len as usize], "piece {i}");
        }
        assert_eq!(r.get(big, data.len() as u32).expect("the long piece"), &data[..]);
        assert_eq!(r.get(big + 5, 10).expect("inside it"), &data[5..15]);
        let end = big + data.len() as u64;
        assert!(r.get(end - 2, 4).is_err(), "past the end is an error, not short bytes");
    }

    #[test]
    fn spilled_text_keeps_lines_in_order_on_disk_or_not() {
        let mut d = SpilledText::on_disk("test-text");
        let mut m = SpilledText::default();
        for l in ["CLIENT_RANDOM aa bb", "SERVER_TRAFFIC_SECRET_0 cc dd"] {
            d.push_line(l);
            m.push_line(l);
        }
        assert!(d.mem.is_empty() && d.file.is_some(), "on disk");
        let want = "CLIENT_RANDOM aa bb\nSERVER_TRAFFIC_SECRET_0 cc dd\n";
        assert_eq!((d.text().as_str(), m.text().as_str()), (want, want));
        // A failed write: that line and the later ones stay in memory, after the file's.
        d.mem.push_str("EXPORTER ee ff\n");
        d.push_line("last");
        assert_eq!(d.text(), format!("{want}EXPORTER ee ff\nlast\n"));
    }

    #[test]
    fn a_chunked_list_is_a_list() {
        let mut c = Chunked::default();
        assert!(c.is_empty() && c.get(0).is_none());
        let n = BLOCK * 2 + 3;
        for i in 0..n {
            c.push(i);
        }
        assert_eq!(c.len(), n);
        assert!(c.iter().copied().eq(0..n), "in the order pushed, across blocks");
        assert_eq!((c[BLOCK - 1], c[BLOCK], c[n - 1]), (BLOCK - 1, BLOCK, n - 1));
        assert!(c.get(n).is_none());
        c[BLOCK + 1] = 7;
        *c.get_mut(0).expect("first") = 9;
        let v: Vec<usize> = c.clone().into_iter().collect();
        assert_eq!((v[0], v[BLOCK + 1], v.len()), (9, 7, n));
        assert!(c.blocks.iter().all(|b| b.capacity() == BLOCK), "no block grows past its room");
    }
}

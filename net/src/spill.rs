//! Bytes a simulated run keeps on disk rather than in memory until its outputs are written
//! (issue 19): capture frames and transcript lines, appended as they come to a temporary file
//! that goes when its owner does.

use std::io::{self, Read as _, Write};
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
        let r = io::BufReader::with_capacity(1 << 20, std::fs::File::open(&self.path)?);
        Ok(SpillReader { r, pos: 0, buf: Vec::new() })
    }

    /// Where it is.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
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
    r: io::BufReader<std::fs::File>,
    pos: u64,
    buf: Vec<u8>,
}

impl SpillReader {
    /// The `len` bytes written at `at`.
    pub(crate) fn get(&mut self, at: u64, len: u32) -> io::Result<&[u8]> {
        if at != self.pos {
            let delta =
                i64::try_from(at).unwrap_or(i64::MAX) - i64::try_from(self.pos).unwrap_or(0);
            // Within the buffer this moves a cursor; beyond it, it seeks.
            self.r.seek_relative(delta)?;
        }
        self.buf.resize(len as usize, 0);
        self.r.read_exact(&mut self.buf)?;
        self.pos = at + u64::from(len);
        Ok(&self.buf)
    }
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

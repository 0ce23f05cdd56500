//! One read buffer per thread for every stream's reads (issue 19: memory).
//!
//! A connection task that keeps its own `vec![0; 16 KiB]` for reads holds it as long as the
//! connection lives: CAP1's 3,000 clients and their servers held about 250 MB that way, nearly
//! all of it idle. [`read_vec`] reads into a buffer the thread shares instead, borrowed only
//! while the stream is polled, and hands the caller the bytes that came. The stream is asked
//! for at most `max` bytes, exactly as a read into a `max`-byte buffer of its own asks, so what
//! is read, and when, does not change (every snapshot and the golden capture are the same).
//!
//! Runs are single-threaded (a `LocalSet` per host, and every host on the simulation's one
//! thread), so one buffer serves them all. A read that finds it borrowed (a stream whose own
//! read uses [`read_vec`] inside) falls back to a buffer of its own for that read.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;

use tokio::io::{AsyncRead, ReadBuf};

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Reads once from `io`, at most `max` bytes, and returns what came (empty: the peer closed
/// the stream). Cancel-safe as `AsyncReadExt::read` is: dropped before it is ready, nothing
/// was read.
pub async fn read_vec<R>(io: &mut R, max: usize) -> io::Result<Vec<u8>>
where
    R: AsyncRead + Unpin + ?Sized,
{
    std::future::poll_fn(|cx| {
        let mut poll = |buf: &mut [u8]| {
            let mut rb = ReadBuf::new(&mut buf[..max]);
            Pin::new(&mut *io).poll_read(cx, &mut rb).map_ok(|()| rb.filled().to_vec())
        };
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => {
                if s.len() < max {
                    s.resize(max, 0);
                }
                poll(&mut s)
            }
            Err(_) => poll(&mut vec![0; max]),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    use tokio::io::AsyncWriteExt;

    fn local<F: Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    #[test]
    fn reads_at_most_max_and_what_came() {
        local(async {
            let (mut a, mut b) = tokio::io::duplex(64);
            a.write_all(b"hello world").await.expect("write");
            assert_eq!(read_vec(&mut b, 5).await.expect("read"), b"hello");
            let rest = read_vec(&mut b, 64).await.expect("read");
            assert_eq!(rest.len(), 6, "the rest, not a buffer's worth");
            drop(a);
            assert!(read_vec(&mut b, 64).await.expect("eof").is_empty());
        });
    }

    #[test]
    fn tasks_waiting_on_reads_share_the_buffer() {
        local(async {
            let (mut a1, mut b1) = tokio::io::duplex(64);
            let (mut a2, mut b2) = tokio::io::duplex(64);
            let t1 = tokio::task::spawn_local(async move { read_vec(&mut b1, 16).await });
            let t2 = tokio::task::spawn_local(async move { read_vec(&mut b2, 4).await });
            tokio::task::yield_now().await;
            a2.write_all(b"second").await.expect("write");
            a1.write_all(b"first").await.expect("write");
            assert_eq!(t1.await.expect("join").expect("read"), b"first");
            assert_eq!(t2.await.expect("join").expect("read"), b"seco");
        });
    }

    /// A stream whose own reads go through [`read_vec`]: the inner read finds the buffer
    /// borrowed and uses one of its own.
    struct Nested(tokio::io::DuplexStream);

    impl AsyncRead for Nested {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let max = buf.remaining();
            let inner = read_vec(&mut self.0, max);
            let mut inner = std::pin::pin!(inner);
            inner.as_mut().poll(cx).map_ok(|b| buf.put_slice(&b))
        }
    }

    #[test]
    fn a_nested_read_does_not_panic() {
        local(async {
            let (mut a, b) = tokio::io::duplex(64);
            a.write_all(b"inner").await.expect("write");
            let mut n = Nested(b);
            assert_eq!(read_vec(&mut n, 32).await.expect("read"), b"inner");
        });
    }
}

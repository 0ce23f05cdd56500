//! HTTP/1.1 client requests: what the client core's driver and Expressway-C's requests inside
//! both send ([`request`]: connect, TLS, the transcript line, the request, the answer read
//! within bounds).
//!
//! Connections are kept for the next request to the same place (RFC 9112 §9.3, persistence),
//! as Jabber's HTTP stack and Expressway-C's requests inside do: a [`Pool`] holds idle ones,
//! each for at most its idle time (shorter than the mock servers' 10 s keep-alive, so the
//! client, not the server, ends a quiet connection) and never more than a bound per
//! destination. A request that fails on a kept connection before any answer came (the peer
//! closed it meanwhile) goes once more on a new one ([`Failure::retry`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;

/// Why an exchange failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Http1Error {
    /// The HTTP exchange failed (the peer's HTTP was not HTTP, the connection dropped).
    #[error("{0}")]
    Http(String),
    /// The response body could not be read (too long, cut short).
    #[error("{0}")]
    Body(String),
}

/// An answer: status, headers (names lower-cased, at most `max_headers`) and body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// A failed exchange, and whether it may go again on a new connection: the request never
/// left, or the connection closed before a byte of the answer came.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: Http1Error,
    /// True when nothing of the answer arrived, so a new connection may carry the request.
    pub retry: bool,
}

/// An HTTP/1.1 client connection (its task runs until every handle is dropped or the peer
/// closes it).
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// The local end of the stream (transcript lines name it).
    pub local: SocketAddr,
    /// When it was last given back to a pool.
    idle_since: Duration,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("local", &self.local).finish_non_exhaustive()
    }
}

/// Starts HTTP/1.1 on `io` (whose local end is `local`).
pub async fn handshake<I>(io: I, local: SocketAddr) -> Result<Conn, Http1Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Http1Error::Http(e.to_string()))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(Conn { sender, local, idle_since: Duration::ZERO })
}

/// Sends `method target` with `headers` (in order; `Host` among them) and `body` on `conn`,
/// and reads the answer: at most `max_headers` headers and `max_body` bytes of body. After
/// an answer the connection may carry another request if [`Conn::reusable`].
pub async fn send(
    conn: &mut Conn,
    (method, target): (&str, &str),
    headers: &[(String, String)],
    body: Vec<u8>,
    (max_headers, max_body): (usize, usize),
) -> Result<Answer, Failure> {
    let http = |e: &dyn std::fmt::Display| Http1Error::Http(e.to_string());
    let early = |e: hyper::Error| Failure {
        retry: e.is_canceled() || e.is_incomplete_message() || e.is_closed(),
        error: http(&e),
    };
    conn.sender.ready().await.map_err(early)?;
    let mut b = hyper::Request::builder().method(method).uri(target);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let request = b
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Failure { error: http(&e), retry: false })?;
    let resp = conn.sender.send_request(request).await.map_err(early)?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .take(max_headers)
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = Limited::new(resp.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| Failure { error: Http1Error::Body(e.to_string()), retry: false })?
        .to_bytes()
        .to_vec();
    Ok((status, headers, body))
}

impl Conn {
    /// Whether the connection may carry another request (the peer did not close it or ask
    /// to, `Connection: close`).
    pub fn reusable(&self) -> bool {
        !self.sender.is_closed()
    }
}

/// What a [`request`] sends: method and target, headers (in order; `Host` among them), body.
pub type Message<'a> = ((&'a str, &'a str), &'a [(String, String)], &'a [u8]);

/// Why a [`request`] got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The TCP connection failed.
    #[error("{0}")]
    Connect(String),
    /// No TLS config could be made (the lab's PKI).
    #[error("{0}")]
    TlsSetup(String),
    /// The TLS handshake failed (a certificate not for the name, ...).
    #[error("{0}")]
    Tls(String),
    /// The HTTP exchange failed.
    #[error("{0}")]
    Http(Http1Error),
}

/// One request to `to`, over TLS checked against `tls_name` when given: on a connection kept
/// in `pool` from an earlier request to the same place, or a new one (also when the kept one
/// turns out closed before any answer). Writes `summary` to the transcript from the
/// connection's local end, and keeps the connection for the next request.
pub async fn request<N: crate::Net>(
    net: &N,
    pool: &Pool,
    (to, tls_name): (SocketAddr, Option<&str>),
    summary: &str,
    (target, headers, body): Message<'_>,
    limits: (usize, usize),
) -> Result<Answer, RequestError> {
    let key = (to, tls_name.map(str::to_owned));
    if let Some(mut conn) = pool.take(&key, net.now()) {
        net.transcript().message(net.now(), conn.local, to, "tcp", summary);
        match send(&mut conn, target, headers, body.to_vec(), limits).await {
            Ok(a) => {
                pool.put(key, conn, net.now());
                return Ok(a);
            }
            // The server closed it meanwhile (a restart, its idle time): a new connection.
            Err(f) if f.retry => {}
            Err(f) => return Err(RequestError::Http(f.error)),
        }
    }
    let tcp = net.connect(to).await.map_err(|e| RequestError::Connect(e.to_string()))?;
    let local = tcp.local_addr();
    net.transcript().message(net.now(), local, to, "tcp", summary);
    let mut conn = match tls_name {
        Some(name) => {
            let tls = net.tls();
            let cfg = tls.client_config(&[]).map_err(|e| RequestError::TlsSetup(e.to_string()))?;
            let s =
                tls.connect(cfg, name, tcp).await.map_err(|e| RequestError::Tls(e.to_string()))?;
            handshake(hyper_util::rt::TokioIo::new(s), local).await
        }
        None => handshake(hyper_util::rt::TokioIo::new(tcp), local).await,
    }
    .map_err(RequestError::Http)?;
    let a = send(&mut conn, target, headers, body.to_vec(), limits)
        .await
        .map_err(|f| RequestError::Http(f.error))?;
    pool.put(key, conn, net.now());
    Ok(a)
}

/// Where a kept connection goes: the address and, for TLS, the name its certificate was
/// checked against (`None`: plain HTTP).
pub type PoolKey = (SocketAddr, Option<String>);

/// Idle connections kept for the next request, by destination: at most `per_key` each and
/// `keys` destinations, each idle at most `max_idle`, then dropped, which closes it (a timer
/// per connection given back; it must be given back on a `LocalSet`).
#[derive(Debug)]
pub struct Pool {
    idle: Rc<RefCell<BTreeMap<PoolKey, Vec<Conn>>>>,
    per_key: usize,
    keys: usize,
    max_idle: Duration,
}

impl Pool {
    /// An empty pool.
    pub fn new(per_key: usize, keys: usize, max_idle: Duration) -> Self {
        Self { idle: Rc::default(), per_key, keys, max_idle }
    }

    /// The most recently kept connection to `key` that is still open and idle less than the
    /// pool's idle time at `now`; the others that are not are dropped.
    pub fn take(&self, key: &PoolKey, now: Duration) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        list.retain(|c| c.reusable() && now.saturating_sub(c.idle_since) < self.max_idle);
        let conn = list.pop();
        if list.is_empty() {
            idle.remove(key);
        }
        conn
    }

    /// Keeps `conn` for the next request to `key` if it is reusable and there is room, and
    /// closes it once it has been idle the pool's idle time.
    pub fn put(&self, key: PoolKey, mut conn: Conn, now: Duration) {
        if !conn.reusable() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        if !idle.contains_key(&key) && idle.len() >= self.keys {
            return;
        }
        let list = idle.entry(key.clone()).or_default();
        if list.len() >= self.per_key {
            return;
        }
        conn.idle_since = now;
        list.push(conn);
        let (pool, max_idle) = (Rc::downgrade(&self.idle), self.max_idle);
        tokio::task::spawn_local(async move {
            crate::time::sleep(max_idle).await;
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = pool.borrow_mut();
            if let Some(list) = idle.get_mut(&key) {
                // Those given back at `now` or before, this one among them.
                list.retain(|c| c.idle_since > now);
                if list.is_empty() {
                    idle.remove(&key);
                }
            }
        });
    }

    /// Closes every idle connection (the network changed under them).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }

    /// How many idle connections it holds.
    pub fn len(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// What the scripted server does after reading each request head.
    #[derive(Clone, Copy)]
    enum Peer {
        /// Answers 200 and keeps the connection.
        Keep,
        /// Answers 200 with `Connection: close`, then closes.
        Close,
        /// Closes without answering.
        Drop,
    }

    /// A scripted HTTP/1.1 server on one stream: reads request heads, answers as told, and
    /// returns how many requests it read.
    async fn serve(mut io: DuplexStream, peer: Peer) -> usize {
        let (mut buf, mut requests) = (Vec::new(), 0);
        loop {
            let mut chunk = [0u8; 1024];
            let n = match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return requests,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                buf.drain(..end + 4);
                requests += 1;
                let answer: &[u8] = match peer {
                    Peer::Keep => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                    Peer::Close => {
                        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
                    }
                    Peer::Drop => return requests,
                };
                if io.write_all(answer).await.is_err() || matches!(peer, Peer::Close) {
                    return requests;
                }
            }
        }
    }

    fn key(port: u16) -> PoolKey {
        (SocketAddr::from(([10, 0, 0, 1], port)), Some("cucm1.example.com".into()))
    }

    async fn connect(peer: Peer) -> (Conn, tokio::task::JoinHandle<usize>) {
        let (client, server) = tokio::io::duplex(4096);
        let server = tokio::task::spawn_local(serve(server, peer));
        let local = SocketAddr::from(([10, 0, 0, 9], 49152));
        let conn = handshake(hyper_util::rt::TokioIo::new(client), local).await.expect("handshake");
        (conn, server)
    }

    async fn get(conn: &mut Conn) -> Result<Answer, Failure> {
        let headers = [("host".to_owned(), "cucm1.example.com".to_owned())];
        send(conn, ("GET", "/cucm-uds/version"), &headers, Vec::new(), (64, 1024)).await
    }

    fn local<F: Future>(f: F) -> F::Output {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    #[test]
    fn a_kept_connection_carries_the_next_request() {
        local(async {
            let pool = Pool::new(2, 4, Duration::from_secs(5));
            let (mut conn, server) = connect(Peer::Keep).await;
            assert_eq!(get(&mut conn).await.expect("first").0, 200);
            pool.put(key(8443), conn, Duration::from_secs(1));
            assert_eq!(pool.len(), 1);
            let mut again = pool.take(&key(8443), Duration::from_secs(2)).expect("kept");
            assert!(pool.is_empty());
            assert_eq!(get(&mut again).await.expect("second").2, b"ok");
            drop(again);
            assert_eq!(server.await.expect("server"), 2, "both requests on one stream");
        });
    }

    #[test]
    fn connection_close_is_not_kept() {
        local(async {
            let pool = Pool::new(2, 4, Duration::from_secs(5));
            let (mut conn, _server) = connect(Peer::Close).await;
            assert_eq!(get(&mut conn).await.expect("answer").0, 200);
            tokio::task::yield_now().await;
            assert!(!conn.reusable());
            pool.put(key(8443), conn, Duration::ZERO);
            assert!(pool.is_empty());
        });
    }

    #[test]
    fn idle_connections_expire_and_closed_ones_are_skipped() {
        local(async {
            let pool = Pool::new(2, 4, Duration::from_secs(5));
            let (mut conn, server) = connect(Peer::Keep).await;
            get(&mut conn).await.expect("answer");
            pool.put(key(8443), conn, Duration::from_secs(1));
            assert!(pool.take(&key(8443), Duration::from_secs(6)).is_none(), "idle 5 s");
            assert!(pool.is_empty());
            // Dropped from the pool, the connection closed: the server saw the end.
            assert_eq!(server.await.expect("server"), 1);

            // Not looked at again, a kept connection still closes after its idle time.
            let pool = Pool::new(2, 4, Duration::from_millis(10));
            let (mut conn, server) = connect(Peer::Keep).await;
            get(&mut conn).await.expect("answer");
            pool.put(key(8443), conn, Duration::ZERO);
            crate::time::sleep(Duration::from_millis(50)).await;
            assert!(pool.is_empty());
            assert_eq!(server.await.expect("server"), 1);

            let (mut conn, server) = connect(Peer::Keep).await;
            get(&mut conn).await.expect("answer");
            pool.put(key(8443), conn, Duration::ZERO);
            server.abort();
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            assert!(pool.take(&key(8443), Duration::ZERO).is_none(), "the peer closed it");
        });
    }

    #[test]
    fn the_pool_is_bounded_per_destination_and_in_destinations() {
        local(async {
            let pool = Pool::new(2, 2, Duration::from_secs(5));
            for port in [1, 1, 1, 2, 3] {
                let (conn, _server) = connect(Peer::Keep).await;
                pool.put(key(port), conn, Duration::ZERO);
            }
            assert_eq!(pool.len(), 3, "two for :1, one for :2, none for a third destination");
            assert!(pool.take(&key(3), Duration::ZERO).is_none());
            pool.clear();
            assert!(pool.is_empty());
        });
    }

    #[test]
    fn a_request_the_peer_never_answered_may_go_again() {
        local(async {
            let (mut conn, _server) = connect(Peer::Drop).await;
            let f = get(&mut conn).await.expect_err("no answer");
            assert!(f.retry, "{}", f.error);
            // A body cut short is not retried: part of the answer came.
            let (client, mut server) = tokio::io::duplex(4096);
            tokio::task::spawn_local(async move {
                let mut b = [0u8; 1024];
                let _ = server.read(&mut b).await;
                let _ = server.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok").await;
            });
            let local = SocketAddr::from(([10, 0, 0, 9], 49153));
            let mut conn = handshake(hyper_util::rt::TokioIo::new(client), local).await.unwrap();
            let f = get(&mut conn).await.expect_err("short body");
            assert!(!f.retry);
        });
    }
}

//! Expressway-C's HTTP(S) client towards the inside: hyper 1.x over a `Net` stream, TLS
//! verified against the internal host name with the lab CA, connections kept for the next
//! request to the same node (at most [`PER_ADDRESS`] at once, each idle at most
//! [`KEEP_IDLE`]), the whole exchange under [`UPSTREAM_DEADLINE`]. The transcript shows each request as the
//! client's do (method, target, whether credentials went, never what they are); the server
//! writes the answer.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Semaphore;

use uclab_net::Net;
use uclab_net::http1::{Pool, RequestError, request};
use uclab_proto::edge::Scheme;

use crate::http::{MAX_BODY, Response};

/// One internal exchange, connect to last body byte; below E's request deadline, so C's own
/// 504 reaches the client rather than E's 502.
pub const UPSTREAM_DEADLINE: Duration = Duration::from_secs(8);

/// Connections C holds to one inside address at once: under the inside servers' own cap per
/// peer (64), so a storm of edge clients waits its turn at C instead of being refused inside.
pub const PER_ADDRESS: usize = 32;

/// How long C keeps an idle connection inside: under the inside servers' 10 s.
pub const KEEP_IDLE: Duration = Duration::from_secs(5);
/// Idle connections C keeps to one inside destination: with the [`PER_ADDRESS`] busy ones,
/// still under the inside servers' cap per peer.
const KEEP_PER_ADDRESS: usize = 16;
/// Inside destinations (address and TLS name) C keeps idle connections to.
const KEEP_DESTINATIONS: usize = 64;

/// C's connection slots per inside address (bounded: one entry per address C was sent to),
/// and the idle connections it keeps.
#[derive(Debug)]
pub struct Slots {
    slots: RefCell<BTreeMap<SocketAddr, Rc<Semaphore>>>,
    idle: Pool,
}

impl Default for Slots {
    fn default() -> Self {
        Self {
            slots: RefCell::default(),
            idle: Pool::new(KEEP_PER_ADDRESS, KEEP_DESTINATIONS, KEEP_IDLE),
        }
    }
}

impl Slots {
    fn of(&self, addr: SocketAddr) -> Rc<Semaphore> {
        self.slots
            .borrow_mut()
            .entry(addr)
            .or_insert_with(|| Rc::new(Semaphore::new(PER_ADDRESS)))
            .clone()
    }
}

/// Why an internal request got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The internal DNS has no address for the host.
    #[error("no address for {0}")]
    NoAddress(String),
    /// The internal DNS did not answer usefully.
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    /// The TCP connection failed.
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, String),
    /// The TLS handshake failed (certificate not for the host, …).
    #[error("TLS with {0}: {1}")]
    Tls(String, String),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// No answer within [`UPSTREAM_DEADLINE`].
    #[error("no answer within {}s", UPSTREAM_DEADLINE.as_secs())]
    Timeout,
}

/// One request to an internal host.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// Host name (TLS name and `Host`).
    pub host: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Method.
    pub method: String,
    /// Path and query, encoded.
    pub target: String,
    /// Headers to send (`Host` is added).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Outbound {
    /// The transcript line: method, target, `(Basic)` when credentials go.
    pub fn summary(&self) -> String {
        let basic = self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        format!("HTTP {} {}{}", self.method, self.target, if basic { " (Basic)" } else { "" })
    }
}

/// Sends `req` on one of `slots`' connections to its address (waiting for one, within the
/// deadline) and returns the answer (status, headers, body up to [`MAX_BODY`]).
pub async fn exchange<N: Net>(
    net: &N,
    slots: &Slots,
    req: &Outbound,
) -> Result<Response, UpstreamError> {
    let sem = slots.of(req.addr);
    let run = async {
        let _slot = sem.acquire().await.map_err(|_| UpstreamError::Timeout)?;
        exchange_inner(net, &slots.idle, req).await
    };
    match uclab_net::time::timeout(UPSTREAM_DEADLINE, run).await {
        Ok(r) => r,
        Err(_) => Err(UpstreamError::Timeout),
    }
}

async fn exchange_inner<N: Net>(
    net: &N,
    idle: &Pool,
    req: &Outbound,
) -> Result<Response, UpstreamError> {
    let host = if req.addr.port() == 443 {
        req.host.clone()
    } else {
        format!("{}:{}", req.host, req.addr.port())
    };
    let mut headers = vec![("host".to_owned(), host)];
    headers.extend(req.headers.iter().cloned());
    let target = (req.method.as_str(), req.target.as_str());
    let tls = matches!(req.scheme, Scheme::Https).then_some(req.host.as_str());
    let what = (target, &headers[..], &req.body[..]);
    match request(net, idle, (req.addr, tls), &req.summary(), what, (usize::MAX, MAX_BODY)).await {
        Ok((status, headers, body)) => Ok(Response { status, headers, body }),
        Err(RequestError::Connect(e)) => Err(UpstreamError::Connect(req.addr, e)),
        Err(RequestError::TlsSetup(e) | RequestError::Tls(e)) => {
            Err(UpstreamError::Tls(req.host.clone(), e))
        }
        Err(RequestError::Http(e)) => Err(UpstreamError::Http(e.to_string())),
    }
}

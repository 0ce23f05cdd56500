//! Inputs and outputs shared by the client engines and the driver.

use std::net::SocketAddr;

use crate::event::ClientEvent;

/// The engine an id belongs to. The composite hands every input to exactly the engine that
/// owns its id (issue 15); an engine never sees another's connections, requests or queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// Service discovery (SPEC SD1–SD9): SRV and CAS lookups, reachability connects.
    Discovery,
    /// Sign-in (SPEC AU1–AU5, CFG1–CFG3): UDS, TFTP, service profile.
    SignIn,
    /// The IM&P session (SPEC IMP1, HA1): SOAP and XMPP.
    Im,
    /// The softphone (SPEC CC1–CC5): SIP and media.
    Phone,
    /// The edge (SPEC MRA1): get_edge_config at Expressway-E and its token's renewal.
    Edge,
}

macro_rules! owned_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name {
            /// The engine that made it.
            pub owner: Owner,
            /// Its number among the owner's ids.
            pub n: u32,
        }

        impl $name {
            /// Id `n` of `owner`.
            pub const fn new(owner: Owner, n: u32) -> Self {
                Self { owner, n }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}#{}", self.owner, self.n)
            }
        }
    };
}

owned_id!(
    /// Identifies one HTTP request.
    HttpId
);

/// An HTTP request for the driver to make (one connection per request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReq {
    /// Request id.
    pub id: HttpId,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Host name: TLS server name and `Host` header.
    pub host: String,
    /// The name the server's certificate must carry when it is not `host` (SPEC MRA1: the
    /// edge's certificate names the domain).
    pub tls_name: Option<String>,
    /// HTTPS (certificate checked against `host`) or plain HTTP.
    pub tls: bool,
    /// `GET`, …
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    /// Basic credentials (RFC 7617), never written to the transcript.
    pub basic: Option<(String, String)>,
    /// Extra headers (`Content-Type`, `SOAPAction`).
    pub headers: Vec<(String, String)>,
    /// Request body (empty for GET). Its content is never written to the transcript.
    pub body: Vec<u8>,
}

impl HttpReq {
    /// The request's headers as sent: `Host` (with the port unless 443), `User-Agent`,
    /// `Accept`, Basic credentials (RFC 7617) when set, then the extra headers.
    pub fn header_list(&self) -> Vec<(String, String)> {
        let host = if self.addr.port() == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.addr.port())
        };
        let mut h = vec![
            ("host".to_owned(), host),
            ("user-agent".to_owned(), "uclab-client".to_owned()),
            ("accept".to_owned(), "application/xml".to_owned()),
        ];
        if let Some((u, p)) = &self.basic {
            let token = uclab_proto::base64::encode(format!("{u}:{p}").as_bytes());
            h.push(("authorization".to_owned(), format!("Basic {token}")));
        }
        h.extend(self.headers.iter().cloned());
        h
    }

    /// What the transcript shows: method, path, whether credentials went (never what they
    /// are) and the SOAP operation.
    pub fn summary(&self) -> String {
        let op = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("soapaction"))
            .and_then(|(_, v)| v.rsplit('/').next())
            .map(|op| format!(" ({op})"))
            .unwrap_or_default();
        let basic = if self.basic.is_some() { " (Basic)" } else { "" };
        // Through the edge (SPEC MRA1) the path names the internal host in base64: show it.
        let (path, query) = self.path.split_once('?').unwrap_or((&self.path, ""));
        if self.tls_name.is_some()
            && let Ok(uclab_proto::edge::EdgePath::Proxy { target, rest }) =
                uclab_proto::edge::parse_path(path)
        {
            let q = if query.is_empty() { String::new() } else { format!("?{query}") };
            let (scheme, host, port) = (target.scheme.as_str(), target.host, target.port);
            return format!(
                "HTTP {} {rest}{q}{basic}{op} via edge to {scheme}://{host}:{port}",
                self.method
            );
        }
        format!("HTTP {} {}{basic}{op}", self.method, self.path)
    }
}

/// Why the network did not carry a connection, a stream or a request: the driver's report,
/// grouped by where it failed. Each renders to the words the transcript has always shown.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The peer refused (TCP RST to a SYN, ICMP port unreachable).
    #[error("refused")]
    Refused,
    /// The peer reset an established connection.
    #[error("reset")]
    Reset,
    /// Live mode's egress check: the address is outside the lab (issue 13).
    #[error("outside the lab")]
    OutsideLab,
    /// Another socket error, by kind (`timedout`, …).
    #[error("{}", format!("{_0:?}").to_lowercase())]
    Io(std::io::ErrorKind),
    /// No answer within the engine's deadline for the step.
    #[error("timeout")]
    Timeout,
    /// The server closed the stream.
    #[error("closed by the server")]
    Closed,
    /// The peer does not read: more is waiting for it than a stream may queue.
    #[error("peer does not read (backlog full)")]
    Backlog,
    /// TLS was asked of a datagram flow.
    #[error("TLS over UDP")]
    TlsOverUdp,
    /// The TCP connection of an HTTP request failed (the system's words).
    #[error("connect: {0}")]
    Connect(String),
    /// Our TLS settings could not be built (the lab PKI, the roots).
    #[error("{0}")]
    TlsSetup(String),
    /// The TLS handshake failed: the certificate, the name, the protocol.
    #[error("TLS: {0}")]
    Tls(String),
    /// The HTTP exchange failed (the peer's HTTP was not HTTP, the connection dropped).
    #[error("{0}")]
    Http(String),
    /// The response body could not be read (too long, cut short).
    #[error("body: {0}")]
    Body(String),
}

impl NetError {
    /// A socket error as the transcript names it.
    pub fn from_io(e: &std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Self::Refused,
            std::io::ErrorKind::ConnectionReset => Self::Reset,
            // Only the live egress check refuses a connect this way (issue 13).
            std::io::ErrorKind::PermissionDenied => Self::OutsideLab,
            k => Self::Io(k),
        }
    }
}

/// An HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResp {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in order (bounded by the driver).
    pub headers: Vec<(String, String)>,
    /// Body (bounded by the driver).
    pub body: Vec<u8>,
}

impl HttpResp {
    /// A response with no headers.
    pub fn new(status: u16, body: Vec<u8>) -> Self {
        Self { status, headers: Vec::new(), body }
    }

    /// Adds a header (builder style, for tests and scripted peers).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

owned_id!(
    /// Identifies one connection attempt or stream.
    ConnId
);

owned_id!(
    /// Identifies one DNS query: the engine that asked it and a number unique in the client, so
    /// an answer reaches exactly the engine whose query it is.
    QueryToken
);

/// What the engine wants done or reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send a UDP datagram from the resolver socket.
    Transmit {
        /// Destination.
        to: SocketAddr,
        /// Payload.
        bytes: Vec<u8>,
        /// What the transcript shows.
        summary: String,
    },
    /// Connect to `to`, write `framed`, and read one answer framed the same way (a two-byte
    /// length first: DNS over TCP, RFC 1035 §4.2.2); answer with [`Input::TcpAnswer`].
    TcpExchange {
        /// Query token.
        token: QueryToken,
        /// Server.
        to: SocketAddr,
        /// The query, framed.
        framed: Vec<u8>,
        /// What the transcript shows.
        summary: String,
    },
    /// Open a TCP connection; answer with [`Input::Connected`] or [`Input::ConnectFailed`].
    Connect {
        /// Attempt id.
        id: ConnId,
        /// Address.
        to: SocketAddr,
    },
    /// Abandon or close a connection.
    Close {
        /// Attempt id.
        id: ConnId,
    },
    /// Make one HTTP(S) request; answer with [`Input::Http`].
    Http(HttpReq),
    /// Open a long-lived TCP stream (XMPP); answer with [`Input::StreamOpened`] or
    /// [`Input::StreamFailed`], then [`Input::StreamData`] as bytes arrive.
    StreamOpen {
        /// Stream id.
        id: ConnId,
        /// Address.
        to: SocketAddr,
        /// DSCP of what we send (SPEC MEDIA2: call signalling and IM&P traffic 24).
        dscp: u8,
    },
    /// A datagram "stream" to `to` (SIP over UDP): a UDP socket of its own on an ephemeral
    /// port; each `StreamSend` is one datagram, each datagram from `to` one `StreamData`.
    /// Reported as `StreamOpened` at once (nothing to connect), `StreamFailed` if it cannot
    /// be bound.
    DatagramOpen {
        /// Stream id.
        id: ConnId,
        /// Address.
        to: SocketAddr,
        /// DSCP of what we send (SPEC MEDIA2: call signalling 24).
        dscp: u8,
    },
    /// Write to a stream.
    StreamSend {
        /// Stream id.
        id: ConnId,
        /// Bytes.
        bytes: Vec<u8>,
        /// What the transcript shows (never secrets).
        summary: String,
    },
    /// Start TLS on a stream, checking the certificate against `host`; answer with
    /// [`Input::StreamTls`] or [`Input::StreamFailed`].
    StreamTls {
        /// Stream id.
        id: ConnId,
        /// Name the certificate must carry.
        host: String,
    },
    /// Close a stream.
    StreamClose {
        /// Stream id.
        id: ConnId,
    },
    /// Bind a media (RTP) socket on `port` of our address, sending with `dscp` (SPEC MEDIA2:
    /// audio 46, video 34); datagrams that arrive come back as [`Input::Media`].
    MediaOpen {
        /// Local port.
        port: u16,
        /// DSCP of what is sent from it.
        dscp: u8,
    },
    /// Send one media datagram from the socket on `port`.
    MediaSend {
        /// Local port.
        port: u16,
        /// Destination.
        to: SocketAddr,
        /// The RTP packet.
        bytes: Vec<u8>,
    },
    /// Close the media socket on `port`.
    MediaClose {
        /// Local port.
        port: u16,
    },
    /// Something to report.
    Event(ClientEvent),
}

/// The next output of an engine's queue. A drained queue gives its room back, so idle clients
/// hold none (issue 19: CAP1's bursts of 75 presences in one read grew every client's queues;
/// the room of 16 outputs each queue then kept was still 1.5 KiB a queue, and a client has
/// several); what comes out, and in what order, is the same.
pub(crate) fn next_out<T>(q: &mut std::collections::VecDeque<T>) -> Option<T> {
    let o = q.pop_front();
    if q.is_empty() && q.capacity() > 0 {
        *q = std::collections::VecDeque::new();
    }
    o
}

/// Inputs from the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A datagram on the resolver socket.
    Datagram {
        /// Sender.
        from: SocketAddr,
        /// Payload.
        bytes: Vec<u8>,
    },
    /// ICMP port unreachable from `from`.
    Unreachable {
        /// The server that refused.
        from: SocketAddr,
    },
    /// The answer of a TCP exchange (`None`: it failed).
    TcpAnswer {
        /// Query token.
        token: QueryToken,
        /// The answer, unframed.
        bytes: Option<Vec<u8>>,
    },
    /// A connection attempt succeeded.
    Connected {
        /// Attempt id.
        id: ConnId,
    },
    /// A connection attempt failed.
    ConnectFailed {
        /// Attempt id.
        id: ConnId,
        /// Why.
        reason: NetError,
    },
    /// A stream is open.
    StreamOpened {
        /// Stream id.
        id: ConnId,
    },
    /// A stream could not be opened, or broke, or TLS failed on it.
    StreamFailed {
        /// Stream id.
        id: ConnId,
        /// Why.
        reason: NetError,
    },
    /// Bytes arrived on a stream.
    StreamData {
        /// Stream id.
        id: ConnId,
        /// Bytes.
        bytes: Vec<u8>,
    },
    /// TLS is up on a stream.
    StreamTls {
        /// Stream id.
        id: ConnId,
    },
    /// A datagram on a media socket.
    Media {
        /// Local port.
        port: u16,
        /// Sender.
        from: SocketAddr,
        /// Payload.
        bytes: Vec<u8>,
    },
    /// The outcome of an HTTP request.
    Http {
        /// Request id.
        id: HttpId,
        /// Status and body, or why there is none (connect, TLS, protocol).
        result: Result<HttpResp, NetError>,
    },
}

//! HTTP(S) for the mocks: hyper 1.x over `Net` streams, rustls in between.
//!
//! Handlers are plain functions from a whole [`Request`] to a [`Response`], so every mock's
//! logic is tested without I/O. The server never adds a `Date` header (it would read the real
//! clock), bounds headers (hyper answers 431) and bodies (413), and cuts off slow clients
//! (issue 13): the TLS handshake, the request head and the request body each have
//! [`SLOW_CLIENT`] to arrive (a body that does not is answered 408 and the connection
//! closed), and an idle keep-alive connection is closed after [`SLOW_CLIENT`] (hyper's head
//! timer runs from the moment it waits for a request). hyper's timer runs on tokio time, which
//! is virtual in simulation. A listener holds at most [`limits::HTTP_CONNECTIONS`], and
//! [`limits::PER_PEER`] from one address.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use uclab_net::{BoxFuture, Net};

use crate::limits::{self, ConnLimit};
use uclab_proto::base64::decode as base64_decode;
pub use uclab_proto::base64::encode as base64_encode;
pub use uclab_proto::text::percent_decode;

/// Time a client has for the TLS handshake, for the request head, for the request body, and
/// to send its next request on a keep-alive connection.
pub const SLOW_CLIENT: Duration = Duration::from_secs(10);
/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;
/// hyper's read buffer, which bounds the request head (the minimum hyper allows).
const MAX_HEAD: usize = 8192;

/// A request as handlers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Method (`GET`, …).
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// What a Basic `Authorization` header holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BasicAuth {
    /// No `Authorization` header.
    Missing,
    /// A header that is not valid Basic credentials.
    Malformed,
    /// User and password.
    Credentials(String, String),
}

impl Request {
    /// A GET request for `target` (path and query), for tests.
    pub fn get(target: &str) -> Self {
        let (path, query) = split_target(target);
        Self { method: "GET".into(), path, query, headers: Vec::new(), body: Vec::new() }
    }

    /// Adds a header (builder style, for tests).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A query parameter, its name compared case-insensitively.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The Basic credentials (RFC 7617).
    pub fn basic_auth(&self) -> BasicAuth {
        let Some(h) = self.header("authorization") else { return BasicAuth::Missing };
        let Some((scheme, b64)) = h.trim().split_once(' ') else { return BasicAuth::Malformed };
        if !scheme.eq_ignore_ascii_case("basic") {
            return BasicAuth::Malformed;
        }
        let Some(raw) = base64_decode(b64.trim()) else { return BasicAuth::Malformed };
        let Ok(text) = String::from_utf8(raw) else { return BasicAuth::Malformed };
        match text.split_once(':') {
            Some((u, p)) => BasicAuth::Credentials(u.to_owned(), p.to_owned()),
            None => BasicAuth::Malformed,
        }
    }
}

/// A response from a handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers besides Content-Length.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// An XML document (`Content-Type: application/xml`, as UDS sends).
    pub fn xml(status: u16, doc: String) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/xml".into())],
            body: doc.into_bytes(),
        }
    }

    /// Plain text.
    pub fn text(status: u16, text: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: text.as_bytes().to_vec(),
        }
    }

    /// 401 with a Basic challenge for `realm` (RFC 7617).
    pub fn unauthorized(realm: &str) -> Self {
        let mut r = Self::text(401, "Unauthorized");
        r.headers.push(("www-authenticate".into(), format!("Basic realm=\"{realm}\"")));
        r
    }
}

/// A mock's request handler.
pub type Handler = Rc<dyn Fn(&Request) -> Response>;

/// A request target split into its percent-decoded path and query parameters.
pub(crate) fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (percent_decode(path), query)
}

fn reason(status: u16) -> &'static str {
    hyper::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("")
}

async fn to_request(req: hyper::Request<Incoming>) -> Result<Request, Response> {
    let method = req.method().as_str().to_owned();
    let target =
        req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let collect = Limited::new(req.into_body(), MAX_BODY).collect();
    let body = match uclab_net::time::timeout(SLOW_CLIENT, collect).await {
        Ok(Ok(b)) => b.to_bytes().to_vec(),
        Ok(Err(_)) => return Err(Response::text(413, "Payload Too Large")),
        Err(_) => {
            // A body slower than the deadline: answered, and the connection goes (hyper
            // cannot read the next request past an unread body).
            let mut r = Response::text(408, "Request Timeout");
            r.headers.push(("connection".into(), "close".into()));
            return Err(r);
        }
    };
    let (path, query) = split_target(&target);
    Ok(Request { method, path, query, headers, body })
}

fn to_hyper(r: Response) -> hyper::Response<Full<Bytes>> {
    let mut b = hyper::Response::builder().status(r.status);
    for (k, v) in &r.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Full::new(Bytes::from(r.body))).unwrap_or_else(|_| {
        let mut resp =
            hyper::Response::new(Full::new(Bytes::from_static(b"Internal Server Error")));
        *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        resp
    })
}

/// A handler that may wait before it answers (Expressway-E, which carries requests over the
/// traversal zone). It gets the request and the peer's address.
pub type AsyncHandler = Rc<dyn Fn(Request, SocketAddr) -> BoxFuture<'static, Response>>;

/// Serves `handler` on `port`: HTTPS with a lab certificate for `tls_names`, or plain HTTP
/// when `tls_names` is `None`.
pub async fn serve<N: Net + Clone + 'static>(
    net: N,
    port: u16,
    tls_names: Option<Vec<String>>,
    handler: Handler,
) -> io::Result<()> {
    let handler: AsyncHandler = Rc::new(move |req: Request, _| {
        let resp = handler(&req);
        Box::pin(std::future::ready(resp))
    });
    serve_async(net, port, tls_names, handler, None).await
}

/// [`serve`] with a handler that may wait; `server` names the `Server` header every response
/// carries, the server's own ones (413, 408) included.
pub async fn serve_async<N: Net + Clone + 'static>(
    net: N,
    port: u16,
    tls_names: Option<Vec<String>>,
    handler: AsyncHandler,
    server: Option<&'static str>,
) -> io::Result<()> {
    let listener = net.listen(port).await?;
    let tls = match &tls_names {
        Some(names) => Some(net.tls().server_config(names).map_err(io::Error::other)?),
        None => None,
    };
    let limit = ConnLimit::new(limits::HTTP_CONNECTIONS, limits::PER_PEER);
    loop {
        let tcp = limits::next_conn(&listener).await;
        let Some(slot) = limit.admit(tcp.peer_addr().ip()) else {
            // Over a cap: closed before a byte is read.
            continue;
        };
        let (net, handler, tls) = (net.clone(), handler.clone(), tls.clone());
        tokio::task::spawn_local(async move {
            let _slot = slot;
            let peer = tcp.peer_addr();
            let local = tcp.local_addr();
            match tls {
                Some(cfg) => {
                    let Ok(Ok(s)) =
                        uclab_net::time::timeout(SLOW_CLIENT, net.tls().accept(cfg, tcp)).await
                    else {
                        return;
                    };
                    serve_conn(net, TokioIo::new(s), handler, (local, peer), server).await;
                }
                None => serve_conn(net, TokioIo::new(tcp), handler, (local, peer), server).await,
            }
        });
    }
}

async fn serve_conn<N, I>(
    net: N,
    io: I,
    handler: AsyncHandler,
    (local, peer): (SocketAddr, SocketAddr),
    server: Option<&'static str>,
) where
    N: Net + Clone + 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let (handler, net) = (handler.clone(), net.clone());
        async move {
            let line = format!("{} {}", req.method(), req.uri().path());
            let mut resp = match to_request(req).await {
                Ok(r) => handler(r, peer).await,
                Err(resp) => resp,
            };
            if let Some(name) = server {
                resp.headers.retain(|(k, _)| !k.eq_ignore_ascii_case("server"));
                resp.headers.push(("server".into(), name.into()));
            }
            let ctype = resp
                .headers
                .iter()
                .find(|(k, _)| k == "content-type")
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            let text = format!(
                "HTTP {} {} ({line}; {} bytes {ctype})",
                resp.status,
                reason(resp.status),
                resp.body.len()
            );
            net.transcript().message(net.now(), local, peer, "tcp", text.trim_end());
            Ok::<_, Infallible>(to_hyper(resp))
        }
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.auto_date_header(false)
        .timer(uclab_net::time::HyperTimer)
        .header_read_timeout(SLOW_CLIENT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true);
    let _ = b.serve_connection(io, service).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_path_are_decoded() {
        let r = Request::get("/cas/FederatedSSO?org=example.com&Name=a%20b+c&bad=%zz");
        assert_eq!(r.path, "/cas/FederatedSSO");
        assert_eq!(r.param("ORG"), Some("example.com"));
        assert_eq!(r.param("name"), Some("a b c"));
        assert_eq!(r.param("bad"), Some("%zz"));
    }

    #[test]
    fn basic_auth_round_trips_and_rejects_junk() {
        let h = format!("Basic {}", base64_encode(b"alice:lab"));
        let r = Request::get("/").with_header("Authorization", &h);
        assert_eq!(r.basic_auth(), BasicAuth::Credentials("alice".into(), "lab".into()));
        for junk in ["Basic", "Basic !!!!", "Bearer abc", "Basic bm9jb2xvbg=="] {
            assert_eq!(
                Request::get("/").with_header("authorization", junk).basic_auth(),
                BasicAuth::Malformed,
                "{junk}"
            );
        }
        assert_eq!(Request::get("/").basic_auth(), BasicAuth::Missing);
    }
}

/// How a deliberately broken node spoils its XML answers (hostile-peer scenarios: the client
/// must fail clearly, never panic or hang).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenXml {
    /// The document stops halfway.
    Truncated,
    /// A well-formed document with the wrong root element.
    WrongRoot,
    /// A "billion laughs" entity expansion attack in a DTD.
    EntityBomb,
}

impl BrokenXml {
    /// Names in scenario files.
    pub const NAMES: &'static [&'static str] = &["truncated", "wrong-root", "entity-bomb"];

    /// From its scenario name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "truncated" => Some(Self::Truncated),
            "wrong-root" => Some(Self::WrongRoot),
            "entity-bomb" => Some(Self::EntityBomb),
            _ => None,
        }
    }

    /// The spoilt version of `doc`.
    pub fn apply(self, doc: &[u8]) -> Vec<u8> {
        match self {
            Self::Truncated => doc[..doc.len() / 2].to_vec(),
            Self::WrongRoot => {
                b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><html><body>Service Unavailable</body></html>"
                    .to_vec()
            }
            Self::EntityBomb => {
                let mut d = String::from("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
                for i in 1..10 {
                    let prev = if i == 1 { "lol".to_owned() } else { format!("lol{}", i - 1) };
                    d.push_str(&format!("<!ENTITY lol{i} \"{}\">", format!("&{prev};").repeat(10)));
                }
                d.push_str("]><lolz>&lol9;</lolz>");
                d.into_bytes()
            }
        }
    }
}

/// `h`, with every successful XML answer spoilt by `how`.
pub fn spoil(h: Handler, how: BrokenXml) -> Handler {
    Rc::new(move |req| {
        let mut r = h(req);
        let xml = r.headers.iter().any(|(k, v)| k == "content-type" && v.contains("xml"));
        if r.status == 200 && xml {
            r.body = how.apply(&r.body);
        }
        r
    })
}

//! What Expressway-C does with one request E carried over the traversal zone (SPEC MRA1,
//! MRA2): get_edge_config (internal SRV lookups, the user's credentials checked against
//! their CUCM, the edge configuration and an `X-Auth` token), and proxied requests
//! (authorised by the token or Basic, checked against the HTTP allow list, forwarded inside).
//!
//! Authorisation of a proxied request: Basic credentials, which C checks against the user's
//! CUCM as get_edge_config does and then passes through (so CUCM's lockout keeps counting);
//! without them, a valid, unexpired `X-Auth` cookie for the domain, with which C sends the
//! credentials the token was issued for (over HTTPS only). C answers within
//! [`C_DEADLINE`], under E's own deadline for the zone, so that its 502 or 504 reaches the
//! client. The pure parts ([`edge_config`], [`authorise`], [`forward_headers`]) are tested
//! without I/O.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use uclab_net::Net;
use uclab_proto::edge::{
    EdgeConfig, EdgePath, EdgeServer, ProxyTarget, REALM, Scheme, Service, ServiceAnswer,
    SrvServer, parse_path,
};

use super::allow::Verdict;
use super::c::{Ctx, EdgePorts};
use super::tokens::{Grant, cookie_token, set_cookie, token_text};
use super::upstream::{self, Outbound, UpstreamError};
use crate::http::{BasicAuth, Request, Response, base64_encode};
use crate::resolve::{self, Lookup};

/// The `error` of a service C found no record for.
pub const NAME_ERROR: &str = "NameError";
/// SIP over TLS on C (the `sipRequest` route names it).
const SIP_TLS: u16 = 5061;
/// TURN on E (SPEC PORTS).
const TURN: u16 = 3478;
/// UDS on the home cluster.
const UDS: u16 = 8443;
/// The longest C works on one request: under E's [`super::REQUEST_DEADLINE`].
pub const C_DEADLINE: Duration = Duration::from_secs(9);

/// What C found inside for one get_edge_config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// `_cisco-uds._tcp.<d>` targets (`None`: no record).
    pub uds: Option<Vec<SrvServer>>,
    /// `_cuplogin._tcp.<d>` targets.
    pub cuplogin: Option<Vec<SrvServer>>,
    /// `_cisco-phone-tftp._tcp.<d>` targets.
    pub tftp: Option<Vec<SrvServer>>,
}

fn service(name: &str, found: &Option<Vec<SrvServer>>) -> Service {
    Service {
        name: name.to_owned(),
        answer: match found {
            Some(s) => ServiceAnswer::Servers(s.clone()),
            None => ServiceAnswer::Error(NAME_ERROR.to_owned()),
        },
    }
}

/// The edge configuration (WIRE.md): the services found inside, the E node that asked as
/// the SIP, XMPP, HTTP and TURN edge, the SIP route through C, and the user's home cluster as
/// their UDS server (`None`: the `_cisco-uds` case without one, or the empty-`userUdsServer`
/// fault).
pub fn edge_config(
    found: &Found,
    home: Option<&str>,
    (edge, ports): (&str, EdgePorts),
    c_ip: IpAddr,
) -> EdgeConfig {
    let at = |port| vec![EdgeServer { address: edge.to_owned(), port }];
    let mut services =
        vec![service("_cisco-uds", &found.uds), service("_cuplogin", &found.cuplogin)];
    let tftp: Vec<String> = match (&found.tftp, home) {
        (Some(t), _) => t.iter().map(|s| s.address.clone()).collect(),
        (None, Some(h)) => vec![h.to_owned()],
        (None, None) => Vec::new(),
    };
    if !tftp.is_empty() {
        services
            .push(Service { name: "tftpServer".into(), answer: ServiceAnswer::Addresses(tftp) });
    }
    EdgeConfig {
        services,
        sip_edge: at(ports.sip),
        sip_route: Some(format!("<sip:{c_ip}:{SIP_TLS};transport=tls;zone-id=3;directed;lr>")),
        xmpp_edge: at(ports.xmpp),
        http_edge: at(uclab_proto::edge::EDGE_PORT),
        turn_edge: at(TURN),
        user_uds: home
            .map(|h| vec![EdgeServer { address: h.to_owned(), port: UDS }])
            .unwrap_or_default(),
    }
}

/// How a proxied request is authorised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorised {
    /// Basic credentials: checked, then passed through as they are.
    Basic,
    /// A valid token: the credentials it was issued for.
    Token(String, String),
    /// Neither: 401.
    No,
}

/// The authorisation of a proxied request for `domain` at `now`. Credentials the request
/// carries are checked unless they are the ones its cookie's token was issued for (a token
/// never vouches for other credentials); malformed ones are refused.
pub fn authorise(
    tokens: &super::tokens::Tokens,
    req: &Request,
    domain: &str,
    now: Duration,
) -> Authorised {
    let cookie = req
        .headers
        .iter()
        .filter(|(k, _)| k == "cookie")
        .find_map(|(_, v)| cookie_token(v))
        .and_then(|t| tokens.get(now, t, domain));
    let token = cookie.map(|g| Authorised::Token(g.user.0.clone(), g.user.1.clone()));
    match (req.basic_auth(), token) {
        // The very credentials the token was issued for: already checked.
        (BasicAuth::Credentials(u, p), Some(Authorised::Token(tu, tp))) if u == tu && p == tp => {
            Authorised::Token(tu, tp)
        }
        (BasicAuth::Credentials(..), _) => Authorised::Basic,
        (BasicAuth::Malformed, _) => Authorised::No,
        (BasicAuth::Missing, t) => t.unwrap_or(Authorised::No),
    }
}

/// The headers C sends inside: hop-by-hop ones, `Host` and the `X-Auth` cookie dropped (other
/// cookies kept), `Authorization` as `auth` says, and only over HTTPS: credentials never go
/// inside in clear text (TFTP-over-HTTP on 6970 gets none).
pub fn forward_headers(req: &Request, auth: &Authorised, scheme: Scheme) -> Vec<(String, String)> {
    let tls = scheme == Scheme::Https;
    let mut out = Vec::new();
    for (k, v) in &req.headers {
        match k.as_str() {
            "host"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-connection"
            | "content-length" => {}
            "authorization" if *auth != Authorised::Basic || !tls => {}
            "cookie" => {
                let rest: Vec<&str> = v
                    .split(';')
                    .map(str::trim)
                    .filter(|c| {
                        !c.is_empty() && c.split('=').next() != Some(uclab_proto::edge::AUTH_COOKIE)
                    })
                    .collect();
                if !rest.is_empty() {
                    out.push((k.clone(), rest.join("; ")));
                }
            }
            _ => out.push((k.clone(), v.clone())),
        }
    }
    if let Authorised::Token(u, p) = auth
        && tls
    {
        let token = base64_encode(format!("{u}:{p}").as_bytes());
        out.push(("authorization".into(), format!("Basic {token}")));
    }
    out
}

/// An answer of C's own with a reason (shown in the RESP line of the transcript).
pub struct Answer {
    /// The response for the client.
    pub resp: Response,
    /// What the transcript line adds (a refusal's reason, what the request was).
    pub note: String,
}

fn answer(resp: Response, note: impl Into<String>) -> Answer {
    Answer { resp, note: note.into() }
}

fn bad_gateway(status: u16, e: &UpstreamError) -> Answer {
    answer(Response::text(status, &e.to_string()), e.to_string())
}

/// Handles one request from the E node `edge` (its FQDN), within [`C_DEADLINE`].
pub async fn handle<N: Net>(ctx: &Ctx<N>, edge: &str, req: Request) -> Answer {
    match uclab_net::time::timeout(C_DEADLINE, handle_inner(ctx, edge, req)).await {
        Ok(a) => a,
        Err(_) => {
            let why = format!("no answer inside within {} s", C_DEADLINE.as_secs());
            answer(Response::text(504, &why), why)
        }
    }
}

async fn handle_inner<N: Net>(ctx: &Ctx<N>, edge: &str, req: Request) -> Answer {
    match parse_path(&req.path) {
        Err(e) => answer(Response::text(404, &format!("not an edge path: {e}")), e.to_string()),
        Ok(EdgePath::GetEdgeConfig { domain }) if !ctx.serves(&domain) => {
            answer(Response::text(404, "domain not served"), format!("{domain} not served"))
        }
        Ok(EdgePath::Proxy { target, .. }) if !ctx.serves(&target.domain) => answer(
            Response::text(404, "domain not served"),
            format!("{} not served", target.domain),
        ),
        Ok(EdgePath::GetEdgeConfig { domain }) => get_edge_config(ctx, edge, &domain, &req).await,
        Ok(EdgePath::Proxy { target, rest }) => proxy(ctx, &target, &rest, req).await,
    }
}

async fn lookup<N: Net>(ctx: &Ctx<N>, name: &str) -> Result<Option<Vec<SrvServer>>, String> {
    match resolve::srv(&ctx.net, ctx.cfg.dns, name).await {
        Lookup::Found(v) => Ok(Some(v)),
        Lookup::NoRecord => Ok(None),
        Lookup::Failed(e) => Err(format!("{name}: {e}")),
    }
}

/// The internal SRV records of `domain` (SPEC MRA1).
/// C looks up `domain`'s servers inside and remembers the CUCM and IM&P nodes (a C that has
/// restarted since the last get_edge_config knows none; SIP through the edge needs them).
pub(crate) async fn learn<N: Net>(ctx: &Ctx<N>, domain: &str) {
    let Ok(found) = discover(ctx, domain).await else { return };
    let mut st = ctx.state.borrow_mut();
    for s in found.uds.iter().chain(found.tftp.iter()).flatten() {
        st.allow.add_cucm(&s.address);
    }
    for s in found.cuplogin.iter().flatten() {
        st.allow.add_imp(&s.address);
    }
}

async fn discover<N: Net>(ctx: &Ctx<N>, domain: &str) -> Result<Found, Answer> {
    let names = [
        format!("_cisco-uds._tcp.{domain}"),
        format!("_cuplogin._tcp.{domain}"),
        format!("_cisco-phone-tftp._tcp.{domain}"),
    ];
    let (uds, cup, tftp) =
        tokio::join!(lookup(ctx, &names[0]), lookup(ctx, &names[1]), lookup(ctx, &names[2]));
    match (uds, cup, tftp) {
        (Ok(uds), Ok(cuplogin), Ok(tftp)) => Ok(Found { uds, cuplogin, tftp }),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            Err(answer(Response::text(502, &format!("internal DNS: {e}")), e))
        }
    }
}

/// AU1 through the edge: the user's home cluster from the first UDS server, then their
/// devices there with their credentials. The home cluster, or the answer for the edge.
async fn check_user<N: Net>(
    ctx: &Ctx<N>,
    first: &SrvServer,
    user: &str,
    password: &str,
) -> Result<String, Answer> {
    let q =
        format!("/cucm-uds/clusterUser?username={}", super::traversal::percent_encode(user, false));
    let (host, port) = (first.address.as_str(), first.port);
    let r = send(ctx, Scheme::Https, host, port, "GET", &q, Vec::new(), Vec::new())
        .await
        .map_err(|e| bad_gateway(502, &e))?;
    let home = match uclab_proto::uds::parse_cluster_user(&r.body) {
        Ok(Some(h)) if r.status == 200 => h,
        Ok(None) if r.status == 200 => {
            return Err(answer(Response::unauthorized(REALM), "user unknown"));
        }
        _ => {
            let why = format!("clusterUser answered {}", r.status);
            return Err(answer(Response::text(502, &why), why));
        }
    };
    let auth = format!("Basic {}", base64_encode(format!("{user}:{password}").as_bytes()));
    let path = format!("/cucm-uds/user/{}/devices", super::traversal::percent_encode(user, false));
    let headers = vec![("authorization".into(), auth)];
    let r = send(ctx, Scheme::Https, &home, UDS, "GET", &path, headers, Vec::new())
        .await
        .map_err(|e| bad_gateway(502, &e))?;
    match r.status {
        200 => Ok(home),
        401 | 403 => Err(answer(Response::unauthorized(REALM), "credentials refused by UDS")),
        s => {
            let why = format!("devices answered {s}");
            Err(answer(Response::text(502, &why), why))
        }
    }
}

/// SPEC MRA1: C looks up the internal SRV records, checks the user against their CUCM and
/// answers the edge configuration with a token. Only an accepted user learns anything of the
/// inside, and only then does C write its automatic allow rules.
async fn get_edge_config<N: Net>(ctx: &Ctx<N>, edge: &str, domain: &str, req: &Request) -> Answer {
    let BasicAuth::Credentials(user, password) = req.basic_auth() else {
        return answer(Response::unauthorized(REALM), "no credentials");
    };
    let found = match discover(ctx, domain).await {
        Ok(f) => f,
        Err(a) => return a,
    };
    let c_ip = ctx.net.local_ip();
    let ports = ctx.cfg.edges.iter().find(|e| e.fqdn == edge).map(|e| e.ports).unwrap_or_default();
    let Some(first) = found.uds.as_ref().and_then(|u| u.first()).cloned() else {
        // No _cisco-uds inside (MRA1): C cannot check the user, so the answer says only that,
        // and nothing is authorised.
        let none = Found { uds: None, cuplogin: None, tftp: None };
        let mut cfg = edge_config(&none, None, (edge, ports), c_ip);
        cfg.services.retain(|s| s.name == "_cisco-uds");
        return answer(edge_xml(cfg.render()), "get_edge_config, no _cisco-uds");
    };
    let home = match check_user(ctx, &first, &user, &password).await {
        Ok(h) => h,
        Err(a) => return a,
    };
    // The home cluster is not added to the allow list: as in the product, a cluster C did
    // not discover (one found only through ILS) needs an administrator's rule.
    {
        let mut st = ctx.state.borrow_mut();
        for s in found.uds.iter().chain(found.tftp.iter()).flatten() {
            st.allow.add_cucm(&s.address);
        }
        for s in found.cuplogin.iter().flatten() {
            st.allow.add_imp(&s.address);
        }
    }
    let home_uds = (!ctx.cfg.user_uds_empty).then_some(home.as_str());
    let cfg = edge_config(&found, home_uds, (edge, ports), c_ip);
    let now = ctx.net.now();
    let token = token_text(ctx.net.rng().next_u64(), ctx.net.rng().next_u64());
    let grant = Grant {
        domain: domain.to_owned(),
        user: (user, password),
        expires: now + ctx.cfg.token_lifetime,
    };
    ctx.state.borrow_mut().tokens.insert(now, token.clone(), grant);
    let mut resp = edge_xml(cfg.render());
    resp.headers.push(("set-cookie".into(), set_cookie(&token, ctx.cfg.token_lifetime)));
    answer(resp, "get_edge_config")
}

/// Basic credentials on a proxied request: checked as get_edge_config checks them.
async fn check_basic<N: Net>(ctx: &Ctx<N>, domain: &str, req: &Request) -> Result<(), Answer> {
    let BasicAuth::Credentials(user, password) = req.basic_auth() else {
        return Err(answer(Response::unauthorized(REALM), "malformed credentials"));
    };
    let found = discover(ctx, domain).await?;
    let Some(first) = found.uds.as_ref().and_then(|u| u.first()).cloned() else {
        return Err(answer(Response::unauthorized(REALM), "no _cisco-uds to check credentials"));
    };
    check_user(ctx, &first, &user, &password).await.map(|_| ())
}

fn edge_xml(doc: String) -> Response {
    Response {
        status: 200,
        headers: vec![("content-type".into(), "text/xml".into())],
        body: doc.into_bytes(),
    }
}

/// Resolves `host` in the internal DNS and sends one request there.
#[allow(clippy::too_many_arguments)]
async fn send<N: Net>(
    ctx: &Ctx<N>,
    scheme: Scheme,
    host: &str,
    port: u16,
    method: &str,
    target: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Result<Response, UpstreamError> {
    let ip = match resolve::a(&ctx.net, ctx.cfg.dns, host).await {
        Lookup::Found(ip) => ip,
        Lookup::NoRecord => return Err(UpstreamError::NoAddress(host.to_owned())),
        Lookup::Failed(e) => return Err(UpstreamError::Resolve(host.to_owned(), e)),
    };
    let out = Outbound {
        scheme,
        host: host.to_owned(),
        addr: SocketAddr::new(IpAddr::V4(ip), port),
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body,
    };
    upstream::exchange(&ctx.net, &ctx.upstream, &out).await
}

/// SPEC MRA1/MRA2: a request for an internal host, authorised and checked against the allow
/// list, forwarded, its answer relayed.
async fn proxy<N: Net>(ctx: &Ctx<N>, t: &ProxyTarget, rest: &str, req: Request) -> Answer {
    let auth = authorise(&ctx.state.borrow().tokens, &req, &t.domain, ctx.net.now());
    match auth {
        Authorised::No => {
            return answer(Response::unauthorized(REALM), "no valid token or credentials");
        }
        Authorised::Basic => {
            if let Err(a) = check_basic(ctx, &t.domain, &req).await {
                return a;
            }
        }
        Authorised::Token(..) => {}
    }
    let what = format!("{} {}://{}:{}{rest}", req.method, t.scheme.as_str(), t.host, t.port);
    match ctx.state.borrow().allow.check(&req.method, t.scheme, &t.host, t.port, rest) {
        Verdict::Allowed => {}
        Verdict::NotListed => {
            return answer(
                Response::text(403, "not on the HTTP allow list"),
                format!("allow list refuses {what}"),
            );
        }
        Verdict::FileTransfer => {
            return answer(
                Response::text(403, "file transfer is not available over MRA"),
                format!("allow list refuses {what}: file transfer (MRA2)"),
            );
        }
    }
    let target = super::traversal::target(rest, &req.query);
    let headers = forward_headers(&req, &auth, t.scheme);
    let r =
        match send(ctx, t.scheme, &t.host, t.port, &req.method, &target, headers, req.body).await {
            Ok(r) => r,
            Err(e @ UpstreamError::Timeout) => return bad_gateway(504, &e),
            Err(e) => return bad_gateway(502, &e),
        };
    if r.status == 401 {
        // The edge has one realm for the client (WIRE.md).
        return answer(Response::unauthorized(REALM), format!("{what}: 401 inside"));
    }
    let keep = ["content-type", "retry-after", "allow"];
    let headers = r.headers.into_iter().filter(|(k, _)| keep.contains(&k.as_str())).collect();
    answer(Response { status: r.status, headers, body: r.body }, what)
}

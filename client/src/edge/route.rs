//! How an engine's HTTP reaches an internal host: straight there, or through the edge (SPEC
//! MRA1). Sign-in and the IM session's SOAP build every request through a
//! [`Transport`], so the same logic runs on both paths.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use uclab_proto::edge::{AUTH_COOKIE, EdgeServer, ProxyTarget, Scheme};

use crate::io::HttpReq;

/// The edge a client signed in through, and the token that authorises its requests. Shared
/// by the edge engine (which renews the token) and the engines whose requests ride on it.
#[derive(Clone, Debug)]
pub struct Route(Rc<RefCell<RouteState>>);

#[derive(Debug)]
struct RouteState {
    domain: String,
    edge_host: String,
    edge_addr: SocketAddr,
    token: Option<String>,
}

impl Route {
    /// A route through Expressway-E `edge_host` at `edge_addr` for `domain`.
    pub fn new(domain: &str, edge_host: &str, edge_addr: SocketAddr) -> Self {
        Self(Rc::new(RefCell::new(RouteState {
            domain: domain.to_ascii_lowercase(),
            edge_host: edge_host.to_owned(),
            edge_addr,
            token: None,
        })))
    }

    /// The token from the edge's `X-Auth` cookie (a renewal replaces it for every user).
    pub fn set_token(&self, token: Option<String>) {
        self.0.borrow_mut().token = token;
    }

    /// The edge's host name.
    pub fn edge_host(&self) -> String {
        self.0.borrow().edge_host.clone()
    }

    /// The domain.
    pub fn domain(&self) -> String {
        self.0.borrow().domain.clone()
    }

    /// The edge's address.
    pub fn edge_addr(&self) -> SocketAddr {
        self.0.borrow().edge_addr
    }

    /// Where a service of the edge configuration (`xmppEdgeServer`, `sipEdgeServer`) is:
    /// on the Expressway-E the client signed in through, at the service's port. `None` for
    /// another host (one edge configuration naming another E is not modelled).
    pub fn service_addr(&self, server: &EdgeServer) -> Option<SocketAddr> {
        let s = self.0.borrow();
        server
            .address
            .trim_end_matches('.')
            .eq_ignore_ascii_case(&s.edge_host)
            .then(|| SocketAddr::new(s.edge_addr.ip(), server.port))
    }
}

/// The path an engine's HTTP takes.
#[derive(Clone, Debug, Default)]
pub enum Transport {
    /// Straight to the internal host (inside).
    #[default]
    Direct,
    /// Through Expressway-E (outside, SPEC MRA1).
    Edge(Route),
}

impl Transport {
    /// Whether requests go through the edge.
    pub fn is_edge(&self) -> bool {
        matches!(self, Self::Edge(_))
    }

    /// The request as sent: as it is straight; through the edge to Expressway-E over HTTPS
    /// (its certificate checked against the domain, MRA1) at
    /// `/<base64url("<domain>/<scheme>/<host>/<port>")><path>`, with the edge's `X-Auth`
    /// cookie when there is one. Only the internal host's name and port count then.
    pub fn apply(&self, mut req: HttpReq) -> HttpReq {
        let Self::Edge(route) = self else { return req };
        let s = route.0.borrow();
        let target = ProxyTarget {
            domain: s.domain.clone(),
            scheme: if req.tls { Scheme::Https } else { Scheme::Http },
            host: req.host.to_ascii_lowercase(),
            port: req.addr.port(),
        };
        if let Some(t) = &s.token {
            req.headers.push(("cookie".into(), format!("{AUTH_COOKIE}={t}")));
        }
        HttpReq {
            addr: s.edge_addr,
            host: s.edge_host.clone(),
            tls_name: Some(s.domain.clone()),
            tls: true,
            path: target.path(&req.path),
            ..req
        }
    }
}

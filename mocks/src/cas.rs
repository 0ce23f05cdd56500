//! The Webex CAS lookup (SPEC SD4): `GET /cas/FederatedSSO?org=<domain>` over HTTPS says
//! whether a domain is provisioned in Webex Messenger (errorcode 7) or not (errorcode 1).

use std::rc::Rc;

use uclab_proto::uds::cas_login_response;

use crate::http::{Handler, Request, Response};

/// The CAS node's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CasConfig {
    /// Domains provisioned as Webex (compared case-insensitively).
    pub webex_domains: Vec<String>,
}

/// Answers one request.
pub fn handle(cfg: &CasConfig, req: &Request) -> Response {
    if req.path != "/cas/FederatedSSO" {
        return Response::text(404, "Not Found");
    }
    if req.method != "GET" {
        let mut r = Response::text(405, "Method Not Allowed");
        r.headers.push(("allow".into(), "GET".into()));
        return r;
    }
    let Some(org) = req.param("org").filter(|o| !o.is_empty()) else {
        return Response::text(400, "missing org");
    };
    let webex = cfg.webex_domains.iter().any(|d| d.eq_ignore_ascii_case(org));
    Response::xml(200, cas_login_response(webex))
}

/// The handler for [`crate::http::serve`].
pub fn handler(cfg: CasConfig) -> Handler {
    Rc::new(move |req| handle(&cfg, req))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CasConfig {
        CasConfig { webex_domains: vec!["webex.example".into()] }
    }

    #[test]
    fn sd4_webex_domain_gets_errorcode_7_others_1() {
        let r = handle(&cfg(), &Request::get("/cas/FederatedSSO?org=WEBEX.example"));
        assert_eq!(r.status, 200);
        assert!(String::from_utf8_lossy(&r.body).contains("<errorcode>7</errorcode>"));
        let r = handle(&cfg(), &Request::get("/cas/FederatedSSO?org=example.com"));
        assert!(String::from_utf8_lossy(&r.body).contains("<errorcode>1</errorcode>"));
    }

    #[test]
    fn bad_requests() {
        assert_eq!(handle(&cfg(), &Request::get("/cas/FederatedSSO")).status, 400);
        assert_eq!(handle(&cfg(), &Request::get("/nope")).status, 404);
        let mut post = Request::get("/cas/FederatedSSO?org=x");
        post.method = "POST".into();
        assert_eq!(handle(&cfg(), &post).status, 405);
    }
}

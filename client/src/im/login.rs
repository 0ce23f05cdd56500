//! EPAS SOAP (SPEC AU4, HA1 `SOAPCONNECT_*`): login, `get-all-config`, the one-time password,
//! each at the first server, else the second.

use super::*;

impl ImSession {
    /// SOAP at server `soap_idx` (HA1: `SOAPCONNECT_P`, then `SOAPCONNECT_S`).
    pub(super) fn soap_connect(&mut self, now: Time) {
        let Some(host) = self.servers.get(self.ha1.soap_idx).cloned() else {
            if self.ha1.session_lost_everywhere() {
                // HA1: neither server kept the session: FAILOVER again, then a fresh login.
                let node = self.servers.first().cloned().unwrap_or_default();
                self.state(Ha1State::FAILOVER, &node);
                self.key = None;
                return self.soap_connect(now);
            }
            return self.give_up(ImError::NoSoapServer);
        };
        let name = self.ha1.soap_state();
        self.state(name, &host);
        if self.transport.is_edge() {
            // SPEC MRA1: no internal DNS from outside; the edge's proxy finds the host (only
            // its name and port go in the request).
            return self.soap_at(now, SocketAddr::new(IpAddr::from([0, 0, 0, 0]), SOAP_PORT));
        }
        let token = self.resolve(now, &host);
        self.st = St::ResolveSoap { token };
        self.pump(now);
    }

    /// The SOAP server is at `addr`: the session's key again after a failover, else a login.
    pub(super) fn soap_at(&mut self, now: Time, addr: SocketAddr) {
        self.soap_addr = Some(addr);
        if self.ha1.soap_mode == SoapMode::Session && self.key.is_some() {
            self.keyed(now, "get-all-config");
        } else {
            let body = soap::login_request(&self.user, &self.password, CLIENT_VERSION);
            self.soap(now, "login", body);
        }
    }

    pub(super) fn soap_next_server(&mut self, now: Time) {
        self.ha1.next_soap();
        if self.ha1.soap_mode == SoapMode::Login {
            self.key = None;
        }
        self.soap_connect(now);
    }

    pub(super) fn soap(&mut self, now: Time, op: &'static str, body: String) {
        let Some(addr) = self.soap_addr else { return };
        let id = self.resolver.http_id();
        let host = self.servers[self.ha1.soap_idx].clone();
        let req = HttpReq {
            id,
            addr,
            host,
            tls_name: None,
            tls: true,
            method: "POST",
            path: soap::PATH.to_owned(),
            basic: None,
            headers: vec![
                ("content-type".into(), "application/soap+xml; charset=utf-8".into()),
                ("soapaction".into(), soap::action(op)),
            ],
            body: body.into_bytes(),
        };
        self.out.push_back(Output::Http(self.transport.apply(req)));
        self.deadline = Some(now + STEP_TIMEOUT);
        self.st = St::Soap { op, id };
    }

    pub(super) fn keyed(&mut self, now: Time, op: &'static str) {
        let key = self.key.clone().unwrap_or_default();
        self.soap(now, op, soap::keyed_request(op, &key));
    }

    pub(super) fn on_http(&mut self, now: Time, id: HttpId, result: Result<HttpResp, NetError>) {
        let St::Soap { op, id: want } = self.st else { return };
        if id != want {
            return;
        }
        // The server cannot be talked to: the next one (HA1 SOAPCONNECT_S).
        let Ok(resp) = result else { return self.soap_next_server(now) };
        if resp.status >= 500 {
            return self.soap_next_server(now);
        }
        // The edge refused the request (SPEC MRA1): off its allow list, or the token and
        // credentials not good there. Not SOAP, and not a server that is down.
        if self.transport.is_edge() && matches!(resp.status, 401 | 403 | 404) {
            return self.fail(ImError::EdgeRefused { op, status: resp.status });
        }
        let parsed = match soap::parse_response(&resp.body) {
            Ok(p) => p,
            Err(error) => return self.fail(ImError::SoapMalformed { op, error }),
        };
        match (op, parsed) {
            (_, soap::Response::Fault { subcode, .. }) if subcode == "AuthenticationFailed" => {
                self.fail(ImError::WrongCredentials)
            }
            // The session did not survive (HA1): try the next server, then a fresh login.
            (_, soap::Response::Fault { subcode, .. })
                if subcode == "InvalidSession" && self.ha1.soap_mode == SoapMode::Session =>
            {
                self.soap_next_server(now)
            }
            (_, soap::Response::Fault { subcode, reason }) => {
                self.fail(ImError::SoapFault { op, subcode, reason })
            }
            ("login", soap::Response::Success(key)) => {
                self.key = Some(key);
                self.keyed(now, "get-all-config");
            }
            ("get-all-config", soap::Response::Config(params)) => {
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .filter(|v| !v.is_empty())
                };
                let Some(domain) = get(soap::P_DOMAIN) else {
                    return self.fail(ImError::NoPresenceDomain);
                };
                self.domain = domain;
                let secs = |k: &str| get(k).and_then(|v| v.parse::<u32>().ok());
                if let (Some(lo), Some(hi)) =
                    (secs(soap::P_RELOGIN_LOWER), secs(soap::P_RELOGIN_UPPER))
                {
                    self.ha1.relogin = (lo, hi);
                }
                self.nodes =
                    [get(soap::P_PRIMARY), get(soap::P_SECONDARY)].into_iter().flatten().collect();
                self.keyed(now, "get-onetime-password");
            }
            ("get-onetime-password", soap::Response::Success(otp)) => {
                self.otp = Some(otp);
                self.xmpp_connect(now);
            }
            (op, other) => self.fail(ImError::Unexpected { op, answer: format!("{other:?}") }),
        }
    }
}

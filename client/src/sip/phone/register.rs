//! Registration (RFC 3261 §10; SPEC CC1, CC2; WIRE.md "SIP to CUCM"): the legs to each node,
//! REGISTER with its digest answer, the refresh, the keepalive REGISTER to the backup member
//! and the CRLF or OPTIONS pings.

use super::*;

impl Phone {
    pub(super) fn close_leg(&mut self, role: Role) {
        while let Some(i) = self.legs.iter().position(|l| l.role == role) {
            let l = self.legs.remove(i);
            if let Some(id) = l.stream {
                self.out.push_back(Output::StreamClose { id });
            }
        }
    }

    /// Opens a leg to target `t` for `role` and queues `first` (built when the leg exists).
    pub(super) fn open_leg(&mut self, now: Time, role: Role, t: usize) -> usize {
        self.close_leg(role);
        let call_id = format!(
            "{}-{}@{}",
            hex(&mut self.rng, 8),
            hex(&mut self.rng, 8),
            self.cfg.device.to_ascii_lowercase()
        );
        let tag = hex(&mut self.rng, 16);
        let mut leg = Leg {
            role,
            target: t,
            token: None,
            addr: None,
            stream: None,
            open: false,
            framer: StreamFramer::new(),
            call_id,
            tag,
            cseq: 100,
            txn: None,
            queued: None,
            challenged: false,
            deadline: Some(now + STEP_TIMEOUT),
        };
        let target = self.targets[t].clone();
        if let Some(e) = &self.edge {
            // SPEC MRA1: every leg to Expressway-E; the Request-URI names the node.
            leg.addr = Some(e.addr);
            self.legs.push(leg);
            let i = self.legs.len() - 1;
            self.connect(i);
            return i;
        }
        match target.host.parse::<IpAddr>() {
            Ok(ip) => leg.addr = Some(SocketAddr::new(ip, target.port)),
            Err(_) => {
                let id = self.next_dns;
                self.next_dns = self.next_dns.wrapping_add(1);
                leg.token = Some(self.resolver.query(now, &target.host, QType::A, id));
            }
        }
        self.legs.push(leg);
        let i = self.legs.len() - 1;
        if self.legs[i].addr.is_some() {
            self.connect(i);
        }
        i
    }

    pub(super) fn connect(&mut self, i: usize) {
        let id = self.resolver.conn_id();
        let udp = self.udp();
        let leg = &mut self.legs[i];
        leg.stream = Some(id);
        if let Some(to) = leg.addr {
            let dscp = DSCP_SIGNALLING;
            self.out.push_back(if udp {
                Output::DatagramOpen { id, to, dscp }
            } else {
                Output::StreamOpen { id, to, dscp }
            });
        }
    }

    /// A REGISTER on leg `i`: `expires`, and the keepalive flag for a backup.
    pub(super) fn register_request(&mut self, i: usize, expires: u32, keepalive: bool) -> Message {
        let t = self.targets[self.legs[i].target].clone();
        let transport = self.transport();
        let mut contact = self.contact();
        if keepalive {
            contact.push_str(";expires=0;cisco-keep-alive");
        }
        let local = self.local_host();
        let branch = format!("z9hG4bK{}", hex(&mut self.rng, 16));
        let leg = &mut self.legs[i];
        leg.cseq += 1;
        let line = &self.cfg.line;
        let aor = format!("<sip:{line}@{}>", t.host);
        let route = self.edge.as_ref().and_then(|e| e.route.clone());
        let m = Message::request("REGISTER", &format!("sip:{}", t.host));
        // WIRE.md: through the edge, the edge configuration's sipRequest route goes first.
        let m = match route {
            Some(r) => m.with("Route", r),
            None => m,
        };
        m.with("Via", format!("SIP/2.0/{transport} {local};branch={branch}{}", rport(transport)))
            .with("From", format!("{aor};tag={}", leg.tag))
            .with("To", aor)
            .with("Call-ID", leg.call_id.clone())
            .with("Max-Forwards", "70")
            .with("CSeq", format!("{} REGISTER", leg.cseq))
            .with("User-Agent", USER_AGENT)
            .with("Contact", contact)
            .with("Expires", expires.to_string())
    }

    /// An OPTIONS to the active registrar (the keepalive ping over UDP); no transaction: any
    /// answer from the node counts.
    pub(super) fn options_ping(&mut self) -> Option<Message> {
        let i = self.legs.iter().position(|l| l.role == Role::Active && l.open)?;
        let host = self.targets[self.legs[i].target].host.clone();
        let (local, line) = (self.local_host(), self.cfg.line.clone());
        let branch = format!("z9hG4bK{}", hex(&mut self.rng, 16));
        let leg = &mut self.legs[i];
        leg.cseq += 1;
        Some(
            Message::request("OPTIONS", &format!("sip:{host}"))
                .with("Via", format!("SIP/2.0/UDP {local};branch={branch};rport"))
                .with("From", format!("<sip:{line}@{host}>;tag={}", leg.tag))
                .with("To", format!("<sip:{host}>"))
                .with("Call-ID", leg.call_id.clone())
                .with("Max-Forwards", "70")
                .with("CSeq", format!("{} OPTIONS", leg.cseq))
                .with("User-Agent", USER_AGENT),
        )
    }

    /// Sends `m` on leg `i` as a new transaction (queued until the stream is open).
    pub(super) fn send(&mut self, now: Time, i: usize, m: Message) {
        let udp = self.udp();
        let leg = &mut self.legs[i];
        if !leg.open {
            leg.queued = Some(m);
            return;
        }
        let mut t = ClientTxn::new(now, m, !udp, self.timers);
        while let Some(o) = t.poll_output() {
            if let (TxnOutput::Send(m), Some(id)) = (o, leg.stream) {
                self.out.push_back(Output::StreamSend {
                    id,
                    bytes: m.to_bytes(),
                    summary: summary(&m),
                });
            }
        }
        leg.txn = Some(t);
        leg.deadline = None;
    }

    /// Starts registering at target `t` (CC2 order; CC5 for the SRST router).
    pub(super) fn register_at(&mut self, now: Time, t: usize) {
        self.clear_timers();
        if t >= self.targets.len() {
            self.close_leg(Role::Active);
            self.close_leg(Role::Keepalive);
            let reason = if self.edge.is_some() {
                "no CUCM node answered through the edge (SRST is not reachable from outside)"
            } else {
                "no CUCM node or SRST router answered"
            };
            self.event(ClientEvent::PhoneState {
                state: "unregistered".into(),
                node: String::new(),
                reason: reason.into(),
            });
            self.state = State::Waiting(now + RETRY);
            return;
        }
        self.state = State::Registering(t);
        let node = self.node(t);
        self.event(ClientEvent::PhoneState {
            state: "registering".into(),
            node,
            reason: String::new(),
        });
        let i = self.open_leg(now, Role::Active, t);
        let m = self.register_request(i, self.cfg.register_expires, false);
        self.send(now, i, m);
    }

    /// Moves a leg's transaction outputs on.
    pub(super) fn drain_txn(&mut self, now: Time, i: usize) {
        let mut responses = Vec::new();
        let mut timed_out = false;
        if let Some(leg) = self.legs.get_mut(i)
            && let Some(t) = leg.txn.as_mut()
        {
            while let Some(o) = t.poll_output() {
                match o {
                    TxnOutput::Send(m) => {
                        if let Some(id) = leg.stream {
                            self.out.push_back(Output::StreamSend {
                                id,
                                bytes: m.to_bytes(),
                                summary: summary(&m),
                            });
                        }
                    }
                    TxnOutput::Response(m) => responses.push(m),
                    TxnOutput::Timeout => timed_out = true,
                    _ => {}
                }
            }
        }
        for r in responses {
            self.on_response(now, i, r);
        }
        if timed_out {
            self.leg_failed(now, i, PhoneError::NoAnswerToRegister);
        }
    }

    pub(super) fn on_response(&mut self, now: Time, i: usize, r: Message) {
        let Some(code) = r.code() else { return };
        if code < 200 {
            return;
        }
        let Some(leg) = self.legs.get(i) else { return };
        let (role, t) = (leg.role, leg.target);
        let node = self.node(t);
        if code == 401 || code == 407 {
            if leg.challenged {
                return self.leg_failed(now, i, PhoneError::WrongCredentials);
            }
            let Some(req) = leg.txn.as_ref().map(|t| t.request().clone()) else { return };
            let header = if code == 401 { "WWW-Authenticate" } else { "Proxy-Authenticate" };
            let Some(auth) = r.get(header).and_then(|c| self.digest(&req, c)) else {
                return self.leg_failed(now, i, PhoneError::UnsupportedChallenge);
            };
            let mut again = req;
            let leg = &mut self.legs[i];
            leg.challenged = true;
            leg.cseq += 1;
            again.set("CSeq", format!("{} REGISTER", leg.cseq));
            let branch = format!("z9hG4bK{}", hex(&mut self.rng, 16));
            let via = again.get("Via").unwrap_or("").to_owned();
            let via = match via.split_once(";branch=") {
                Some((a, _)) => format!("{a};branch={branch}"),
                None => via,
            };
            again.set("Via", via);
            again.push(if code == 401 { "Authorization" } else { "Proxy-Authorization" }, auth);
            return self.send(now, i, again);
        }
        if code >= 300 {
            return self.leg_failed(
                now,
                i,
                PhoneError::Refused { code, reason: sip::reason(code) },
            );
        }
        self.legs[i].challenged = false;
        match role {
            Role::Active => {
                self.failing_over = false;
                if let Some(ip) = r.top_via().and_then(|v| {
                    v.params.iter().find(|(k, _)| k == "received").and_then(|(_, v)| v.clone())
                }) {
                    self.local_ip = ip;
                }
                let granted = r
                    .get("Expires")
                    .and_then(|e| e.parse::<u32>().ok())
                    .or_else(|| {
                        r.name_addr("Contact")
                            .and_then(|c| c.param("expires").flatten().and_then(|e| e.parse().ok()))
                    })
                    .unwrap_or(self.cfg.register_expires);
                let until = now + Duration::from_secs(u64::from(granted));
                let first = !matches!(self.state, State::Registered(x, _) if x == t);
                self.state = State::Registered(t, until);
                let refresh = u64::from(granted.saturating_sub(self.cfg.register_delta).max(1));
                self.refresh_at = Some(now + Duration::from_secs(refresh));
                self.ping_at = Some(now + PING_INTERVAL);
                if !first {
                    self.event(ClientEvent::PhoneState {
                        state: "refreshed".into(),
                        node: node.clone(),
                        reason: String::new(),
                    });
                }
                if first {
                    let srst = self.targets[t].srst;
                    self.event(ClientEvent::PhoneRegistered {
                        node: node.clone(),
                        expires: granted,
                        srst,
                    });
                    // Closing the leave leg may move this leg's index: its stream stays.
                    let stream = self.legs[i].stream;
                    self.close_leg(Role::Leave);
                    // What the calls said during the failover goes out now.
                    if let Some(id) = stream {
                        for m in std::mem::take(&mut self.held) {
                            self.out.push_back(Output::StreamSend {
                                id,
                                bytes: m.to_bytes(),
                                summary: summary(&m),
                            });
                        }
                    }
                    // CC6: watches follow the phone to its new node.
                    let ctx = self.ctx();
                    self.watches.resubscribe(now, &ctx);
                    self.flush_calls();
                    if srst {
                        // CC5: watch for CUCM coming back.
                        self.monitor.start(now, self.cfg.keepalive);
                        self.keepalive_at = None;
                    } else {
                        // WIRE.md: keepalives to the backup member, if there is one.
                        let backup = (t + 1..self.targets.len()).find(|&b| !self.targets[b].srst);
                        self.keepalive_at = backup.map(|_| now);
                    }
                }
            }
            Role::Keepalive => {
                self.event(ClientEvent::PhoneState {
                    state: "keepalive".into(),
                    node,
                    reason: String::new(),
                });
            }
            Role::Probe => {
                // CC5: CUCM answers; after connectionMonitorDuration of that, go back.
                let monitor = Duration::from_secs(u64::from(self.cfg.connection_monitor));
                let verdict = self.monitor.answered(now, monitor);
                if matches!(verdict, Monitor::FirstAnswer | Monitor::Return { first: true }) {
                    self.event(ClientEvent::PhoneState {
                        state: "cucm-reachable".into(),
                        node,
                        reason: String::new(),
                    });
                }
                if let Monitor::Return { .. } = verdict {
                    self.return_to_cucm(now);
                }
            }
            Role::Leave => self.close_leg(Role::Leave),
        }
    }

    /// RFC 2617 digest credentials for `req` answering `challenge` (MD5, qop auth or none).
    pub(super) fn digest(&mut self, req: &Message, challenge: &str) -> Option<String> {
        let p = digest::params(challenge)?;
        if p.get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("MD5")) {
            return None;
        }
        let get = |k: &str| p.get(k).cloned().unwrap_or_default();
        let (realm, nonce) = (get("realm"), get("nonce"));
        let qop = p.get("qop").is_some_and(|q| q.split(',').any(|q| q.trim() == "auth"));
        let sip::Start::Request { method, uri } = &req.start else { return None };
        let user = self.user.user.clone();
        let mut h = format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm=MD5"
        );
        let creds = (user.as_str(), realm.as_str(), self.user.password.as_str());
        let response = if qop {
            let cnonce = hex(&mut self.rng, 16);
            h.push_str(&format!(", qop=auth, nc=00000001, cnonce=\"{cnonce}\""));
            digest::response(creds, (method, uri), &nonce, Some(("00000001", &cnonce)))
        } else {
            digest::response(creds, (method, uri), &nonce, None)
        };
        h.push_str(&format!(", response=\"{response}\""));
        if let Some(o) = p.get("opaque") {
            h.push_str(&format!(", opaque=\"{o}\""));
        }
        Some(h)
    }

    /// The keepalive REGISTER of WIRE.md (`Expires: 0`, `;cisco-keep-alive`) to target `t` on
    /// the leg of `role` (opened if needed), unless the last one is still out.
    pub(super) fn heartbeat(&mut self, now: Time, role: Role, t: usize) {
        let i = match self.legs.iter().position(|l| l.role == role) {
            Some(i) => i,
            None => self.open_leg(now, role, t),
        };
        let idle = self.legs[i]
            .txn
            .as_ref()
            .is_none_or(|t| t.state() == sip::txn::ClientState::Terminated);
        if idle {
            let m = self.register_request(i, 0, true);
            self.send(now, i, m);
        }
    }
}

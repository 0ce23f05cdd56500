//! CUCM's SIP routing (RFC 3261 §8.2, §16; SPEC CC1–CC5): the checks every request passes
//! before anything else (501, 416, 420, loose routing), the dispatch to the registrar,
//! presence and the conference bridge, and the stateless, record-routing proxy between the
//! registered lines (§16.11); a response goes back where its next Via says.

use std::net::SocketAddr;
use std::time::Duration;

use uclab_proto::sip::{self, Message, Start, parse_name_addr, split_list};

use super::{ALLOW, Cluster, FlowId, SUPPORTED, Transport, fnv, uri_user};

impl Cluster {
    /// A request from `flow`: checked (§8.2), then answered here or routed on (§16).
    pub(super) fn request(&mut self, now: Duration, flow: FlowId, mut m: Message) {
        let Start::Request { method, uri } = m.start.clone() else { return };
        // §18.2.1: where the request really came from, for the response and for forwarding.
        let peer = self.flows[&flow].peer;
        let top = m.all("Via").next().map(str::to_owned);
        if let Some(top) = top {
            let first = split_list(&top).ok().and_then(|l| l.first().map(|s| (*s).to_owned()));
            if let Some(first) = first
                && top.starts_with(&first)
            {
                // RFC 3581: an empty rport gets the source port; received the source address.
                let rest = top[first.len()..].to_owned();
                let kept: Vec<&str> = first
                    .split(';')
                    .filter(|p| {
                        let k = p.split('=').next().unwrap_or("").trim().to_ascii_lowercase();
                        k != "received" && k != "rport"
                    })
                    .collect();
                let stamped = format!(
                    "{};received={};rport={}{rest}",
                    kept.join(";"),
                    peer.ip(),
                    peer.port()
                );
                if let Some(h) = m.headers.iter_mut().find(|h| h.name == "Via") {
                    h.value = stamped;
                }
            }
        }
        if !sip::KNOWN_METHODS.contains(&method.as_str()) {
            return self.refuse(flow, &m, 501, "");
        }
        if self.cfg.srst && method == "REFER" {
            return self.refuse(flow, &m, 501, "not available in SRST");
        }
        if !matches!(sip::scheme(&uri).as_deref(), Some("sip" | "sips" | "tel")) {
            return self.refuse(flow, &m, 416, "");
        }
        if !matches!(method.as_str(), "ACK" | "CANCEL") {
            let unsupported: Vec<String> = m
                .all("Require")
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|t| !t.is_empty() && !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
                .map(str::to_owned)
                .collect();
            if !unsupported.is_empty() {
                self.counters.refused += 1;
                let mut r = self.reply(&m, 420, "");
                r.push("Unsupported", unsupported.join(", "));
                return self.send(flow, &r);
            }
        }
        // Loose routing (§16.4): a Route naming this cluster is ours to pop.
        let routes: Vec<String> = m
            .all("Route")
            .flat_map(|v| split_list(v).unwrap_or_default())
            .map(str::to_owned)
            .collect();
        let ours = routes
            .first()
            .is_some_and(|r| parse_name_addr(r).is_ok_and(|na| self.is_ours(&na.uri)));
        if ours {
            m.remove("Route");
            for r in &routes[1..] {
                m.push("Route", r.clone());
            }
        }
        if !self.cfg.srst && self.for_bridge(&m) {
            return self.bridge(now, flow, &m);
        }
        let in_dialog = m.tag("To").is_some();
        if method == "BYE" {
            self.track_call(now, &m);
        }
        match method.as_str() {
            "REGISTER" => self.register(now, flow, &m),
            "SUBSCRIBE" => self.subscribe(now, flow, &m),
            // OPTIONS to a line goes to its device, like a call; to the node, answered here.
            "OPTIONS" if !in_dialog && uri_user(&uri).is_some_and(|u| self.line(&u).is_some()) => {
                match self.target(now, &m) {
                    Some(to) => self.forward(flow, to, m, false),
                    None => self.refuse(flow, &m, 480, "not registered"),
                }
            }
            "OPTIONS" if !in_dialog => {
                let mut r = self.reply(&m, 200, "");
                r.push("Allow", ALLOW);
                r.push("Accept", "application/sdp");
                r.push("Supported", SUPPORTED.join(","));
                self.send(flow, &r);
            }
            "INVITE" if !in_dialog => self.invite(now, flow, m),
            "CANCEL" => match self.target(now, &m) {
                Some(to) => self.forward(flow, to, m, false),
                None => self.refuse(flow, &m, 481, ""),
            },
            _ if ours || in_dialog => match self.dialog_target(now, &m) {
                Some(to) => self.forward(flow, to, m, false),
                // The ACK of a non-2xx final response goes where its INVITE went (§17.1.1.3).
                None if method == "ACK" => {
                    if let Some(to) = self.target(now, &m) {
                        self.forward(flow, to, m, false);
                    }
                }
                None => self.refuse(flow, &m, 481, ""),
            },
            "BYE" | "ACK" | "PRACK" | "UPDATE" | "INFO" | "NOTIFY" => {
                self.refuse(flow, &m, 481, "")
            }
            _ => self.refuse(flow, &m, 405, ""),
        }
    }

    /// Where a dialog-creating request (or its CANCEL) goes: the callee line's binding.
    fn target(&self, now: Duration, m: &Message) -> Option<(FlowId, String)> {
        let Start::Request { uri, .. } = &m.start else { return None };
        let user = uri_user(uri)?;
        let line = self.line(&user)?;
        let b = self.binding(&line.extension, now)?;
        self.flows.contains_key(&b.flow).then(|| (b.flow, b.contact.clone()))
    }

    /// Where an in-dialog request goes: the binding whose contact is the Request-URI (our own
    /// Route has been popped; the lab's dialogs have no other hop).
    fn dialog_target(&self, now: Duration, m: &Message) -> Option<(FlowId, String)> {
        let Start::Request { uri, .. } = &m.start else { return None };
        let by_contact = self
            .bindings
            .values()
            .flat_map(|d| d.values())
            .filter(|b| b.expires_at > now && self.flows.contains_key(&b.flow))
            .find(|b| same_uri(&b.contact, uri));
        by_contact.map(|b| (b.flow, uri.clone()))
    }

    fn invite(&mut self, now: Duration, flow: FlowId, m: Message) {
        // §8.2.2.1: the Request-URI first (an unknown number is 404 whatever the body).
        let Start::Request { uri, .. } = &m.start else { return };
        let user = uri_user(uri).unwrap_or_default();
        let Some(line) = self.line(&user).cloned() else {
            return self.refuse(flow, &m, 404, "");
        };
        if let Some(ct) = m.get("Content-Type") {
            let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if !m.body.is_empty() && ct != "application/sdp" && !ct.starts_with("multipart/") {
                return self.refuse(flow, &m, 415, "");
            }
        }
        if let Some(enc) = m.get("Content-Encoding")
            && !enc.trim().eq_ignore_ascii_case("identity")
        {
            return self.refuse(flow, &m, 415, "");
        }
        if let Some(acc) = m.get("Accept") {
            let ok = acc.split(',').any(|a| {
                let a = a.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                matches!(a.as_str(), "application/sdp" | "application/*" | "*/*")
            });
            if !ok {
                return self.refuse(flow, &m, 406, "");
            }
        }
        match self.target(now, &m) {
            Some(to) => {
                // Trying at once on a reliable hop (§8.2.6.1); over UDP a stateless proxy sends
                // none, so the caller's retransmissions (forwarded as they come) carry on.
                if self.flows[&flow].transport != Transport::Udp {
                    let t = m.response(100, "Trying", None);
                    self.send(flow, &t);
                }
                self.forward(flow, to, m, true);
            }
            None => {
                let why = format!("{} is not registered", line.extension);
                self.refuse(flow, &m, 480, &why);
            }
        }
    }

    /// Stateless forwarding (§16.11): Max-Forwards, our Via (branch derived from the
    /// incoming one, so retransmissions and CANCEL take the same), Record-Route when a dialog
    /// starts, the Request-URI retargeted to the contact.
    fn forward(
        &mut self,
        from: FlowId,
        (to, ruri): (FlowId, String),
        mut m: Message,
        record_route: bool,
    ) {
        let mf = m.get("Max-Forwards").and_then(|v| v.parse::<u32>().ok()).unwrap_or(70);
        if mf == 0 {
            return self.refuse(from, &m, 483, "");
        }
        m.set("Max-Forwards", (mf - 1).to_string());
        let (node, port, in_t) = self.node_of(from);
        let (_, _, out_t) = self.node_of(to);
        let method = m.method().unwrap_or("").to_owned();
        // ACK and CANCEL take the INVITE's branch (§17.2.3 matching at the next hop).
        let key_method =
            if matches!(method.as_str(), "ACK" | "CANCEL") { "INVITE" } else { &method };
        let top = m.top_via().and_then(|v| v.branch().map(str::to_owned)).unwrap_or_else(|| {
            format!("{}{}", m.call_id().unwrap_or(""), m.cseq().map(|c| c.0).unwrap_or(0))
        });
        let branch = format!("z9hG4bK{:016x}", fnv(&[&top, key_method, &node]));
        let via = format!("SIP/2.0/{} {node}:{port};branch={branch}", out_t.as_str());
        m.headers.insert(0, sip::Header { name: "Via".into(), value: via });
        if record_route {
            let t = match in_t {
                Transport::Udp => "udp",
                Transport::Tcp => "tcp",
                Transport::Tls => "tls",
            };
            let rr = format!("<sip:{node}:{port};transport={t};lr>");
            m.headers.insert(1, sip::Header { name: "Record-Route".into(), value: rr });
        }
        if let Start::Request { uri, .. } = &mut m.start {
            *uri = ruri;
        }
        self.counters.forwarded += 1;
        self.send(to, &m);
    }

    /// A response: our Via on top is popped and the rest goes where the next Via says
    /// (received/rport, else sent-by), on the stream from there if there is one (§18.2.2).
    pub(super) fn response(&mut self, mut m: Message) {
        let Some(top) = m.top_via() else { return self.counters.unreadable += 1 };
        let host = top.sent_by.split(':').next().unwrap_or("").to_ascii_lowercase();
        if !self.nodes.contains_key(&host) {
            return; // not ours: stray response, dropped (§18.2.2 "discard")
        }
        let vias = m.vias();
        if vias.len() == 1 {
            // An answer to a request of our own: a NOTIFY (SPEC CC6).
            if m.method() == Some("NOTIFY") {
                self.notify_answered(&m);
            }
            return;
        }
        self.track_call(self.clock, &m);
        m.remove("Via");
        for v in &vias[1..] {
            m.push("Via", v.clone());
        }
        // Keep Via first in the header order.
        let (via, rest): (Vec<_>, Vec<_>) = m.headers.drain(..).partition(|h| h.name == "Via");
        m.headers = via.into_iter().chain(rest).collect();
        let Some(next) = m.top_via() else { return };
        let param = |k: &str| next.params.iter().find(|(n, _)| n == k).and_then(|(_, v)| v.clone());
        let addr = param("received")
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
            .zip(param("rport").and_then(|p| p.parse::<u16>().ok()))
            .map(|(ip, p)| SocketAddr::new(ip, p));
        let Some(addr) = addr else { return };
        let stream = self
            .flows
            .iter()
            .find(|(_, f)| f.peer == addr && f.transport != Transport::Udp)
            .map(|(k, _)| *k);
        let flow = stream.or_else(|| {
            let node = host.clone();
            self.udp_flow(&node, addr)
        });
        if let Some(f) = flow {
            self.send(f, &m);
        }
    }
}

/// URIs compared the way the lab's contacts need: scheme, user and host:port, case-insensitive.
fn same_uri(a: &str, b: &str) -> bool {
    let key = |u: &str| u.split([';', '?']).next().unwrap_or("").to_ascii_lowercase();
    key(a) == key(b)
}

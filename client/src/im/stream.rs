//! XMPP stream negotiation (RFC 6120; SPEC HA1 `XMPPCONNECT_*`): the stream header,
//! STARTTLS, SASL `CISCO-VTG-TOKEN` or PLAIN, resource binding, and the stanzas of a
//! connected session handed on.

use super::*;

impl ImSession {
    /// XMPP at node `xmpp_idx` of the configuration (HA1: `XMPPCONNECT_P`/`_S`).
    pub(super) fn xmpp_connect(&mut self, now: Time) {
        let Some(host) = self.nodes.get(self.ha1.xmpp_idx).cloned() else {
            return self.fail(ImError::NoXmppNodeConfigured);
        };
        let name = self.ha1.xmpp_state();
        self.state(name, &host);
        if let Some(edge) = self.xmpp_edge {
            // SPEC MRA1: outside, every stream goes to Expressway-E, which carries it over
            // the traversal to Expressway-C and on to the user's home node.
            return self.xmpp_open(now, edge);
        }
        let token = self.resolve(now, &host);
        self.st = St::ResolveXmpp { token };
        self.pump(now);
    }

    /// Opens the XMPP stream's connection to `to`.
    pub(super) fn xmpp_open(&mut self, now: Time, to: SocketAddr) {
        let id = self.resolver.conn_id();
        self.stream = Some(id);
        self.framer.reset();
        self.out.push_back(Output::StreamOpen { id, to, dscp: DSCP_IMP });
        self.st = St::Opening;
        self.deadline = Some(now + STEP_TIMEOUT);
    }

    /// The XMPP node failed before sign-in: the secondary, with a new one-time password.
    pub(super) fn xmpp_next_node(&mut self, now: Time, why: &str) {
        if let Some(id) = self.stream.take() {
            self.out.push_back(Output::StreamClose { id });
        }
        self.framer.reset();
        if !self.ha1.next_xmpp(self.nodes.len()) {
            return self.give_up(ImError::NoXmppNode(why.to_owned()));
        }
        self.keyed(now, "get-onetime-password");
    }

    pub(super) fn header(&mut self) {
        let h = xmpp::stream_header(("to", &self.domain), None);
        self.send(h, format!("XMPP stream to {}", self.domain));
    }

    /// WIRE.md: IM&P may name its home and backup nodes in the SASL features
    /// (`<hostname xmlns='urn:xmpp:domain-based-name:0'>`); the transcript shows them. HA1
    /// still takes the nodes to fail over to from SOAP (they change during a failover).
    pub(super) fn node_hints(&mut self, features: &Element) {
        let hosts: Vec<String> = features
            .find("mechanisms")
            .into_iter()
            .flat_map(Element::elements)
            .filter(|x| x.name == "hostname" && x.get("xmlns") == Some(NS_HOSTNAME))
            .map(|x| x.text().trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect();
        if let Some((home, rest)) = hosts.split_first() {
            let e = ClientEvent::ImNodes {
                home: home.clone(),
                backup: rest.first().cloned().unwrap_or_default(),
            };
            self.out.push_back(Output::Event(e));
        }
    }

    pub(super) fn on_bytes(&mut self, now: Time, bytes: &[u8]) {
        let frames = match self.framer.feed(bytes) {
            Ok(f) => f,
            Err(e) => {
                let why = format!("XMPP: {e}");
                return self.xmpp_next_node(now, &why);
            }
        };
        for f in frames {
            match f {
                Frame::StreamOpen(_) => {}
                Frame::StreamClose => {
                    return self.xmpp_next_node(now, "stream closed by the server");
                }
                Frame::Stanza(s) => self.on_stanza(now, s),
            }
            if matches!(self.st, St::Done) {
                return;
            }
        }
    }

    pub(super) fn on_stanza(&mut self, now: Time, s: Element) {
        if s.name == "stream:error" {
            let cond = s.elements().next().map_or("undefined", |c| c.name.as_str()).to_owned();
            return self.xmpp_next_node(now, &format!("stream error {cond}"));
        }
        self.deadline = Some(now + STEP_TIMEOUT);
        match self.st {
            St::Features if s.name == "stream:features" => {
                if s.find("starttls").is_none() {
                    // TLS is required for sign-in; a server that does not offer it is refused.
                    return self.xmpp_next_node(now, "no STARTTLS offered");
                }
                self.send_el(
                    &Element::new("starttls").attr("xmlns", "urn:ietf:params:xml:ns:xmpp-tls"),
                );
                self.st = St::Proceed;
            }
            St::Proceed if s.name == "proceed" => {
                if let Some(id) = self.stream {
                    self.out.push_back(Output::StreamTls { id, host: self.domain.clone() });
                }
                self.st = St::Tls;
            }
            St::Mechanisms if s.name == "stream:features" && self.direct.is_some() => {
                self.node_hints(&s);
                let offered = offers(&s, "PLAIN");
                if !offered {
                    return self.fail(ImError::MechanismNotOffered("PLAIN"));
                }
                let b64 = xmpp::sasl_plain(&self.user, &self.password);
                // The password: the summary leaves it out (and it only ever goes inside TLS).
                let xml = format!(
                    "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">{b64}</auth>"
                );
                self.send(xml, "XMPP auth mechanism=PLAIN".into());
                self.st = St::Auth;
            }
            St::Mechanisms if s.name == "stream:features" => {
                self.node_hints(&s);
                let offered = offers(&s, "CISCO-VTG-TOKEN");
                if !offered {
                    return self.fail(ImError::MechanismNotOffered("CISCO-VTG-TOKEN"));
                }
                let otp = self.otp.take().unwrap_or_default();
                let b64 = xmpp::sasl_vtg_token(&self.user, &self.domain, &otp);
                // The token is a password: the summary leaves it out.
                let xml = format!(
                    "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"CISCO-VTG-TOKEN\">{b64}</auth>"
                );
                self.send(xml, "XMPP auth mechanism=CISCO-VTG-TOKEN".into());
                self.st = St::Auth;
            }
            St::Auth if s.name == "success" => {
                self.framer.reset();
                self.header();
                self.st = St::BindFeatures;
            }
            St::Auth if s.name == "failure" => {
                let cond = s.elements().next().map_or("failure", |c| c.name.as_str()).to_owned();
                self.fail(ImError::Refused(cond));
            }
            St::BindFeatures if s.name == "stream:features" => {
                let bind = Element::new("iq").attr("type", "set").attr("id", "bind1").child(
                    Element::new("bind")
                        .attr("xmlns", "urn:ietf:params:xml:ns:xmpp-bind")
                        .child(Element::new("resource").text_node(&self.resource)),
                );
                self.send_el(&bind);
                self.st = St::Bind;
            }
            St::Bind if s.name == "iq" && s.get("id") == Some("bind1") => {
                let jid = s.find("bind").and_then(|b| b.find("jid")).map(Element::text);
                match (s.get("type"), jid) {
                    (Some("result"), Some(jid)) => {
                        let node = self.nodes.get(self.ha1.xmpp_idx).cloned().unwrap_or_default();
                        self.state(Ha1State::XMPPCONNECTED, &node);
                        self.out.push_back(Output::Event(ClientEvent::ImSignedIn { jid }));
                        // RFC 6121 §2.2: the roster before initial presence.
                        let get = Element::new("iq")
                            .attr("type", "get")
                            .attr("id", "roster1")
                            .child(Element::new("query").attr("xmlns", NS_ROSTER));
                        self.send_el(&get);
                        self.send_el(&Element::new("presence"));
                        // After a failover: the rooms we were in, again (no history: what was
                        // missed is not replayed over what the user saw).
                        let rejoin: Vec<(String, String)> =
                            self.rooms.iter().map(|(k, r)| (k.clone(), r.nick.clone())).collect();
                        for (room, nick) in rejoin {
                            let x = Element::new("x")
                                .attr("xmlns", NS_MUC)
                                .child(Element::new("history").attr("maxstanzas", "0"));
                            let p = Element::new("presence")
                                .attr("to", &format!("{room}/{nick}"))
                                .child(x);
                            self.send_el(&p);
                        }
                        self.st = St::Connected;
                        self.deadline = None;
                    }
                    _ => self.fail(ImError::BindRefused),
                }
            }
            St::Connected => {
                self.deadline = None;
                self.connected_stanza(&s);
            }
            _ => {}
        }
    }
}

//! The inbound role: the receiving server (RFC 6120 §5-§6 as the receiving entity, XEP-0220
//! §2.2.1) and, on the same streams, the authoritative server answering `<db:verify/>`
//! (XEP-0220 §2.2.2).

use std::time::Duration;

use uclab_proto::dialback;
use uclab_proto::jid;
use uclab_proto::xmpp::{self, Element, NS_STANZAS};

use super::{
    Action, Auth, IDLE, MAX_KEY, MAX_SASL_TRIES, NS_DIALBACK_FEATURE, NS_SASL, NS_SERVER, NS_TLS,
    Stage, Stream, Timer, dialback_kind, domain_ok, jid_domain, names_match, ns,
};

impl Stream {
    pub(super) fn inbound_header(&mut self, now: Duration, h: &Element, base: &str) {
        self.headers += 1;
        self.id =
            if self.headers == 1 { base.to_owned() } else { format!("{base}-{}", self.headers) };
        let to = h.get("to").unwrap_or("").to_ascii_lowercase();
        let from = h.get("from").unwrap_or("").to_ascii_lowercase();
        let ours = self.serves(&to);
        let from_ok = from.is_empty() || domain_ok(&from);
        let me =
            if ours { to.clone() } else { self.cfg.domains.first().cloned().unwrap_or_default() };
        let you = if from_ok { from.as_str() } else { "" };
        // RFC 6120 §4.9.1.2: the header comes first, even before an error.
        let head = xmpp::server_stream_header(&me, you, Some(&self.id));
        self.out.push_back(Action::Send(head.into_bytes()));
        self.stream_open = true;
        if !ours {
            return self.stream_error("host-unknown", &format!("stream to {to:?}"));
        }
        if h.get("xmlns") != Some(NS_SERVER) {
            return self.stream_error("invalid-namespace", "not jabber:server");
        }
        if h.get("version") != Some("1.0") {
            // No features before 1.0 (RFC 6120 §4.7.5), so no TLS: refused.
            return self.stream_error("unsupported-version", "not version 1.0");
        }
        // A restarted stream may leave `from` out, but not name another domain.
        let other = !from.is_empty() && !self.peer.is_empty() && from != self.peer;
        if !from_ok || (self.headers > 1 && other) {
            return self.stream_error("invalid-from", &format!("stream from {from:?}"));
        }
        if self.headers > 1 && to != self.local {
            return self.stream_error("host-unknown", &format!("restarted stream to {to:?}"));
        }
        self.local = to;
        if !from.is_empty() {
            self.peer = from;
        }
        let mut features = Element::new("stream:features");
        if !self.tls {
            // RFC 6120 §5.3.1: TLS is mandatory-to-negotiate here.
            let tls =
                Element::new("starttls").attr("xmlns", NS_TLS).child(Element::new("required"));
            features = features.child(tls);
        } else if !self.sasl_done {
            if self.external_offered() {
                let m = Element::new("mechanism").text_node("EXTERNAL");
                features =
                    features.child(Element::new("mechanisms").attr("xmlns", NS_SASL).child(m));
            }
            if self.cfg.dialback {
                // XEP-0220 §2.4.2: we answer dialback errors rather than close the stream.
                let db = Element::new("dialback").attr("xmlns", NS_DIALBACK_FEATURE);
                features = features.child(db.child(Element::new("errors")));
            }
        }
        self.send_el(&features);
        if self.sasl_done {
            self.established(now, Auth::Sasl);
        } else {
            self.stage = Stage::Negotiating;
        }
    }

    /// An element from the peer on an inbound stream.
    pub(super) fn inbound_element(&mut self, now: Duration, e: Element) {
        // Responses (`type` set) never come on an inbound stream (XEP-0220 §2.2, §4.1:
        // unsolicited ones are the attack): only requests are taken.
        let db = dialback_kind(&e).filter(|_| e.get("type").is_none());
        if db == Some("verify") {
            return self.authoritative(&e);
        }
        match (&self.stage, db, e.name.as_str()) {
            (Stage::Negotiating, _, "starttls") if !self.tls && ns(&e) == Some(NS_TLS) => {
                self.send_el(&Element::new("proceed").attr("xmlns", NS_TLS));
                self.out.push_back(Action::StartTls { server: true, name: self.local.clone() });
                self.restart(Stage::Handshake);
            }
            (Stage::Negotiating, ..) if !self.tls => {
                // RFC 6120 §5.3.1: nothing but STARTTLS in the clear.
                self.stream_error("policy-violation", &format!("<{}> before TLS", e.name));
            }
            (Stage::Negotiating, _, "auth") if ns(&e) == Some(NS_SASL) => self.sasl_external(&e),
            (Stage::Negotiating | Stage::Established, Some("result"), _) => self.receiving(&e),
            (Stage::Established, ..) => self.inbound_stanza(now, e),
            (Stage::Verifying { .. }, Some("result"), _) => {
                // One domain pair per stream: a second one waits its turn elsewhere.
                self.dialback_error(&e, "result", "not-acceptable");
            }
            _ => {
                self.stream_error("not-authorized", &format!("<{}> before authentication", e.name))
            }
        }
    }

    /// SASL EXTERNAL (RFC 6120 §6.3.4, XEP-0178): the certificate must name the domain.
    fn sasl_external(&mut self, e: &Element) {
        let text = e.text();
        let text = text.trim();
        let authzid = match text {
            "" | "=" => Some(String::new()),
            b64 => uclab_proto::base64::decode(b64)
                .and_then(|b| String::from_utf8(b).ok())
                .map(|s| s.to_ascii_lowercase()),
        };
        let failure = match authzid {
            _ if e.get("mechanism") != Some("EXTERNAL") || !self.cfg.sasl_external => {
                Some("invalid-mechanism")
            }
            None => Some("malformed-request"),
            // RFC 6120 §6.4.6: an authzid other than the stream's `from` asks to act for
            // someone else; without a `from`, it names who the peer is.
            Some(a) if !a.is_empty() && !self.peer.is_empty() && a != self.peer => {
                Some("invalid-authzid")
            }
            Some(a) if !a.is_empty() && !domain_ok(&a) => Some("invalid-authzid"),
            Some(a)
                if !names_match(&self.cert_names, if a.is_empty() { &self.peer } else { &a }) =>
            {
                Some("not-authorized")
            }
            Some(a) => {
                if !a.is_empty() {
                    self.peer = a;
                }
                None
            }
        };
        let Some(condition) = failure else {
            self.send_el(&Element::new("success").attr("xmlns", NS_SASL));
            self.sasl_done = true;
            return self.restart(Stage::ExpectHeader);
        };
        let f = Element::new("failure").attr("xmlns", NS_SASL).child(Element::new(condition));
        self.send_el(&f);
        self.sasl_failures += 1;
        if self.sasl_failures >= MAX_SASL_TRIES {
            self.stream_error("not-authorized", "too many SASL failures");
        }
    }

    /// XEP-0220 §2.2.1: a `<db:result>` request on our inbound stream (we are the receiving
    /// server).
    fn receiving(&mut self, e: &Element) {
        let from = e.get("from").unwrap_or("").to_ascii_lowercase();
        let to = e.get("to").unwrap_or("").to_ascii_lowercase();
        if !self.cfg.dialback {
            // XEP-0220 §2.4 table: certificates are required here.
            return self.dialback_error(e, "result", "not-authorized");
        }
        if !self.serves(&to) {
            // XEP-0220 §2.2.1: not a stream error ("MUST NOT result in closing").
            return self.dialback_error(e, "result", "item-not-found");
        }
        if self.remote.as_deref() == Some(from.as_str()) {
            // The pair is verified already: say so again.
            let answer = Element::new("db:result").attr("from", &to).attr("to", &from);
            return self.send_el(&answer.attr("type", "valid"));
        }
        if self.stage == Stage::Established {
            // One domain pair per stream (no multiplexing, XEP-0220 §2.5).
            return self.dialback_error(e, "result", "not-acceptable");
        }
        if !domain_ok(&from) || (!self.peer.is_empty() && from != self.peer) {
            return self.stream_error("invalid-from", &format!("db:result from {from:?}"));
        }
        let key = e.text().trim().to_owned();
        self.peer = from.clone();
        if key.is_empty() || key.len() > MAX_KEY {
            self.stage = Stage::Verifying { domain: from.clone(), to };
            return self.handle_verified(Duration::ZERO, &from, false);
        }
        let id = self.id.clone();
        self.stage = Stage::Verifying { domain: from.clone(), to: to.clone() };
        self.out.push_back(Action::Verify { domain: from, receiving: to, id, key });
    }

    /// XEP-0220 §2.2.2: a `<db:verify>` for one of our domains (we are the authoritative
    /// server): the key is recomputed with our secret.
    fn authoritative(&mut self, e: &Element) {
        let r = e.get("from").unwrap_or("").to_ascii_lowercase();
        let o = e.get("to").unwrap_or("").to_ascii_lowercase();
        let id = e.get("id").unwrap_or("");
        if !self.serves(&o) {
            return self.dialback_error(e, "verify", "item-not-found");
        }
        let good = dialback::key(&self.cfg.secret, &r, &o, id);
        let valid = dialback::keys_equal(&good, e.text().trim());
        let kind = if valid { "valid" } else { "invalid" };
        let answer = Element::new("db:verify").attr("from", &o).attr("to", &r).attr("id", id);
        self.send_el(&answer.attr("type", kind));
    }

    /// A dialback error answer (XEP-0220 §2.4): the stream stays up.
    fn dialback_error(&mut self, e: &Element, kind: &str, condition: &str) {
        let mut answer = Element::new(&format!("db:{kind}"))
            .attr("from", e.get("to").unwrap_or(""))
            .attr("to", e.get("from").unwrap_or(""));
        if let Some(id) = e.get("id") {
            answer.set("id", id);
        }
        let error = Element::new("error")
            .attr("type", "cancel")
            .child(Element::new(condition).attr("xmlns", NS_STANZAS));
        self.send_el(&answer.attr("type", "error").child(error));
    }

    /// A stanza on an authenticated inbound stream (RFC 6120 §4.9.3, §8.1.1).
    fn inbound_stanza(&mut self, now: Duration, e: Element) {
        if !matches!(e.name.as_str(), "message" | "presence" | "iq") {
            return self.stream_error("unsupported-stanza-type", &format!("<{}>", e.name));
        }
        let (Some(from), Some(to)) = (e.get("from"), e.get("to")) else {
            return self.stream_error("improper-addressing", "no from or to");
        };
        let remote = self.remote.as_deref().unwrap_or("");
        if !jid::valid_jid(from) || jid_domain(from) != remote {
            return self.stream_error("invalid-from", &format!("stanza from {from:?}"));
        }
        if !jid::valid_jid(to) {
            return self.stream_error("improper-addressing", &format!("stanza to {to:?}"));
        }
        if !self.serves(&jid_domain(to)) {
            return self.stream_error("host-unknown", &format!("stanza to {to:?}"));
        }
        self.timers.set(Timer::Idle, now + IDLE);
        self.out.push_back(Action::Stanza(e));
    }
}

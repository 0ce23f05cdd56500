//! CUCM's registrar (RFC 3261 §10.3; SPEC CC1, CC2): digest authentication under the
//! directory's lockout, the line's device only, `Contact: *` from its owner, the granted
//! expiry and the backup node's keepalive.

use super::*;
use uclab_proto::sip::{self, digest, parse_name_addr, split_list};

impl Cluster {
    /// §10.3: the registrar.
    pub(super) fn register(&mut self, now: Duration, flow: FlowId, m: &Message) {
        let Some(to) = m.name_addr("To") else { return self.refuse(flow, m, 400, "bad To") };
        // RFC 4475 §3.3.4: a registrar's To must be a SIP or SIPS URI.
        if !matches!(sip::scheme(&to.uri).as_deref(), Some("sip" | "sips")) {
            return self.refuse(flow, m, 400, "To is not a SIP URI");
        }
        let line = uri_user(&to.uri).and_then(|u| self.line(&u).cloned());
        // §10.3: authentication (step 3) before the address of record (step 5).
        let authorized = self.cfg.digest && line.as_ref().is_some_and(|l| self.authorized(m, l));
        // Issue 13: an answer to one of our challenges is a password check like a UDS or SOAP
        // sign-in: a wrong one counts against the directory's lockout, and while the account
        // is locked even the right one is refused (a fresh challenge, as for a wrong one).
        let answered = line.as_ref().filter(|l| self.answers_our_challenge(m, l));
        let allowed = match (answered, &self.lockout) {
            (Some(l), Some(lock)) => {
                lock.check(&l.user, authorized) == crate::lockout::Verdict::Allowed
            }
            _ => authorized,
        };
        if self.cfg.digest && !allowed {
            self.counters.refused += 1;
            self.counter += 1;
            let nonce = match &mut self.nonce_source {
                Some(r) => r.token(""),
                None => {
                    format!("{:016x}", fnv(&[&self.seed.to_string(), &self.counter.to_string()]))
                }
            };
            if self.nonce_order.len() >= 4096
                && let Some(oldest) = self.nonce_order.pop_front()
            {
                self.nonces.remove(&oldest);
            }
            if self.nonces.insert(nonce.clone()) {
                self.nonce_order.push_back(nonce.clone());
            }
            let mut r = self.reply(m, 401, "");
            r.push(
                "WWW-Authenticate",
                format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5"),
            );
            return self.send(flow, &r);
        }
        let Some(line) = line else { return self.refuse(flow, m, 404, "") };
        let header_expires = m.expires();
        let contacts: Vec<String> = m
            .all("Contact")
            .flat_map(|v| split_list(v).unwrap_or_default())
            .map(str::to_owned)
            .collect();
        let (node, _, _) = self.node_of(flow);
        let ext = line.extension.clone();
        let mut granted_contacts = Vec::new();
        if contacts.iter().any(|c| c == "*") {
            if contacts.len() != 1 || header_expires != Some(0) {
                return self.refuse(flow, m, 400, "Contact * needs Expires: 0 alone");
            }
            // Issue 13: removing every binding of a line is for its owner: a request that
            // passed digest, or (no digest) one on a flow that holds a binding of the line.
            let owner = self.cfg.digest
                || self.bindings.get(&ext).is_some_and(|d| d.values().any(|b| b.flow == flow));
            if !owner {
                return self.refuse(flow, m, 403, "Contact * only from the line's device");
            }
            self.bindings.remove(&ext);
        }
        // Parsed first, so that a request with one bad or foreign Contact changes nothing.
        let mut parsed = Vec::new();
        for c in contacts.iter().filter(|c| *c != "*") {
            let Ok(na) = parse_name_addr(c) else {
                return self.refuse(flow, m, 400, "bad Contact");
            };
            let device = device_name(&na);
            // CUCM binds a line only to the device it is configured on (issue 13): the
            // Contact names the device (WIRE.md), else its user part is taken as the name.
            // The SRST router takes whatever registers (SPEC CC5).
            if !self.cfg.srst
                && !device.as_deref().is_some_and(|d| d.eq_ignore_ascii_case(&line.device))
            {
                return self.refuse(flow, m, 403, "device not configured for this line");
            }
            let device = match device {
                Some(d) if self.cfg.srst => d,
                _ => line.device.clone(),
            };
            parsed.push((c, na, device));
        }
        for (c, na, device) in parsed {
            let asked = match na.param("expires") {
                Some(Some(e)) => e.parse::<u32>().unwrap_or(DEFAULT_EXPIRES),
                _ => header_expires.unwrap_or(DEFAULT_EXPIRES),
            };
            if na.param("cisco-keep-alive").is_some() {
                // WIRE.md: the backup node's heartbeat; no binding change.
                if self.keepalives.len() >= MAX_TRACKED && !self.keepalives.contains_key(&device) {
                    self.keepalives
                        .retain(|_, (_, at)| now.saturating_sub(*at) < KEEPALIVE_TRACKED);
                }
                if self.keepalives.len() < MAX_TRACKED || self.keepalives.contains_key(&device) {
                    self.keepalives.insert(device, (node.clone(), now));
                }
                self.counters.keepalives += 1;
                granted_contacts.push(c.clone());
                continue;
            }
            let devices = self.bindings.entry(ext.clone()).or_default();
            // Expired bindings go as the line registers again, and a line has a few devices
            // at most: what a sender names in its Contact cannot grow the table.
            devices.retain(|_, b| b.expires_at > now);
            if asked == 0 {
                devices.remove(&device);
                continue;
            }
            if devices.len() >= MAX_DEVICES_PER_LINE && !devices.contains_key(&device) {
                return self.refuse(flow, m, 403, "too many devices on this line");
            }
            let granted = asked.min(if self.cfg.srst { DEFAULT_EXPIRES } else { MAX_EXPIRES });
            let b = Binding {
                contact: na.uri.clone(),
                flow,
                node: node.clone(),
                device: device.clone(),
                expires_at: now + Duration::from_secs(u64::from(granted)),
            };
            devices.insert(device, b);
            self.counters.registrations += 1;
            granted_contacts.push(format!("{};expires={granted}", strip_expires(c)));
        }
        if self.bindings.get(&ext).is_some_and(BTreeMap::is_empty) {
            self.bindings.remove(&ext);
        }
        let mut r = self.reply(m, 200, "");
        let granted = granted_contacts
            .iter()
            .filter_map(|c| c.rsplit_once(";expires=").and_then(|(_, e)| e.parse::<u32>().ok()))
            .max()
            .unwrap_or(0);
        r.push("Expires", granted.to_string());
        for c in granted_contacts {
            r.push("Contact", c);
        }
        // WIRE.md, issue 17: a registration through Expressway (MRA) asks for session
        // keepalives (`x-cisco-mra-ha=AR_SK`); CUCM says it supports them.
        let mra = contacts.iter().any(|c| c.to_ascii_lowercase().contains("x-cisco-mra-ha=ar_sk"));
        let ar_sk = if mra { ",X-cisco-supports-AR_SK" } else { "" };
        r.push("Supported", format!("X-cisco-srtp-fallback,X-cisco-sis-6.0.0{ar_sk}"));
        self.send(flow, &r);
        if self.binding(&ext, now).is_some() {
            self.blf_changed(now, &ext);
        } else {
            self.line_lost(now, &ext);
        }
    }

    /// Whether `m` answers one of our challenges for `line`'s user (right or wrong).
    fn answers_our_challenge(&self, m: &Message, line: &SipLine) -> bool {
        m.get("Authorization").and_then(digest::params).is_some_and(|p| {
            p.get("username").is_some_and(|u| u.eq_ignore_ascii_case(&line.user))
                && p.get("nonce").is_some_and(|n| self.nonces.contains(n))
        })
    }

    /// Digest credentials of `line` (RFC 2617 without qop, as CUCM asks), with a nonce we gave.
    fn authorized(&self, m: &Message, line: &SipLine) -> bool {
        let Some(p) = m.get("Authorization").and_then(digest::params) else { return false };
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
        if !get("username").eq_ignore_ascii_case(&line.user)
            || get("realm") != REALM
            || !self.nonces.contains(get("nonce"))
        {
            return false;
        }
        let qop = match p.get("qop").map(String::as_str) {
            Some("auth") => Some((get("nc"), get("cnonce"))),
            _ => None,
        };
        let want = digest::response(
            (get("username"), REALM, &line.password),
            (m.method().unwrap_or(""), get("uri")),
            get("nonce"),
            qop,
        );
        get("response").eq_ignore_ascii_case(&want)
    }
}

/// The device a Contact names: its `+u.sip!devicename.ccm.cisco.com` parameter (WIRE.md),
/// else the URI's user part (a third-party phone registers as `sip:CSFALICE@…`).
fn device_name(na: &sip::NameAddr) -> Option<String> {
    na.param("+u.sip!devicename.ccm.cisco.com")
        .flatten()
        .map(|d| d.trim_matches('"').to_owned())
        .or_else(|| uri_user(&na.uri))
        .filter(|d| !d.is_empty())
}

/// A Contact value without its expires parameter (as a name-addr, `<>` added if missing).
fn strip_expires(c: &str) -> String {
    let Ok(na) = parse_name_addr(c) else { return c.to_owned() };
    let mut out = format!("<{}>", na.uri);
    for (k, v) in na.params.iter().filter(|(k, _)| k != "expires") {
        out.push(';');
        out.push_str(k);
        if let Some(v) = v {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

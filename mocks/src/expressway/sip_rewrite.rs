//! What Expressway-C does to SIP it carries between the edge and CUCM (SPEC MRA1; WIRE.md
//! "Expressway MRA"; issue 17), pure: C is a proxy in the path of every message, so it adds its
//! own Via (marked with the zone the message came in by, `ingress-zone=CollaborationEdgeZone`),
//! takes it off the answer, and puts itself in the Contact of what comes from outside, keeping
//! the client's own host and port in `orig-hostport`: CUCM then sees the registration and the
//! dialogs from C, which is the only address it can reach, and C can give the client its own
//! Contact back.
//!
//! Every function takes a parsed [`Message`] and changes it in place; none panics on what a
//! hostile client or server may send (a message without the headers C needs is refused with
//! [`RewriteError`], which the caller answers or drops).

use uclab_proto::sip::{Message, Start, parse_name_addr, parse_via, split_list};

/// The zone a message from outside came in by (C's `ingress-zone` Via parameter).
pub const INGRESS_ZONE: &str = "CollaborationEdgeZone";
/// The Contact parameter that keeps the client's own host and port.
pub const ORIG_HOSTPORT: &str = "orig-hostport";

/// Why C does not carry a message on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// A request without a Via (or an unreadable one).
    #[error("no readable Via")]
    NoVia,
    /// A response whose top Via is not C's: not an answer to anything C sent.
    #[error("response not for this proxy")]
    NotOurs,
    /// Max-Forwards reached 0 (RFC 3261 §16.3: 483).
    #[error("too many hops")]
    TooManyHops,
}

/// C's address towards CUCM, as it writes it in Via and Contact (`ip:port`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// `ip:port` of C's end of the connection to CUCM.
    pub sent_by: String,
}

/// A branch for C's Via derived from the branch below it, so a retransmission gets the same
/// one (RFC 3261 §16.6 step 8) and a run replays exactly.
fn branch(below: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in below.bytes().chain(*b"expressway-c") {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("z9hG4bK{h:016x}c")
}

/// Puts C's Via on top of `m` (a request going either way).
fn push_via(
    m: &mut Message,
    hop: &Hop,
    transport: &str,
    ingress: bool,
) -> Result<(), RewriteError> {
    let below = m.top_via().ok_or(RewriteError::NoVia)?;
    let b = branch(below.branch().unwrap_or(&below.sent_by));
    let zone = if ingress { format!(";ingress-zone={INGRESS_ZONE}") } else { String::new() };
    let via = format!("SIP/2.0/{transport} {};branch={b}{zone}", hop.sent_by);
    let at = m.headers.iter().position(|h| h.name.eq_ignore_ascii_case("Via")).unwrap_or(0);
    m.headers.insert(at, uclab_proto::sip::Header { name: "Via".into(), value: via });
    Ok(())
}

/// Takes C's Via off the top of a response; refuses a response whose top Via is not C's.
fn pop_via(m: &mut Message, hop: &Hop) -> Result<(), RewriteError> {
    let top = m.top_via().ok_or(RewriteError::NotOurs)?;
    if !top.sent_by.eq_ignore_ascii_case(&hop.sent_by) {
        return Err(RewriteError::NotOurs);
    }
    let Some(i) = m.headers.iter().position(|h| h.name.eq_ignore_ascii_case("Via")) else {
        return Err(RewriteError::NotOurs);
    };
    // A comma list in one header line: only its first value goes.
    let rest = split_list(&m.headers[i].value)
        .map(|l| l[1..].join(", "))
        .map_err(|_| RewriteError::NotOurs)?;
    if rest.is_empty() {
        m.headers.remove(i);
    } else {
        m.headers[i].value = rest;
    }
    Ok(())
}

/// RFC 3261 §16.6 step 3: one hop less (70 when absent).
fn hop_count(m: &mut Message) -> Result<(), RewriteError> {
    let n = m.get("Max-Forwards").and_then(|v| v.trim().parse::<u32>().ok()).unwrap_or(70);
    if n == 0 {
        return Err(RewriteError::TooManyHops);
    }
    m.set("Max-Forwards", (n - 1).to_string());
    Ok(())
}

/// `sip:user@host:port;params` → (`sip:`, `user@`, `host:port`, `;params`).
fn split_uri(uri: &str) -> Option<(&str, &str, &str, &str)> {
    let colon = uri.find(':')?;
    let (scheme, rest) = uri.split_at(colon + 1);
    let (user, rest) = match rest.find('@') {
        Some(at) => rest.split_at(at + 1),
        None => ("", rest),
    };
    let end = rest.find([';', '?']).unwrap_or(rest.len());
    let (hostport, params) = rest.split_at(end);
    Some((scheme, user, hostport, params))
}

/// Every Contact of a message from outside names C, the client's host and port kept in
/// `orig-hostport` (a URI parameter, so it comes back in CUCM's answers and requests).
fn contact_to_c(m: &mut Message, hop: &Hop) {
    for h in m.headers.iter_mut().filter(|h| h.name.eq_ignore_ascii_case("Contact")) {
        let Ok(values) = split_list(&h.value) else { continue };
        let mut out = Vec::new();
        for v in values {
            let Ok(na) = parse_name_addr(v) else {
                out.push(v.to_owned());
                continue;
            };
            let Some((scheme, user, hostport, params)) = split_uri(&na.uri) else {
                out.push(v.to_owned());
                continue;
            };
            // C speaks TCP to CUCM: the client's transport parameter does not apply there.
            let params: Vec<&str> = params
                .split(';')
                .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("transport="))
                .collect();
            let mut uri = format!("{scheme}{user}{};transport=tcp", hop.sent_by);
            for p in params {
                uri.push(';');
                uri.push_str(p);
            }
            uri.push_str(&format!(";{ORIG_HOSTPORT}={hostport}"));
            let mut s = match &na.display {
                Some(d) => format!("\"{d}\" <{uri}>"),
                None => format!("<{uri}>"),
            };
            for (k, val) in &na.params {
                s.push(';');
                s.push_str(k);
                if let Some(val) = val {
                    s.push('=');
                    s.push_str(val);
                }
            }
            out.push(s);
        }
        h.value = out.join(", ");
    }
}

/// The client's own Contact again: C's host replaced by `orig-hostport`, which goes.
fn contact_from_c(m: &mut Message) {
    for h in m.headers.iter_mut().filter(|h| h.name.eq_ignore_ascii_case("Contact")) {
        let Some(i) = h.value.find(&format!(";{ORIG_HOSTPORT}=")) else { continue };
        let after = &h.value[i + ORIG_HOSTPORT.len() + 2..];
        let end = after.find([';', '>', ',', '?']).unwrap_or(after.len());
        let orig = after[..end].to_owned();
        let rest = after[end..].to_owned();
        let head = &h.value[..i];
        let Some(at) = head.find('@').or_else(|| head.find("sip:").map(|s| s + 3)) else {
            continue;
        };
        let tail = &head[at + 1..];
        let host_end = tail.find([';', '>']).unwrap_or(tail.len());
        h.value = format!("{}{orig}{}{rest}", &head[..=at], &tail[host_end..]);
    }
}

/// A request from outside on its way to CUCM: C's route entry (the edge configuration's
/// `sipRequest` route, which names C) goes, C's Via (with the ingress zone) goes on top, one hop
/// less, and the Contact names C.
pub fn inward_request(m: &mut Message, hop: &Hop, c_host: &str) -> Result<(), RewriteError> {
    hop_count(m)?;
    if let Some(i) = m.headers.iter().position(|h| h.name.eq_ignore_ascii_case("Route")) {
        let names_c = split_list(&m.headers[i].value)
            .ok()
            .and_then(|l| l.first().and_then(|r| parse_name_addr(r).ok()))
            .and_then(|na| split_uri(&na.uri).map(|(_, _, hp, _)| hp.to_owned()))
            .is_some_and(|hp| hp.split(':').next() == Some(c_host));
        if names_c {
            let rest =
                split_list(&m.headers[i].value).map(|l| l[1..].join(", ")).unwrap_or_default();
            if rest.is_empty() {
                m.headers.remove(i);
            } else {
                m.headers[i].value = rest;
            }
        }
    }
    push_via(m, hop, "TCP", true)?;
    contact_to_c(m, hop);
    Ok(())
}

/// CUCM's answer on its way out: C's Via comes off; a REGISTER's answer lists the client's
/// own Contact again. A dialog's answer keeps the other party's Contact as CUCM sent it (C's
/// form, for an outside party): that is the target CUCM can route the client's next request
/// to.
pub fn outward_response(m: &mut Message, hop: &Hop) -> Result<(), RewriteError> {
    pop_via(m, hop)?;
    if m.method() == Some("REGISTER") {
        contact_from_c(m);
    }
    Ok(())
}

/// A request from CUCM to the client (an INVITE, a NOTIFY, a BYE): C's Via on top, one hop
/// less; the Request-URI gets the client's own host back.
pub fn outward_request(m: &mut Message, hop: &Hop) -> Result<(), RewriteError> {
    hop_count(m)?;
    push_via(m, hop, "TLS", false)?;
    if let Start::Request { uri, .. } = &mut m.start
        && let Some(i) = uri.find(&format!(";{ORIG_HOSTPORT}="))
        && let Some((scheme, user, _, _)) = split_uri(uri)
    {
        let after = &uri[i + ORIG_HOSTPORT.len() + 2..];
        let end = after.find([';', '?']).unwrap_or(after.len());
        *uri = format!("{scheme}{user}{}", &after[..end]);
    }
    Ok(())
}

/// The client's answer to CUCM's request: C's Via comes off, its Contact names C.
pub fn inward_response(m: &mut Message, hop: &Hop) -> Result<(), RewriteError> {
    pop_via(m, hop)?;
    contact_to_c(m, hop);
    Ok(())
}

/// An Expressway node's own answer to `req`: `code` with `why` after the reason phrase and
/// `node` as the To tag; none to a response or an ACK (RFC 3261 §17.2.1: never answered).
pub fn own_answer(req: &Message, code: u16, why: &str, node: &str) -> Option<Message> {
    let request = matches!(req.start, Start::Request { .. }) && req.method() != Some("ACK");
    request.then(|| {
        let phrase = format!("{} ({why})", uclab_proto::sip::reason(code));
        req.response(code, &phrase, Some(node))
    })
}

/// Whether a Via value is well formed (for the caller's checks).
pub fn via_ok(v: &str) -> bool {
    parse_via(v).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uclab_proto::sip;

    fn register() -> Message {
        Message::request("REGISTER", "sip:cucm1.example.com")
            .with("Via", "SIP/2.0/TLS csfcarol.invalid;branch=z9hG4bKabc")
            .with("Route", "<sip:10.1.0.30:5061;transport=tls;zone-id=3;directed;lr>")
            .with("Max-Forwards", "70")
            .with("From", "<sip:1003@cucm1.example.com>;tag=t1")
            .with("To", "<sip:1003@cucm1.example.com>")
            .with("Call-ID", "c1@csfcarol")
            .with("CSeq", "101 REGISTER")
            .with(
                "Contact",
                "<sip:u1@csfcarol.invalid;transport=tls>;+sip.instance=\"<urn:uuid:u1>\";x-cisco-mra-ha=AR_SK;x-cisco-reg-id=1",
            )
            .with("Expires", "3600")
    }

    fn hop() -> Hop {
        Hop { sent_by: "10.1.0.30:25000".into() }
    }

    #[test]
    fn a_register_goes_in_with_cs_via_and_contact_and_comes_back_as_sent() {
        let mut m = register();
        inward_request(&mut m, &hop(), "10.1.0.30").unwrap();
        assert_eq!(m.get("Route"), None, "C's own route entry is used up");
        assert_eq!(m.get("Max-Forwards"), Some("69"));
        let vias = m.vias();
        assert_eq!(vias.len(), 2);
        assert!(vias[0].starts_with("SIP/2.0/TCP 10.1.0.30:25000;branch=z9hG4bK"), "{vias:?}");
        assert!(vias[0].ends_with(";ingress-zone=CollaborationEdgeZone"), "{vias:?}");
        assert!(via_ok(&vias[0]));
        let c = m.get("Contact").unwrap();
        assert!(
            c.starts_with("<sip:u1@10.1.0.30:25000;transport=tcp;orig-hostport=csfcarol.invalid>"),
            "{c}"
        );
        assert!(c.contains(";x-cisco-mra-ha=AR_SK;x-cisco-reg-id=1"), "{c}");
        // Deterministic: a retransmission gets the same branch.
        let mut again = register();
        inward_request(&mut again, &hop(), "10.1.0.30").unwrap();
        assert_eq!(again.vias()[0], vias[0]);
        // CUCM's 200 echoes Via and the registered Contact: on the way out both are undone.
        let mut ok = m.response(200, "OK", Some("cucm"));
        ok.push("Contact", m.get("Contact").unwrap().to_owned());
        ok.push("Expires", "120");
        outward_response(&mut ok, &hop()).unwrap();
        assert_eq!(ok.vias(), ["SIP/2.0/TLS csfcarol.invalid;branch=z9hG4bKabc"]);
        let c = ok.get("Contact").unwrap();
        assert!(c.starts_with("<sip:u1@csfcarol.invalid;transport=tcp>"), "{c}");
        let back = sip::parse(&ok.to_bytes()).expect("still SIP");
        assert_eq!(back.code(), Some(200));
    }

    #[test]
    fn answers_not_for_c_and_loops_are_refused() {
        let mut m = register();
        let mut r = m.response(200, "OK", None);
        assert_eq!(outward_response(&mut r, &hop()), Err(RewriteError::NotOurs));
        m.set("Max-Forwards", "0");
        assert_eq!(inward_request(&mut m, &hop(), "10.1.0.30"), Err(RewriteError::TooManyHops));
        let mut bare = Message::request("OPTIONS", "sip:x");
        assert_eq!(inward_request(&mut bare, &hop(), "10.1.0.30"), Err(RewriteError::NoVia));
    }

    #[test]
    fn cucms_request_goes_out_to_the_clients_own_address_and_its_answer_comes_back() {
        let mut inv = Message::request(
            "INVITE",
            "sip:u1@10.1.0.30:25000;transport=tcp;orig-hostport=csfcarol.invalid",
        )
        .with("Via", "SIP/2.0/TCP 10.1.0.11:5060;branch=z9hG4bKcucm")
        .with("Max-Forwards", "70")
        .with("From", "<sip:1001@cucm1.example.com>;tag=a")
        .with("To", "<sip:1003@cucm1.example.com>")
        .with("Call-ID", "call-1")
        .with("CSeq", "1 INVITE");
        outward_request(&mut inv, &hop()).unwrap();
        assert!(
            matches!(&inv.start, Start::Request { uri, .. } if uri == "sip:u1@csfcarol.invalid")
        );
        assert_eq!(inv.vias().len(), 2);
        let mut ok = inv.response(200, "OK", Some("b"));
        ok.push("Contact", "<sip:u1@csfcarol.invalid;transport=tls>");
        inward_response(&mut ok, &hop()).unwrap();
        assert_eq!(ok.vias(), ["SIP/2.0/TCP 10.1.0.11:5060;branch=z9hG4bKcucm"]);
        assert!(ok.get("Contact").unwrap().contains("orig-hostport=csfcarol.invalid"));
    }
}

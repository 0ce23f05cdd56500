//! CUCM's ad hoc conference bridge (SPEC CC5 names ad hoc conferencing among the features
//! SRST refuses; under CUCM it works): a software conference bridge, the media resource CUCM
//! allocates on a node, reached in SIP as a conference focus (RFC 4579).
//!
//! The conference controller (the phone that pressed Conference) calls `conference@<node>`:
//! the bridge allocates a conference and answers with its focus URI, `conf-N@<node>`, in the
//! Contact (with `isfocus`). The controller then REFERs its other calls to that URI, and the
//! parties call the focus themselves (RFC 4579 §5.5: adding a participant by REFER). The
//! bridge answers each INVITE with its own RTP address and forwards every RTP packet it gets
//! from one participant to the others (the lab's "mix"). BYE leaves; the last one out ends the
//! conference. At most [`MAX_PARTICIPANTS`] per conference (CUCM's "Maximum Ad Hoc Conference"
//! default, 4) and [`MAX_CONFERENCES`] per cluster.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{Cluster, FlowId, SERVER, fnv, uri_user};
use uclab_proto::sip::{Message, Start};

/// Participants per ad hoc conference (the service parameter's default).
pub const MAX_PARTICIPANTS: usize = 4;
/// Conferences a cluster's bridges hold at once.
pub const MAX_CONFERENCES: usize = 256;
/// The user part of the ad hoc conference request URI.
pub const ADHOC: &str = "conference";

/// One conference on a bridge.
#[derive(Debug, Default)]
pub(super) struct Conf {
    /// The node whose bridge holds it.
    node: String,
    /// Participant dialogs, (Call-ID, their tag) → where their RTP comes from and goes.
    members: BTreeMap<(String, String), SocketAddr>,
}

/// The conferences of a cluster, and each node's bridge address.
#[derive(Debug, Default)]
pub(super) struct Bridges {
    confs: BTreeMap<u32, Conf>,
    next: u32,
    /// Node → its bridge's RTP address.
    media: BTreeMap<String, SocketAddr>,
}

/// The first `c=IN IP4` address and `m=audio` port of an SDP body, and whether it offers
/// PCMU (payload type 0, the bridge's codec).
fn rtp_of(body: &[u8]) -> Option<(SocketAddr, bool)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut ip: Option<IpAddr> = None;
    let mut audio = None;
    for l in text.lines().map(str::trim_end) {
        if let Some(c) = l.strip_prefix("c=IN IP4 ") {
            ip = ip.or_else(|| c.split('/').next()?.trim().parse().ok());
        } else if let Some(m) = l.strip_prefix("m=audio ") {
            let mut w = m.split_whitespace();
            let port = w.next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
            let pcmu = w.skip(1).any(|p| p == "0");
            audio = audio.or(Some((port, pcmu)));
        }
    }
    let (port, pcmu) = audio.filter(|(p, _)| *p != 0)?;
    Some((SocketAddr::new(ip?, port), pcmu))
}

/// The conference number of a focus URI user part (`conf-7` → 7).
fn conf_id(user: &str) -> Option<u32> {
    user.strip_prefix("conf-")?.parse().ok()
}

impl Cluster {
    /// Node `host`'s conference bridge receives RTP at `addr`.
    pub fn set_bridge(&mut self, host: &str, addr: SocketAddr) {
        self.bridges.media.insert(host.to_ascii_lowercase(), addr);
    }

    /// Where the bridge sends an RTP packet that came from `from`: every other participant
    /// of the same conference.
    pub fn bridge_targets(&self, from: SocketAddr) -> Vec<SocketAddr> {
        let Some(c) = self.bridges.confs.values().find(|c| c.members.values().any(|a| *a == from))
        else {
            return Vec::new();
        };
        c.members.values().copied().filter(|a| *a != from).collect()
    }

    /// Whether a request is for the bridge: its Request-URI names `conference` or a focus
    /// on one of our nodes.
    pub(super) fn for_bridge(&self, m: &Message) -> bool {
        let Start::Request { uri, .. } = &m.start else { return false };
        self.is_ours(uri)
            && uri_user(uri).is_some_and(|u| u.eq_ignore_ascii_case(ADHOC) || conf_id(&u).is_some())
    }

    /// A request for the bridge: INVITE joins (or, to `conference`, creates), re-INVITE
    /// answers again, BYE leaves, ACK is absorbed, anything else in a dialog is answered.
    pub(super) fn bridge(&mut self, _now: Duration, flow: FlowId, m: &Message) {
        let Start::Request { method, uri } = &m.start else { return };
        let user = uri_user(uri).unwrap_or_default();
        let key = (m.call_id().unwrap_or("").to_owned(), m.tag("From").unwrap_or_default());
        let (node, port, transport) = self.node_of(flow);
        match method.as_str() {
            "ACK" => {}
            "INVITE" => {
                let Some((rtp, pcmu)) = rtp_of(&m.body) else {
                    return self.refuse(flow, m, 488, "an audio offer is needed");
                };
                if !pcmu {
                    return self.refuse(flow, m, 488, "the bridge mixes G.711 mu-law");
                }
                let id = if user.eq_ignore_ascii_case(ADHOC) {
                    // A re-INVITE of the controller's own dialog keeps its conference.
                    match self.bridges.confs.iter().find(|(_, c)| c.members.contains_key(&key)) {
                        Some((id, _)) => *id,
                        None => {
                            if !self.bridges.media.contains_key(&node) {
                                let why = "no conference bridge on this node";
                                return self.refuse(flow, m, 503, why);
                            }
                            if self.bridges.confs.len() >= MAX_CONFERENCES {
                                return self.refuse(flow, m, 503, "no conference resource free");
                            }
                            self.bridges.next += 1;
                            let id = self.bridges.next;
                            let conf = Conf { node: node.clone(), members: BTreeMap::new() };
                            self.bridges.confs.insert(id, conf);
                            id
                        }
                    }
                } else {
                    match conf_id(&user).filter(|id| self.bridges.confs.contains_key(id)) {
                        Some(id) => id,
                        None => return self.refuse(flow, m, 404, "no such conference"),
                    }
                };
                // The bridge that holds the conference, whichever node the INVITE came to.
                let host = self.bridges.confs[&id].node.clone();
                let Some(bridge) = self.bridges.media.get(&host).copied() else {
                    return self.refuse(flow, m, 503, "the conference bridge is gone");
                };
                let conf = self.bridges.confs.get_mut(&id).expect("looked up");
                if !conf.members.contains_key(&key) && conf.members.len() >= MAX_PARTICIPANTS {
                    return self.refuse(flow, m, 486, "the conference is full");
                }
                conf.members.insert(key.clone(), rtp);
                let tag = format!("{:x}", fnv(&[&key.0, &key.1, "conf"]) >> 32);
                let mut r = m.response(200, "OK", Some(&tag));
                let t = transport.as_str().to_ascii_lowercase();
                r.push("Contact", format!("<sip:conf-{id}@{host}:{port};transport={t}>;isfocus"));
                r.push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO");
                r.push("Server", SERVER);
                r.push("Content-Type", "application/sdp");
                let (ip, p) = (bridge.ip(), bridge.port());
                let session = u64::from(id) * 100 + conf.members.len() as u64;
                r.body = format!(
                    "v=0\r\no=CiscoSystemsCCM-SIP {session} 1 IN IP4 {ip}\r\ns=SIP Call\r\n\
                     c=IN IP4 {ip}\r\nt=0 0\r\nm=audio {p} RTP/AVP 0 101\r\n\
                     a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=rtpmap:101 telephone-event/8000\r\n\
                     a=fmtp:101 0-15\r\na=sendrecv\r\n"
                )
                .into_bytes();
                self.counters.conference_joins += 1;
                self.send(flow, &r);
            }
            "BYE" => {
                let tag = format!("{:x}", fnv(&[&key.0, &key.1, "conf"]) >> 32);
                let left = self.bridges.confs.iter_mut().find_map(|(id, c)| {
                    c.members.remove(&key).map(|_| (*id, c.members.is_empty()))
                });
                let Some((id, empty)) = left else { return self.refuse(flow, m, 481, "") };
                if empty {
                    self.bridges.confs.remove(&id);
                }
                let mut r = m.response(200, "OK", Some(&tag));
                r.push("Server", SERVER);
                self.send(flow, &r);
            }
            // The INVITE was answered at once: the CANCEL changes nothing (§9.2).
            "CANCEL" => {
                let mut r = m.response(200, "OK", None);
                r.push("Server", SERVER);
                self.send(flow, &r);
            }
            _ if m.tag("To").is_some() => {
                let mut r = m.response(200, "OK", None);
                r.push("Server", SERVER);
                self.send(flow, &r);
            }
            _ => self.refuse(flow, m, 405, ""),
        }
    }

    /// Conferences open now and their participant counts, by focus id.
    pub fn conferences(&self) -> Vec<(u32, usize)> {
        self.bridges.confs.iter().map(|(id, c)| (*id, c.members.len())).collect()
    }

    /// A node stopped: its bridge and the conferences on it are gone.
    pub(super) fn bridge_gone(&mut self, host: &str) {
        self.bridges.media.remove(host);
        self.bridges.confs.retain(|_, c| c.node != host);
    }
}

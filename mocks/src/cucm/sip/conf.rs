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
use uclab_proto::sdp::Sdp;
use uclab_proto::sip::{Message, Start};

/// Participants per ad hoc conference (the service parameter's default).
pub const MAX_PARTICIPANTS: usize = 4;
/// Conferences a cluster's bridges hold at once.
pub const MAX_CONFERENCES: usize = 256;
/// The user part of the ad hoc conference request URI.
pub const ADHOC: &str = "conference";

/// A participant's dialog with the bridge.
#[derive(Debug)]
struct Member {
    /// Where its RTP comes from and goes.
    rtp: SocketAddr,
    /// The flow it signals over: when that goes, so does the participant.
    flow: FlowId,
    /// Our SDP's version (RFC 3264 §8: one session id, the version bumped per answer).
    version: u32,
}

/// One conference on a bridge.
#[derive(Debug, Default)]
pub(super) struct Conf {
    /// The node whose bridge holds it.
    node: String,
    /// Participant dialogs, (Call-ID, their tag).
    members: BTreeMap<(String, String), Member>,
}

/// The conferences of a cluster, and each node's bridge address.
#[derive(Debug, Default)]
pub(super) struct Bridges {
    confs: BTreeMap<u32, Conf>,
    next: u32,
    /// Node → its bridge's RTP address.
    media: BTreeMap<String, SocketAddr>,
}

/// What an SDP offer asks of the bridge.
#[derive(Debug, Default)]
struct Offer {
    /// Its m-lines in order: kind, port, protocol, formats.
    lines: Vec<(String, u16, String, Vec<String>)>,
    /// The first active audio stream with PCMU (the bridge's codec): its index and where its
    /// RTP comes from; `None` for a hold by `c=0.0.0.0`.
    audio: Option<(usize, Option<SocketAddr>)>,
    /// The direction of that stream.
    dir: &'static str,
}

fn offer_of(body: &[u8]) -> Offer {
    let sdp = Sdp::parse(&String::from_utf8_lossy(body));
    let ip = |a: Option<&String>| a.and_then(|a| a.parse::<IpAddr>().ok());
    let mut o = Offer { dir: "sendrecv", ..Offer::default() };
    o.lines = sdp
        .media
        .iter()
        .map(|m| (m.kind.clone(), m.port, m.proto.clone(), m.formats.clone()))
        .collect();
    // The first active audio stream with PCMU: the media section's last address, else the
    // session's (unspecified: a hold by c=0.0.0.0).
    let chosen = sdp
        .media
        .iter()
        .position(|m| m.kind == "audio" && m.active() && m.formats.iter().any(|f| f == "0"));
    if let Some(i) = chosen {
        let m = &sdp.media[i];
        let addr = ip(m.addrs.last()).or(ip(sdp.addrs.last())).filter(|ip| !ip.is_unspecified());
        o.audio = Some((i, addr.map(|ip| SocketAddr::new(ip, m.port))));
        for a in &m.attrs {
            o.dir = match a.as_str() {
                "sendonly" => "recvonly",
                "recvonly" => "sendonly",
                "inactive" => "inactive",
                _ => o.dir,
            };
        }
    }
    o
}

/// The bridge's tag in a participant's dialog (stable for the dialog, `key`).
fn dialog_tag(key: &(String, String)) -> String {
    format!("{:x}", fnv(&[&key.0, &key.1, "conf"]) >> 32)
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
        let Some(c) =
            self.bridges.confs.values().find(|c| c.members.values().any(|m| m.rtp == from))
        else {
            return Vec::new();
        };
        c.members.values().map(|m| m.rtp).filter(|a| *a != from).collect()
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
                // Participants are lines of the cluster (the bridge is CUCM's resource).
                let caller = m.name_addr("From").and_then(|f| uri_user(&f.uri));
                if caller.and_then(|u| self.line(&u)).is_none() {
                    return self.refuse(flow, m, 403, "not a line of this cluster");
                }
                let offer = offer_of(&m.body);
                let Some((audio_at, rtp)) = offer.audio else {
                    return self.refuse(flow, m, 488, "the bridge mixes G.711 mu-law audio");
                };
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
                // A hold by c=0.0.0.0 keeps the address the participant had.
                let version = match (conf.members.get_mut(&key), rtp) {
                    (Some(mem), rtp) => {
                        mem.rtp = rtp.unwrap_or(mem.rtp);
                        mem.flow = flow;
                        mem.version += 1;
                        mem.version
                    }
                    (None, Some(rtp)) => {
                        conf.members.insert(key.clone(), Member { rtp, flow, version: 1 });
                        1
                    }
                    (None, None) => return self.refuse(flow, m, 488, "no audio address"),
                };
                let tag = dialog_tag(&key);
                let mut r = m.response(200, "OK", Some(&tag));
                let t = transport.as_str().to_ascii_lowercase();
                r.push("Contact", format!("<sip:conf-{id}@{host}:{port};transport={t}>;isfocus"));
                r.push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO");
                r.push("Server", SERVER);
                r.push("Content-Type", "application/sdp");
                let (ip, p) = (bridge.ip(), bridge.port());
                let session = fnv(&[&key.0, &key.1, "sdp"]) >> 16;
                // RFC 3264 §6: one m-line per offered one; only the audio stream is taken.
                let mut sdp = format!(
                    "v=0\r\no=CiscoSystemsCCM-SIP {session} {version} IN IP4 {ip}\r\n\
                     s=SIP Call\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
                );
                for (n, (kind, _, proto, fmts)) in offer.lines.iter().enumerate() {
                    if n == audio_at {
                        let dir = offer.dir;
                        sdp.push_str(&format!(
                            "m=audio {p} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n\
                             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na={dir}\r\n"
                        ));
                    } else {
                        let fmt = fmts.first().map_or("0", String::as_str);
                        sdp.push_str(&format!("m={kind} 0 {proto} {fmt}\r\n"));
                    }
                }
                r.body = sdp.into_bytes();
                if version == 1 {
                    self.counters.conference_joins += 1;
                }
                self.send(flow, &r);
            }
            "BYE" => {
                let tag = dialog_tag(&key);
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

    /// A flow closed: its participants have left (their BYE will not come).
    pub(super) fn bridge_flow_gone(&mut self, flow: FlowId) {
        for c in self.bridges.confs.values_mut() {
            c.members.retain(|_, m| m.flow != flow);
        }
        self.bridges.confs.retain(|_, c| !c.members.is_empty());
    }

    /// A node stopped: its bridge and the conferences on it are gone.
    pub(super) fn bridge_gone(&mut self, host: &str) {
        self.bridges.media.remove(host);
        self.bridges.confs.retain(|_, c| c.node != host);
    }
}

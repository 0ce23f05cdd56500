//! The timeline (`[[step]]`): client patterns (`u*`) expanded, then each step's time and
//! action. A new action is an arm of `Timeline::action` and a method reading its fields.

use std::time::Duration;

use uclab_client::discovery::DiscoveryConfig;
use uclab_net::Rule;

use super::check::{Names, bootstrap_switches, check_proto, parse_action};
use super::file::{S, StepSpec};
use super::model::{Client, Node, NodeKind, Step, StepAction, User};
use super::{CheckError, Src};
use crate::time::parse_duration;

/// The timeline, sorted by time (stable).
pub(super) fn steps(
    specs: &[StepSpec],
    src: &Src<'_>,
    names: &Names<'_>,
    (clients, users, nodes): (&[Client], &[User], &[Node]),
    errs: &mut Vec<CheckError>,
) -> Vec<Step> {
    let t = Timeline { src, names, clients, users, nodes };
    let mut steps = Vec::new();
    for s in &t.expand(specs, errs) {
        if let Some(v) = &s.spread {
            errs.push(src.err(v.span().start, "`spread` needs a client pattern such as `u*`"));
        }
        let at = match parse_duration(s.at.get_ref()) {
            Ok(d) => d,
            Err(m) => {
                errs.push(src.err(s.at.span().start, m));
                continue;
            }
        };
        let Some(action) = t.action(s, at, &mut steps, errs) else { continue };
        steps.push(Step { at, action });
    }
    steps.sort_by_key(|s| s.at);
    steps
}

/// What the steps are checked against: the file they are in, the declared names, and the
/// clients and users built.
struct Timeline<'a> {
    src: &'a Src<'a>,
    names: &'a Names<'a>,
    clients: &'a [Client],
    users: &'a [User],
    nodes: &'a [Node],
}

impl Timeline<'_> {
    /// A step for `u*` is that step for every client whose name starts with `u`, spread
    /// evenly over `spread` if given (a population signing in at a realistic rate).
    fn expand(&self, specs: &[StepSpec], errs: &mut Vec<CheckError>) -> Vec<StepSpec> {
        let src = self.src;
        let mut file_steps = Vec::new();
        for s in specs {
            let Some(prefix) = s.client.as_ref().and_then(|c| c.get_ref().strip_suffix('*')) else {
                file_steps.push(s.clone());
                continue;
            };
            let matching: Vec<&str> =
                self.names.clients.iter().copied().filter(|c| c.starts_with(prefix)).collect();
            let c = s.client.as_ref().expect("has a pattern");
            if matching.is_empty() {
                errs.push(src.err(c.span().start, format!("no client matches `{}`", c.get_ref())));
                continue;
            }
            let spread = match &s.spread {
                None => Duration::ZERO,
                Some(v) => match parse_duration(v.get_ref()) {
                    Ok(d) => d,
                    Err(m) => {
                        errs.push(src.err(v.span().start, m));
                        continue;
                    }
                },
            };
            let base = parse_duration(s.at.get_ref()).ok();
            let m = matching.len() as u32;
            for (k, name) in matching.iter().enumerate() {
                let mut one = s.clone();
                one.client = Some(S::new(c.span(), (*name).to_owned()));
                one.spread = None;
                if let Some(b) = base {
                    let at = b + spread * k as u32 / m;
                    one.at =
                        S::new(s.at.span(), format!("{}.{:09}s", at.as_secs(), at.subsec_nanos()));
                }
                file_steps.push(one);
            }
        }
        file_steps
    }

    /// The step's action; `None` after an error. Numbered room messages before the last
    /// go straight to `steps`.
    fn action(
        &self,
        s: &StepSpec,
        at: Duration,
        steps: &mut Vec<Step>,
        errs: &mut Vec<CheckError>,
    ) -> Option<StepAction> {
        match s.action.get_ref().as_str() {
            "discover" | "sign-in" => self.discover(s, errs),
            "xmpp-sign-in" => self.xmpp_sign_in(s, errs),
            kind @ ("message" | "subscribe" | "approve") => self.im(s, kind, errs),
            "presence" => self.presence(s, errs),
            kind @ ("sip-presence" | "sip-message") => self.sip_user(s, kind, errs),
            kind @ ("call" | "answer" | "end" | "hold" | "resume" | "mute" | "unmute" | "dtmf"
            | "transfer" | "conference" | "divert" | "park" | "video"
            | "send-to-mobile" | "watch") => self.call(s, kind, errs),
            kind @ ("join" | "leave" | "room-message") => self.room(s, kind, at, steps, errs),
            "move" => self.move_client(s, errs),
            "phone-credentials" => self.phone_credentials(s, errs),
            // SPEC FED3: a file offered to a contact (`to`): the XEP-0096 offer goes out.
            "file-transfer" if s.to.is_some() => {
                let client = self.known_client(errs, s)?;
                let to = self.need(errs, s, &s.to, "to")?;
                let name = s.body.clone().unwrap_or_else(|| "notes.txt".into());
                let action = uclab_client::im::ImAction::OfferFile { to, name };
                Some(StepAction::Im { client, action })
            }
            f @ ("file-transfer" | "deskphone-control") => {
                let client = self.known_client(errs, s)?;
                Some(StepAction::Feature { client, feature: f.to_owned() })
            }
            "install" => self.install(s, errs),
            a @ ("crash" | "restart") => {
                let node = self.need(errs, s, &s.node, "node")?;
                self.names.check_node(errs, self.src, s.node.as_ref().expect("checked"), None);
                Some(if a == "crash" {
                    StepAction::Crash { node }
                } else {
                    StepAction::Restart { node }
                })
            }
            a @ ("blackhole" | "heal" | "partition" | "repair" | "latency" | "loss") => {
                self.link(s, a, errs)
            }
            "firewall" => self.firewall(s, errs),
            other => {
                errs.push(self.src.err(
                    s.action.span().start,
                    format!("unknown action `{other}` (discover, sign-in, xmpp-sign-in, sip-presence, sip-message, phone-credentials, file-transfer, deskphone-control, install, move, message, subscribe, approve, presence, join, leave, room-message, call, answer, end, hold, resume, mute, unmute, dtmf, transfer, conference, video, watch, crash, restart, blackhole, heal, partition, repair, latency, loss, firewall)"),
                ));
                None
            }
        }
    }

    /// The step's field `f`, which its action needs.
    fn need(
        &self,
        errs: &mut Vec<CheckError>,
        s: &StepSpec,
        f: &Option<S<String>>,
        field: &str,
    ) -> Option<String> {
        match f {
            Some(v) => Some(v.get_ref().clone()),
            None => {
                errs.push(self.src.err(
                    s.action.span().start,
                    format!("action `{}` needs `{field}`", s.action.get_ref()),
                ));
                None
            }
        }
    }

    /// The step's field `f`: present, and a node or client.
    fn host(
        &self,
        errs: &mut Vec<CheckError>,
        s: &StepSpec,
        f: &Option<S<String>>,
        field: &str,
    ) -> Option<String> {
        let v = self.need(errs, s, f, field)?;
        let f = f.as_ref().expect("checked by need");
        if !self.names.host_known(&v) {
            errs.push(self.src.err(f.span().start, format!("unknown host `{v}`")));
            return None;
        }
        Some(v)
    }

    /// The step's `client`: present and declared.
    fn known_client(&self, errs: &mut Vec<CheckError>, s: &StepSpec) -> Option<String> {
        let client = self.need(errs, s, &s.client, "client")?;
        if !self.names.clients.contains(client.as_str()) {
            let at = s.client.as_ref().map_or(0, |c| c.span().start);
            errs.push(self.src.err(at, format!("unknown client `{client}`")));
            return None;
        }
        Some(client)
    }

    /// `discover` and `sign-in`.
    fn discover(&self, s: &StepSpec, errs: &mut Vec<CheckError>) -> Option<StepAction> {
        let client = self.need(errs, s, &s.client, "client")?;
        let cs = s.client.as_ref().expect("checked");
        let Some(c) = self.clients.iter().find(|c| c.name == client) else {
            errs.push(self.src.err(cs.span().start, format!("unknown client `{client}`")));
            return None;
        };
        // SPEC SD1: the provisioning URL's ServicesDomain, else the step's domain, else
        // the domain part of the typed address.
        let provision = match &s.url {
            Some(u) => match uclab_proto::provision::parse(u.get_ref()) {
                Ok(p) => Some(p),
                Err(e) => {
                    errs.push(self.src.err(u.span().start, format!("bad provisioning URL: {e}")));
                    return None;
                }
            },
            None => None,
        };
        let from_url = provision.as_ref().and_then(|p| p.services_domain.clone());
        let domain = match (from_url, &s.domain, &c.address) {
            (Some(d), _, _) => d,
            (None, Some(d), _) => d.get_ref().clone(),
            (None, None, Some(a)) => {
                a.rsplit_once('@').map(|(_, d)| d.to_owned()).unwrap_or_default()
            }
            (None, None, None) => {
                errs.push(self.src.err(
                    s.action.span().start,
                    format!("client `{client}` has no address: give the step a `domain`"),
                ));
                return None;
            }
        };
        let discovery = DiscoveryConfig {
            services_domain: domain,
            voice_domain: provision.as_ref().and_then(|p| p.voice_services_domain.clone()),
            excluded: provision.as_ref().and_then(|p| p.excluded).unwrap_or_default(),
            no_discovery: provision.as_ref().is_some_and(|p| p.all_three()),
            from_url: provision.is_some(),
        };
        if s.action.get_ref() == "discover" {
            Some(StepAction::Discover { client, discovery })
        } else {
            let (user, password) = self.credentials(s, c.address.as_deref(), &client, errs)?;
            Some(StepAction::SignIn { client, discovery, user, password })
        }
    }

    /// `xmpp-sign-in`: `client` signs `user` (an account of the `xmpp-domain` node `node`) in
    /// to that node directly (SPEC FED1).
    fn xmpp_sign_in(&self, s: &StepSpec, errs: &mut Vec<CheckError>) -> Option<StepAction> {
        let client = self.known_client(errs, s)?;
        let node = s.node.as_ref().or_else(|| {
            errs.push(self.src.err(s.action.span().start, "action `xmpp-sign-in` needs `node`"));
            None
        })?;
        let Some(n) = self.nodes.iter().find(|n| &n.name == node.get_ref()) else {
            errs.push(
                self.src.err(node.span().start, format!("unknown node `{}`", node.get_ref())),
            );
            return None;
        };
        let user = s.user.as_ref().or_else(|| {
            errs.push(self.src.err(s.action.span().start, "action `xmpp-sign-in` needs `user`"));
            None
        })?;
        // An IM&P node takes PLAIN too: its users, the domain of the client's address.
        let (domain, known) = match &n.kind {
            NodeKind::XmppDomain(x) => (x.domain.clone(), x.accounts.get(user.get_ref()).cloned()),
            NodeKind::Imp(_) => {
                let address = self.clients.iter().find(|c| c.name == client).and_then(|c| {
                    c.address.as_deref().and_then(|a| a.split_once('@')).map(|(_, d)| d.to_owned())
                });
                let pw =
                    self.users.iter().find(|u| &u.id == user.get_ref()).map(|u| u.password.clone());
                (address.unwrap_or_default(), pw)
            }
            _ => {
                errs.push(self.src.err(
                    node.span().start,
                    format!("node `{}` is not an xmpp-domain or imp node", node.get_ref()),
                ));
                return None;
            }
        };
        let password = match (&s.password, known) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => p,
            (None, None) => {
                errs.push(self.src.err(
                    user.span().start,
                    format!("`{}` is not an account of `{}`", user.get_ref(), node.get_ref()),
                ));
                return None;
            }
        };
        Some(StepAction::XmppSignIn {
            client,
            server: std::net::SocketAddr::new(n.ip, 5222),
            domain,
            user: user.get_ref().clone(),
            password,
        })
    }

    /// `message`, `subscribe` and `approve`.
    fn im(&self, s: &StepSpec, kind: &str, errs: &mut Vec<CheckError>) -> Option<StepAction> {
        use uclab_client::im::ImAction;
        let client = self.known_client(errs, s)?;
        let Some(to) = &s.to else {
            errs.push(self.src.err(s.action.span().start, format!("action `{kind}` needs `to`")));
            return None;
        };
        let jid = to.get_ref();
        let ok = jid.split_once('@').is_some_and(|(u, d)| !u.is_empty() && !d.is_empty());
        let full = jid.contains('/');
        if !ok || (full && kind != "message") {
            let want = if kind == "message" { "user@domain[/resource]" } else { "user@domain" };
            errs.push(self.src.err(to.span().start, format!("bad JID `{jid}`: expected {want}")));
            return None;
        }
        let to = jid.clone();
        let action = match (kind, &s.body) {
            ("message", Some(body)) => ImAction::Message { to, body: body.clone() },
            ("message", None) => {
                errs.push(self.src.err(s.action.span().start, "action `message` needs `body`"));
                return None;
            }
            ("subscribe", _) => ImAction::Subscribe { to },
            _ => ImAction::Approve { to },
        };
        Some(StepAction::Im { client, action })
    }

    /// `presence`.
    fn presence(&self, s: &StepSpec, errs: &mut Vec<CheckError>) -> Option<StepAction> {
        let client = self.known_client(errs, s)?;
        const SHOWS: &[&str] = &["available", "away", "dnd", "xa", "chat", "unavailable"];
        let Some(show) = s.show.as_ref().filter(|v| SHOWS.contains(&v.get_ref().as_str())) else {
            let at = s.show.as_ref().map_or(s.action.span().start, |v| v.span().start);
            errs.push(
                self.src.err(
                    at,
                    format!("action `presence` needs `show`, one of {}", SHOWS.join(", ")),
                ),
            );
            return None;
        };
        let status = s.status.clone().filter(|t| !t.is_empty());
        let action = uclab_client::im::ImAction::Presence { show: show.get_ref().clone(), status };
        Some(StepAction::Im { client, action })
    }

    /// `sip-presence` and `sip-message`: a user of a `sip-domain` node (SPEC FED3) changes
    /// state (`show`: available, busy, away, offline) or sends `body` to `to`.
    fn sip_user(&self, s: &StepSpec, kind: &str, errs: &mut Vec<CheckError>) -> Option<StepAction> {
        use uclab_mocks::sip_domain::Command;
        let node = self.need(errs, s, &s.node, "node")?;
        let Some(n) = self.nodes.iter().find(|n| n.name == node) else {
            let at = s.node.as_ref().map_or(0, |n| n.span().start);
            errs.push(self.src.err(at, format!("unknown node `{node}`")));
            return None;
        };
        let NodeKind::SipDomain(d) = &n.kind else {
            let at = s.node.as_ref().map_or(0, |n| n.span().start);
            errs.push(self.src.err(at, format!("node `{node}` is not a sip-domain node")));
            return None;
        };
        let id = self.need(errs, s, &s.user, "user")?;
        let user = format!("{}@{}", id.to_ascii_lowercase(), d.domain);
        if !d.users.contains_key(&user) {
            let at = s.user.as_ref().map_or(0, |u| u.span().start);
            errs.push(self.src.err(at, format!("`{id}` is not in the sip_users of `{node}`")));
            return None;
        }
        let command = if kind == "sip-presence" {
            let show = self.need(errs, s, &s.show, "show")?;
            let Some(state) = super::federation::sip_state(&show) else {
                let at = s.show.as_ref().map_or(0, |v| v.span().start);
                errs.push(
                    self.src.err(
                        at,
                        format!("unknown state `{show}` (available, busy, away, offline)"),
                    ),
                );
                return None;
            };
            Command::State { user, state }
        } else {
            let to = self.need(errs, s, &s.to, "to")?;
            if !uclab_proto::jid::valid_bare(&to) {
                let at = s.to.as_ref().map_or(0, |t| t.span().start);
                errs.push(self.src.err(at, format!("bad address `{to}`: expected user@domain")));
                return None;
            }
            let Some(body) = s.body.clone() else {
                errs.push(self.src.err(s.action.span().start, "action `sip-message` needs `body`"));
                return None;
            };
            Command::Message { user, to: to.to_ascii_lowercase(), body }
        };
        Some(StepAction::SipUser { node, command })
    }

    /// Call actions.
    fn call(&self, s: &StepSpec, kind: &str, errs: &mut Vec<CheckError>) -> Option<StepAction> {
        use uclab_client::call::CallAction;
        let client = self.known_client(errs, s)?;
        let action = match kind {
            "call" | "watch" | "transfer" => {
                let to = self.need(errs, s, &s.to, "to")?;
                if !uclab_proto::sip::is_token(&to) {
                    let at = s.to.as_ref().map_or(0, |t| t.span().start);
                    errs.push(self.src.err(at, format!("bad number `{to}`")));
                    return None;
                }
                match kind {
                    "watch" => CallAction::Watch { to },
                    "transfer" => CallAction::Transfer { to },
                    _ => CallAction::Dial { to },
                }
            }
            "answer" => CallAction::Answer,
            "end" => CallAction::End,
            "hold" => CallAction::Hold,
            "resume" => CallAction::Resume,
            "mute" => CallAction::Mute,
            "unmute" => CallAction::Unmute,
            "dtmf" => {
                let d = self.need(errs, s, &s.digits, "digits")?;
                let ok =
                    !d.is_empty() && d.chars().all(|c| c.is_ascii_digit() || "*#ABCD".contains(c));
                if !ok {
                    let at = s.digits.as_ref().map_or(0, |t| t.span().start);
                    errs.push(self.src.err(at, format!("bad digits `{d}` (0-9, *, #, A-D)")));
                    return None;
                }
                let info = match s.method.as_ref().map(|m| m.get_ref().as_str()) {
                    None | Some("rfc4733") => false,
                    Some("info") => true,
                    Some(other) => {
                        let at = s.method.as_ref().map_or(0, |t| t.span().start);
                        errs.push(
                            self.src
                                .err(at, format!("unknown DTMF method `{other}` (rfc4733, info)")),
                        );
                        return None;
                    }
                };
                CallAction::Dtmf { digits: d, info }
            }
            other => CallAction::Feature { name: other.to_owned() },
        };
        Some(StepAction::Call { client, action })
    }

    /// `join`, `leave` and `room-message`.
    fn room(
        &self,
        s: &StepSpec,
        kind: &str,
        at: Duration,
        steps: &mut Vec<Step>,
        errs: &mut Vec<CheckError>,
    ) -> Option<StepAction> {
        use uclab_client::im::ImAction;
        let client = self.known_client(errs, s)?;
        let room = self.need(errs, s, &s.room, "room")?;
        let ok = room
            .split_once('@')
            .is_some_and(|(u, d)| !u.is_empty() && !d.is_empty() && !d.contains(['/', '@']));
        if !ok {
            let at = s.room.as_ref().map_or(0, |r| r.span().start);
            errs.push(self.src.err(at, format!("bad room `{room}`: expected room@service")));
            return None;
        }
        let action = match kind {
            "join" => {
                let nick = s.nick.as_ref().map_or_else(|| client.clone(), |n| n.get_ref().clone());
                let action =
                    ImAction::Join { room, nick, persistent: s.persistent, history: s.history };
                StepAction::Im { client, action }
            }
            "leave" => StepAction::Im { client, action: ImAction::Leave { room } },
            _ => {
                let Some(body) = &s.body else {
                    errs.push(
                        self.src.err(s.action.span().start, "action `room-message` needs `body`"),
                    );
                    return None;
                };
                // SPEC IMP5 history limits: `count` numbered messages ("body 1", …).
                let n = match &s.count {
                    None => None,
                    Some(c) if (1..=10_000).contains(c.get_ref()) => Some(*c.get_ref()),
                    Some(c) => {
                        errs.push(self.src.err(c.span().start, "count must be 1 to 10000"));
                        return None;
                    }
                };
                let numbered = |i: u32| match n {
                    Some(_) => format!("{body} {i}"),
                    None => body.clone(),
                };
                let last = n.unwrap_or(1);
                for i in 1..last {
                    let action = ImAction::RoomMessage { room: room.clone(), body: numbered(i) };
                    steps.push(Step {
                        at,
                        action: StepAction::Im { client: client.clone(), action },
                    });
                }
                let action = ImAction::RoomMessage { room, body: numbered(last) };
                StepAction::Im { client, action }
            }
        };
        Some(action)
    }

    /// `move`.
    fn move_client(&self, s: &StepSpec, errs: &mut Vec<CheckError>) -> Option<StepAction> {
        let client = self.known_client(errs, s)?;
        let (Some(zone), Some(dns)) = (&s.zone, &s.dns) else {
            errs.push(self.src.err(s.action.span().start, "action `move` needs `zone` and `dns`"));
            return None;
        };
        self.names.check_zone(errs, self.src, zone);
        for d in dns {
            self.names.check_node(errs, self.src, d, Some("dns"));
        }
        Some(StepAction::Move {
            client,
            zone: zone.get_ref().clone(),
            dns: dns.iter().map(|d| d.get_ref().clone()).collect(),
        })
    }

    /// The user and password a step types: the user is the client address's local part
    /// unless given; the password is the account's unless the step types another one (SPEC
    /// AU5 scenarios).
    fn credentials(
        &self,
        s: &StepSpec,
        address: Option<&str>,
        client: &str,
        errs: &mut Vec<CheckError>,
    ) -> Option<(String, String)> {
        let user = match (&s.user, address) {
            (Some(u), _) => u.get_ref().clone(),
            (None, Some(a)) => a.split('@').next().unwrap_or_default().to_owned(),
            (None, None) => {
                errs.push(self.src.err(
                    s.action.span().start,
                    format!("client `{client}` has no address: give the step a `user`"),
                ));
                return None;
            }
        };
        let password = s
            .password
            .clone()
            .or_else(|| self.users.iter().find(|u| u.id == user).map(|u| u.password.clone()))
            .unwrap_or_else(|| "lab".into());
        Some((user, password))
    }

    /// `phone-credentials` (SPEC MRA3).
    fn phone_credentials(&self, s: &StepSpec, errs: &mut Vec<CheckError>) -> Option<StepAction> {
        let client = self.known_client(errs, s)?;
        let c = self.clients.iter().find(|c| c.name == client)?;
        let (user, password) = self.credentials(s, c.address.as_deref(), &client, errs)?;
        Some(StepAction::PhoneCredentials { client, user, password })
    }

    /// `install`.
    fn install(&self, s: &StepSpec, errs: &mut Vec<CheckError>) -> Option<StepAction> {
        let client = self.known_client(errs, s)?;
        let Some(map) = &s.bootstrap else {
            errs.push(self.src.err(s.action.span().start, "action `install` needs `bootstrap`"));
            return None;
        };
        let bootstrap = bootstrap_switches(errs, self.src, s.action.span().start, map);
        Some(StepAction::Install { client, bootstrap })
    }

    /// Faults of the link between two hosts.
    fn link(&self, s: &StepSpec, a: &str, errs: &mut Vec<CheckError>) -> Option<StepAction> {
        let (Some(x), Some(y)) = (self.host(errs, s, &s.a, "a"), self.host(errs, s, &s.b, "b"))
        else {
            return None;
        };
        let action = match a {
            "blackhole" => StepAction::Blackhole { a: x, b: y },
            "heal" => StepAction::Heal { a: x, b: y },
            "partition" => StepAction::Partition { a: x, b: y },
            "repair" => StepAction::Repair { a: x, b: y },
            "latency" => {
                let Some(v) = &s.value else {
                    errs.push(
                        self.src.err(s.action.span().start, "action `latency` needs `value`"),
                    );
                    return None;
                };
                match parse_duration(v.get_ref()) {
                    Ok(value) => StepAction::Latency { a: x, b: y, value },
                    Err(m) => {
                        errs.push(self.src.err(v.span().start, m));
                        return None;
                    }
                }
            }
            _ => match s.probability {
                Some(p) if (0.0..=1.0).contains(&p) => {
                    StepAction::Loss { a: x, b: y, probability: p }
                }
                _ => {
                    errs.push(self.src.err(
                        s.action.span().start,
                        "action `loss` needs `probability` between 0 and 1",
                    ));
                    return None;
                }
            },
        };
        Some(action)
    }

    /// `firewall`.
    fn firewall(&self, s: &StepSpec, errs: &mut Vec<CheckError>) -> Option<StepAction> {
        let (Some(from), Some(to), Some(verdict)) = (&s.from, &s.to, &s.verdict) else {
            errs.push(
                self.src.err(
                    s.action.span().start,
                    "action `firewall` needs `from`, `to` and `verdict`",
                ),
            );
            return None;
        };
        self.names.check_zone(errs, self.src, from);
        self.names.check_zone(errs, self.src, to);
        let action = match parse_action(verdict) {
            Ok(a) => a,
            Err(m) => {
                errs.push(self.src.err(verdict.span().start, m));
                return None;
            }
        };
        let proto = s.proto.as_ref().map(|p| check_proto(errs, self.src, p));
        Some(StepAction::Firewall(Rule {
            from: from.get_ref().clone(),
            to: to.get_ref().clone(),
            port: s.port,
            proto,
            action,
        }))
    }
}

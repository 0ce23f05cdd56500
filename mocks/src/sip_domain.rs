//! A foreign SIP domain that federates by SIP (SPEC FED3): a Lync/Skype-style server and its
//! users, as the node kind `sip-domain`. Its users are scripted: they hold a state (Available,
//! Busy, Away, Offline), watch the contacts the scenario gives them from the start, and send
//! what the scenario's `sip-presence` and `sip-message` steps say. What they see is recorded
//! as client events under their address (`bob@lync.example.net`), so scenarios can expect
//! it: `im-presence` (`show` is the state their client shows, in lower case), `im-message`,
//! `im-subscription` (a watcher from the other domain) and `im-refused` (`condition` is
//! `sip-<status>`).
//!
//! The domain authorises every federated watcher (its federation policy lets the partner
//! see presence) and answers with the user's state at once.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::mpsc;
use uclab_net::Net;
use uclab_proto::pidf::FederatedState;

use crate::sipfed::serve::{Owner, SipFedSettings, serve as serve_sip};
use crate::sipfed::{Endpoint, Kind, Signal, bare};

/// What a user of the domain does (a scenario step).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `user` changes state.
    State {
        /// `user@domain`.
        user: String,
        /// The new state.
        state: FederatedState,
    },
    /// `user` sends `body` to `to`.
    Message {
        /// `user@domain`.
        user: String,
        /// Recipient, `user@domain` of another domain.
        to: String,
        /// Text.
        body: String,
    },
}

/// The domain's users and what they are scripted to do.
#[derive(Clone, Debug, Default)]
pub struct SipDomainConfig {
    /// Each user (`user@domain`, lower case) with its state at the start.
    pub users: BTreeMap<String, FederatedState>,
    /// The contacts each user watches from the start (`user@domain` of other domains).
    pub contacts: BTreeMap<String, Vec<String>>,
    /// The steps, at run times.
    pub steps: Vec<(Duration, Command)>,
}

struct Users<N> {
    net: N,
    host: String,
    users: BTreeMap<String, FederatedState>,
    contacts: BTreeMap<String, Vec<String>>,
}

impl<N: Net> Users<N> {
    fn event(&self, who: &str, kind: &str, fields: &[(&str, String)]) {
        let mut text = kind.to_owned();
        for (k, v) in fields {
            if v.contains(' ') {
                text.push_str(&format!(" {k}=\"{v}\""));
            } else {
                text.push_str(&format!(" {k}={v}"));
            }
        }
        let fields = fields.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        self.net.transcript().event(self.net.now(), who, kind, fields, &text);
    }

    fn note(&self, text: &str) {
        self.net.transcript().note(self.net.now(), &self.host, text);
    }
}

impl<N: Net> Owner for Users<N> {
    type Input = Command;

    fn known(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    fn start(&mut self, now: Duration, ep: &mut Endpoint) {
        for (user, contacts) in &self.contacts {
            for c in contacts {
                ep.subscribe(now, user, c);
            }
        }
    }

    fn input(&mut self, now: Duration, c: Command, ep: &mut Endpoint) {
        match c {
            Command::State { user, state } => {
                let Some(s) = self.users.get_mut(&user) else { return };
                *s = state;
                self.note(&format!("{user} is now {}", state.as_str()));
                for w in ep.watchers(&user) {
                    ep.notify(now, &user, &w, Some(state));
                }
            }
            Command::Message { user, to, body } => {
                self.note(&format!("{user} sends a message to {to}"));
                ep.message(now, &user, &to, &body);
            }
        }
    }

    fn signal(&mut self, now: Duration, s: Signal, ep: &mut Endpoint) {
        match s {
            Signal::Subscribe { watcher, user } => {
                let state = self.users.get(&user).copied().unwrap_or(FederatedState::Offline);
                let fields = [("from", watcher.clone()), ("type", "subscribe".to_owned())];
                self.event(&user, "im-subscription", &fields);
                ep.notify(now, &user, &watcher, Some(state));
            }
            Signal::Unsubscribe { watcher, user } => {
                let fields = [("from", watcher), ("type", "unsubscribe".to_owned())];
                self.event(&user, "im-subscription", &fields);
            }
            Signal::Presence { from, to, state } => {
                let fields = [("from", from), ("show", state.as_str().to_ascii_lowercase())];
                self.event(&to, "im-presence", &fields);
            }
            Signal::Message { from, to, body } => {
                self.event(&to, "im-message", &[("from", from), ("body", body)]);
            }
            Signal::Refused { kind, local, remote, code, .. } => {
                let what = if kind == Kind::Message { "message" } else { "subscription" };
                self.note(&format!("{local}'s {what} to {remote} refused: SIP {code}"));
                let fields = [("to", remote), ("condition", format!("sip-{code}"))];
                self.event(&bare(&local), "im-refused", &fields);
            }
        }
    }
}

/// Runs the domain's server until it stops: its users watch their contacts, then do what
/// the steps say when they say it.
pub async fn serve<N: Net + Clone + 'static>(
    net: N,
    s: Rc<SipFedSettings>,
    cfg: Rc<SipDomainConfig>,
) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel(1024);
    let owner = Users {
        net: net.clone(),
        host: s.host.clone(),
        users: cfg.users.clone(),
        contacts: cfg.contacts.clone(),
    };
    let clock = net.clone();
    let script = cfg.clone();
    tokio::task::spawn_local(async move {
        // Steps already past (a node restarted after them) are not done again.
        for (at, c) in script.steps.iter().filter(|(at, _)| *at >= clock.now()) {
            uclab_net::time::sleep(at.saturating_sub(clock.now())).await;
            if tx.send(c.clone()).await.is_err() {
                return;
            }
        }
    });
    serve_sip(net, s, owner, rx).await
}

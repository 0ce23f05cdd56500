//! Replays Prosody's scansion scripts (corpora/xmpp/prosody-scansion) against the IM&P mock's
//! XMPP server (SPEC IMP1): the sans-IO sessions and the cluster router, wired as the node
//! wires them, with STARTTLS acknowledged in place (the scripts test XMPP, not TLS).
//!
//! Our reading of a script, as the scansion tool reads it: `Name receives:` takes the next
//! stanza that client got and requires it to match; a match means the same element name,
//! every attribute the script gives with the same value (`{scansion:any}` matches any value;
//! the default `jabber:client` namespace is implied), the script's child elements matched in
//! order among the received ones, and the same trimmed text where the script has text.
//! Stanzas a client gets after its last expected one are not checked.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use uclab_mocks::imp::router::{Limits, Router, SessionId};
use uclab_mocks::imp::xmpp::{Action, ServerSession};
use uclab_mocks::imp::{ImpConfig, ImpState, ImpUser};
use uclab_proto::xmpp::{self, Element, Node};

/// The scripts inside IMP1, each of which must pass.
const SCRIPTS: &[&str] = &[
    "basic.scs",
    "basic_message.scs",
    "basic_roster.scs",
    "presence_preapproval.scs",
    "keep_full_sub_req.scs",
];

#[derive(Debug, Default)]
struct ClientSpec {
    jid: String,
    password: String,
    resource: Option<String>,
}

#[derive(Debug)]
enum Step {
    Connects(String),
    Disconnects(String),
    Sends(String, String),
    Receives(String, String),
}

/// Parses a script into its clients and steps (with line numbers for errors).
/// A script: its clients by name, and its steps with their line numbers.
type Script = (BTreeMap<String, ClientSpec>, Vec<(usize, Step)>);

fn parse(text: &str) -> Result<Script, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut clients: BTreeMap<String, ClientSpec> = BTreeMap::new();
    let mut steps = Vec::new();
    let mut current: Option<String> = None;
    let mut in_steps = false;
    let mut i = 0;
    while i < lines.len() {
        let (n, line) = (i + 1, lines[i]);
        i += 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if !in_steps {
            if t.chars().all(|c| c == '-') {
                in_steps = true;
            } else if let Some(name) = t.strip_prefix("[Client] ") {
                current = Some(name.to_owned());
                clients.insert(name.to_owned(), ClientSpec::default());
            } else if let (Some((k, v)), Some(c)) = (t.split_once(':'), &current) {
                let spec = clients.get_mut(c).ok_or("no client")?;
                let v = v.trim().to_owned();
                match k.trim() {
                    "jid" => spec.jid = v,
                    "password" => spec.password = v,
                    "resource" => spec.resource = Some(v),
                    other => return Err(format!("line {n}: unknown client field `{other}`")),
                }
            } else {
                return Err(format!("line {n}: unexpected `{t}`"));
            }
            continue;
        }
        let block = |i: &mut usize| {
            let mut xml = String::new();
            while *i < lines.len()
                && (lines[*i].starts_with([' ', '\t']) || lines[*i].trim().is_empty())
            {
                xml.push_str(lines[*i]);
                xml.push('\n');
                *i += 1;
            }
            xml
        };
        let step = if let Some(c) = t.strip_suffix(" connects") {
            Step::Connects(c.to_owned())
        } else if let Some(c) = t.strip_suffix(" disconnects") {
            Step::Disconnects(c.to_owned())
        } else if let Some(c) = t.strip_suffix(" sends:") {
            Step::Sends(c.to_owned(), block(&mut i))
        } else if let Some(c) = t.strip_suffix(" receives:") {
            Step::Receives(c.to_owned(), block(&mut i))
        } else {
            return Err(format!("line {n}: unknown step `{t}`"));
        };
        steps.push((n, step));
    }
    Ok((clients, steps))
}

struct Conn {
    session: ServerSession,
    /// The session id the router delivers to.
    id: SessionId,
    jid: String,
    received: VecDeque<Element>,
    open: bool,
}

struct Lab {
    cfg: Rc<ImpConfig>,
    state: Rc<RefCell<ImpState>>,
    router: Router,
    conns: BTreeMap<String, Conn>,
    specs: BTreeMap<String, ClientSpec>,
    /// Full JIDs of clients that have connected (they stay known after they disconnect).
    jids: BTreeMap<String, String>,
}

const NOW: Duration = Duration::from_secs(1_767_603_600);

impl Lab {
    fn new(specs: BTreeMap<String, ClientSpec>) -> Self {
        let domain = specs
            .values()
            .find_map(|c| c.jid.split_once('@').map(|(_, d)| d.split('/').next().unwrap_or(d)))
            .unwrap_or("localhost")
            .to_owned();
        let users = specs
            .values()
            .map(|c| ImpUser {
                id: c.jid.split('@').next().unwrap_or("").to_owned(),
                password: c.password.clone(),
                primary: domain.clone(),
                secondary: None,
            })
            .collect();
        let cfg = ImpConfig {
            host: domain.clone(),
            domain: domain.clone(),
            users,
            relogin: (1, 2),
            peer: None,
            lockout: None,
            trusted_peers: Vec::new(),
        };
        Self {
            cfg: Rc::new(cfg),
            state: Rc::new(RefCell::new(ImpState::new(7))),
            router: Router::new(&domain, Limits::default()),
            conns: BTreeMap::new(),
            specs,
            jids: BTreeMap::new(),
        }
    }

    /// Feeds `bytes` to `name`'s session and carries out what it asks, as the node does;
    /// then collects what the router delivered to every session.
    fn feed(&mut self, name: &str, bytes: &str) -> Result<(), String> {
        let c = self.conns.get_mut(name).ok_or(format!("{name} is not connected"))?;
        c.session.handle_bytes(bytes.as_bytes());
        while let Some(a) = c.session.poll() {
            match a {
                Action::Send(x) => {
                    // Stanzas for the client; stream headers, features and SASL are not.
                    if let Ok(e) = xmpp::parse_element(x.as_bytes())
                        && matches!(e.name.as_str(), "iq" | "message" | "presence")
                    {
                        c.received.push_back(e);
                    }
                }
                Action::Bound(j) => {
                    self.router.bind(&j, c.id);
                    c.jid = j;
                }
                Action::Route(s) => self.router.handle(s, NOW),
                Action::Close => c.open = false,
                Action::StartTls | Action::Sent(_) => {}
            }
        }
        self.collect();
        Ok(())
    }

    /// Hands what the router delivered to each session's connection, as the node's I/O does.
    fn collect(&mut self) {
        while let Some((id, e)) = self.router.poll_output() {
            if let Some(c) = self.conns.values_mut().find(|c| c.id == id) {
                c.received.push_back(e);
            }
        }
    }

    fn connect(&mut self, name: &str) -> Result<(), String> {
        let spec = self.specs.get(name).ok_or(format!("unknown client {name}"))?;
        let (local, rest) = spec.jid.split_once('@').ok_or("bad jid")?;
        let resource = spec.resource.clone().or(rest.split_once('/').map(|(_, r)| r.to_owned()));
        let auth = xmpp::sasl_plain(local, &spec.password);
        let session = ServerSession::new(self.cfg.clone(), self.state.clone());
        let id = self.conns.values().map(|c| c.id).max().unwrap_or(0) + 1;
        let conn = Conn { session, id, jid: String::new(), received: VecDeque::new(), open: true };
        self.conns.insert(name.to_owned(), conn);
        let header = xmpp::stream_header(("to", &self.cfg.domain), None);
        self.feed(name, &header)?;
        self.feed(name, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")?;
        self.feed(name, &header)?;
        let auth = format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
        );
        self.feed(name, &auth)?;
        self.feed(name, &header)?;
        let res = resource.map(|r| format!("<resource>{r}</resource>")).unwrap_or_default();
        let bind = format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{res}</bind></iq>"
        );
        self.feed(name, &bind)?;
        let c = &mut self.conns.get_mut(name).ok_or("gone")?;
        if c.jid.is_empty() {
            return Err(format!("{name} did not sign in"));
        }
        c.received.clear(); // the bind result
        self.jids.insert(name.to_owned(), c.jid.clone());
        Ok(())
    }

    fn disconnect(&mut self, name: &str) -> Result<(), String> {
        if self.conns.get(name).is_none_or(|c| !c.open) {
            return Ok(()); // already gone
        }
        self.feed(name, "</stream:stream>")?;
        if let Some(c) = self.conns.remove(name) {
            self.router.unbind(&c.jid);
        }
        self.collect();
        Ok(())
    }

    /// `${Name's full JID}` and `${Name's JID}`.
    fn substitute(&self, xml: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = xml;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let end = rest[at..].find('}').ok_or("unclosed ${")? + at;
            let var = &rest[at + 2..end];
            let value = if let Some(n) = var.strip_suffix("'s full JID") {
                self.jids.get(n).cloned().ok_or(format!("{n} has no full JID yet"))?
            } else if let Some(n) = var.strip_suffix("'s JID") {
                let spec = self.specs.get(n).ok_or(format!("unknown client {n}"))?;
                spec.jid.split('/').next().unwrap_or("").to_owned()
            } else {
                return Err(format!("unknown variable {var}"));
            };
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn matches(want: &Element, got: &Element, top: bool) -> bool {
    if want.name != got.name {
        return false;
    }
    for (k, v) in &want.attrs {
        if top && k == "xmlns" && v == "jabber:client" {
            continue;
        }
        match got.get(k) {
            Some(g) if v == "{scansion:any}" || g == v => {}
            _ => return false,
        }
    }
    let text = want.text();
    if !text.trim().is_empty() && text.trim() != got.text().trim() {
        return false;
    }
    let mut got_kids = got.elements();
    want.elements().all(|w| got_kids.any(|g| matches(w, g, false)))
}

/// Drops whitespace-only text so that a script's indentation does not count.
fn strip(mut e: Element) -> Element {
    e.children.retain(|c| !matches!(c, Node::Text(t) if t.trim().is_empty()));
    e.children = e
        .children
        .into_iter()
        .map(|c| match c {
            Node::Element(x) => Node::Element(strip(x)),
            t => t,
        })
        .collect();
    e
}

fn run(text: &str) -> Result<usize, String> {
    let (clients, steps) = parse(text)?;
    let mut lab = Lab::new(clients);
    let mut checked = 0;
    for (line, step) in steps {
        let at = |e: String| format!("line {line}: {e}");
        match step {
            Step::Connects(c) => lab.connect(&c).map_err(at)?,
            Step::Disconnects(c) => lab.disconnect(&c).map_err(at)?,
            Step::Sends(c, xml) => {
                let xml = lab.substitute(&xml).map_err(at)?;
                lab.feed(&c, xml.trim()).map_err(at)?;
            }
            Step::Receives(c, xml) => {
                let xml = lab.substitute(&xml).map_err(at)?;
                let want = xmpp::parse_element(xml.trim().as_bytes())
                    .map_err(|e| at(format!("script XML: {e}")))?;
                let want = strip(want);
                let conn = lab.conns.get_mut(&c).ok_or_else(|| at(format!("{c} not connected")))?;
                let got = conn
                    .received
                    .pop_front()
                    .ok_or_else(|| at(format!("{c} expected {} and got nothing", want.to_xml())))?;
                if !matches(&want, &got, true) {
                    return Err(at(format!(
                        "{c} expected\n  {}\ngot\n  {}",
                        want.to_xml(),
                        got.to_xml()
                    )));
                }
                checked += 1;
            }
        }
    }
    Ok(checked)
}

#[test]
fn prosody_scansion_scripts_inside_imp1_pass() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpora/xmpp/prosody-scansion");
    let mut failures = Vec::new();
    for name in SCRIPTS {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (the corpus ships with the repository)", path.display())
        });
        match run(&text) {
            Ok(n) => {
                eprintln!("{name}: {n} expected stanzas matched");
                assert!(n > 0, "{name}: nothing checked");
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The harness itself must catch a server that answers wrongly.
#[test]
fn harness_catches_a_wrong_answer() {
    let script = "[Client] Romeo\n\tjid: user@localhost\n\tpassword: password\n\n-----\n\n\
                  Romeo connects\n\nRomeo sends:\n\t<presence/>\n\nRomeo receives:\n\t<presence type='unavailable'/>\n";
    let e = run(script).expect_err("a wrong expectation must fail");
    assert!(e.contains("expected"), "{e}");
    let script = script.replace(" type='unavailable'", "");
    assert_eq!(run(&script), Ok(1));
}

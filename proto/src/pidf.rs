//! Presence for SIP federation with a Lync/Skype-style domain (SPEC FED3): the PIDF documents
//! (RFC 3863) such a domain sends and is sent, with the RPID activities (RFC 4480) its
//! federated subset of MS-PRES uses, and SPEC FED3's state map between IM&P's states and the
//! foreign domain's (XMPP `show` values mapped as RFC 7248 §3 does: `dnd` is busy, `away` and
//! `xa` away).
//!
//! IM&P's rich states reach the foreign domain coarsened ([`CiscoState::federated`]: DND,
//! Busy, On the phone and In a meeting show as Busy; Idle as Away), and the foreign domain's
//! states come back as plain XMPP presence ([`FederatedState::to_xmpp`]). Documents are read
//! with the XMPP parser's limits (no DTD, bounded depth) and at most [`MAX_PIDF`] bytes.

use crate::xmpp::{Element, escape, parse_element};

/// Largest PIDF document read.
pub const MAX_PIDF: usize = 64 * 1024;

/// An IM&P user's state as the Cisco clients show it (the rows of SPEC FED3's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CiscoState {
    /// Green.
    Available,
    /// Away after inactivity (XMPP `away` or `xa` without a reason).
    Idle,
    /// Busy (XMPP `dnd` with the status "Busy").
    Busy,
    /// Do not disturb (XMPP `dnd`).
    Dnd,
    /// On a call (SPEC CC7: `away`, "On the phone").
    OnThePhone,
    /// In a meeting (calendar integration: `away`, "In a meeting").
    InAMeeting,
    /// Signed out.
    Offline,
}

/// A Lync/Skype-style domain's state of a user (what its clients show).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FederatedState {
    /// Available.
    Available,
    /// Busy.
    Busy,
    /// Away.
    Away,
    /// Offline.
    Offline,
}

/// Why a PIDF document was not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PidfError {
    /// Larger than [`MAX_PIDF`].
    #[error("PIDF document larger than {MAX_PIDF} bytes")]
    TooBig,
    /// Not XML, or restricted XML (a DTD, too deep).
    #[error("PIDF: {0}")]
    Xml(String),
    /// XML, but not a `<presence>` document with a tuple's basic status.
    #[error("PIDF: {0}")]
    NotPidf(&'static str),
}

impl CiscoState {
    /// The state an XMPP presence stands for: its `type`, `show` and `status`.
    pub fn from_xmpp(kind: Option<&str>, show: Option<&str>, status: Option<&str>) -> Self {
        if kind == Some("unavailable") {
            return Self::Offline;
        }
        let status = status.map(str::trim).unwrap_or("");
        match show {
            Some("dnd") if status.eq_ignore_ascii_case("busy") => Self::Busy,
            Some("dnd") => Self::Dnd,
            Some("away" | "xa") if status.eq_ignore_ascii_case("on the phone") => Self::OnThePhone,
            Some("away" | "xa") if status.eq_ignore_ascii_case("in a meeting") => Self::InAMeeting,
            Some("away" | "xa") => Self::Idle,
            _ => Self::Available,
        }
    }

    /// SPEC FED3: what the foreign domain is shown.
    pub fn federated(self) -> FederatedState {
        match self {
            Self::Dnd | Self::Busy | Self::OnThePhone | Self::InAMeeting => FederatedState::Busy,
            Self::Idle => FederatedState::Away,
            Self::Available => FederatedState::Available,
            Self::Offline => FederatedState::Offline,
        }
    }
}

impl FederatedState {
    /// The XMPP presence a watcher here gets: its `type` (`None`: available) and `show`.
    pub fn to_xmpp(self) -> (Option<&'static str>, Option<&'static str>) {
        match self {
            Self::Available => (None, None),
            Self::Busy => (None, Some("dnd")),
            Self::Away => (None, Some("away")),
            Self::Offline => (Some("unavailable"), None),
        }
    }

    /// The name the foreign domain's clients show.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "Available",
            Self::Busy => "Busy",
            Self::Away => "Away",
            Self::Offline => "Offline",
        }
    }

    /// The PIDF document of `entity` (`sip:user@domain`) in this state.
    pub fn pidf(self, entity: &str) -> String {
        let basic = if self == Self::Offline { "closed" } else { "open" };
        let activity = match self {
            Self::Busy => "<rpid:activities><rpid:busy/></rpid:activities>",
            Self::Away => "<rpid:activities><rpid:away/></rpid:activities>",
            Self::Available | Self::Offline => "",
        };
        let person = if activity.is_empty() {
            String::new()
        } else {
            format!("<dm:person id=\"p1\">{activity}</dm:person>")
        };
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence \
             xmlns=\"urn:ietf:params:xml:ns:pidf\" \
             xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" \
             xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"{}\">\r\n\
             <tuple id=\"t1\"><status><basic>{basic}</basic></status>\
             <note>{}</note></tuple>\r\n{person}</presence>\r\n",
            escape(entity),
            self.as_str()
        )
    }

    /// Reads the state a PIDF document gives: `closed` is offline; `open` with a `busy` (or
    /// `on-the-phone`, `meeting`) activity busy, with `away` (or `sleeping`, `vacation`)
    /// away, else available. Prefixes are ignored: `rpid:busy` and a default-namespaced
    /// `busy` are one.
    pub fn from_pidf(body: &[u8]) -> Result<Self, PidfError> {
        if body.len() > MAX_PIDF {
            return Err(PidfError::TooBig);
        }
        let doc = parse_element(body).map_err(|e| PidfError::Xml(e.to_string()))?;
        if local(&doc.name) != "presence" {
            return Err(PidfError::NotPidf("not a <presence> document"));
        }
        let basic = doc
            .elements()
            .filter(|e| local(&e.name) == "tuple")
            .filter_map(|t| child(t, "status").and_then(|s| child(s, "basic")))
            .map(|b| b.text().trim().to_ascii_lowercase())
            .next()
            .ok_or(PidfError::NotPidf("no tuple with a basic status"))?;
        if basic != "open" {
            return Ok(Self::Offline);
        }
        // Activities sit in a person element (RFC 4479) or, from older peers, in a tuple.
        let holders = doc.elements().filter(|e| matches!(local(&e.name), "person" | "tuple"));
        let activities: Vec<&str> = holders
            .filter_map(|h| child(h, "activities"))
            .flat_map(Element::elements)
            .map(|a| local(&a.name))
            .collect();
        let any = |names: &[&str]| activities.iter().any(|a| names.contains(a));
        Ok(if any(&["busy", "on-the-phone", "meeting", "performance", "presentation"]) {
            Self::Busy
        } else if any(&["away", "sleeping", "vacation", "steering", "travel"]) {
            Self::Away
        } else {
            Self::Available
        })
    }
}

/// A qualified name's local part (`rpid:busy` → `busy`).
fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// The first child element with local name `name`.
fn child<'a>(e: &'a Element, name: &str) -> Option<&'a Element> {
    e.elements().find(|c| local(&c.name) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row: the state, its XMPP presence here (`type`, `show`, `status`), and what the
    /// foreign domain shows.
    type Row = (
        CiscoState,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        FederatedState,
    );

    /// SPEC FED3's table, one row each.
    const ROWS: [Row; 7] = [
        (CiscoState::Dnd, None, Some("dnd"), None, FederatedState::Busy),
        (CiscoState::Busy, None, Some("dnd"), Some("Busy"), FederatedState::Busy),
        (CiscoState::OnThePhone, None, Some("away"), Some("On the phone"), FederatedState::Busy),
        (CiscoState::InAMeeting, None, Some("away"), Some("In a meeting"), FederatedState::Busy),
        (CiscoState::Idle, None, Some("away"), None, FederatedState::Away),
        (CiscoState::Available, None, None, None, FederatedState::Available),
        (CiscoState::Offline, Some("unavailable"), None, None, FederatedState::Offline),
    ];

    #[test]
    fn fed3_each_row_outbound_from_xmpp_through_pidf() {
        for (state, kind, show, status, shown) in ROWS {
            let got = CiscoState::from_xmpp(kind, show, status);
            assert_eq!(got, state, "{kind:?} {show:?} {status:?}");
            assert_eq!(got.federated(), shown, "{state:?}");
            // What goes on the wire reads back as the same state.
            let doc = shown.pidf("sip:alice@example.com");
            assert_eq!(FederatedState::from_pidf(doc.as_bytes()), Ok(shown), "{doc}");
        }
    }

    #[test]
    fn fed3_each_foreign_state_inbound_to_xmpp_and_back() {
        for shown in [
            FederatedState::Available,
            FederatedState::Busy,
            FederatedState::Away,
            FederatedState::Offline,
        ] {
            let (kind, show) = shown.to_xmpp();
            // A watcher here sees a state that maps back to the same foreign state.
            assert_eq!(CiscoState::from_xmpp(kind, show, None).federated(), shown, "{shown:?}");
        }
    }

    #[test]
    fn pidf_from_other_writers_and_refusals() {
        // A default-namespaced activity in a tuple (an older peer), a closed tuple, xa.
        let busy = br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:l@lync.example.net"><tuple id="a"><status><basic>open</basic></status><activities xmlns="urn:ietf:params:xml:ns:pidf:rpid"><on-the-phone/></activities></tuple></presence>"#;
        assert_eq!(FederatedState::from_pidf(busy), Ok(FederatedState::Busy));
        let closed = br#"<presence entity="x"><tuple id="a"><status><basic>closed</basic></status></tuple></presence>"#;
        assert_eq!(FederatedState::from_pidf(closed), Ok(FederatedState::Offline));
        assert_eq!(CiscoState::from_xmpp(None, Some("xa"), None), CiscoState::Idle);
        let no_tuple = br#"<presence entity="x"/>"#;
        assert!(matches!(FederatedState::from_pidf(no_tuple), Err(PidfError::NotPidf(_))));
        let dtd = br#"<!DOCTYPE presence [<!ENTITY a "b">]><presence/>"#;
        assert!(matches!(FederatedState::from_pidf(dtd), Err(PidfError::Xml(_))));
        let deep = "<a>".repeat(100).into_bytes();
        assert!(matches!(FederatedState::from_pidf(&deep), Err(PidfError::Xml(_))));
        let big = vec![b' '; MAX_PIDF + 1];
        assert_eq!(FederatedState::from_pidf(&big), Err(PidfError::TooBig));
        // An entity with markup is escaped in what is written.
        let doc = FederatedState::Available.pidf("sip:<script>@x");
        assert!(doc.contains("sip:&lt;script&gt;@x") && !doc.contains("<script>"));
    }
}

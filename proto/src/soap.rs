//! IM&P's EPAS SOAP interface (WIRE.md "IM&P sign-in"; SPEC AU4, HA1): SOAP 1.2 over HTTPS
//! 8443 at [`PATH`]. `login` gives a session key; with the key in the SOAP header,
//! `get-all-config` gives the presence domain and the user's primary and secondary nodes, and
//! `get-onetime-password` the password the XMPP sign-in uses (SASL `CISCO-VTG-TOKEN`).
//!
//! WIRE.md gives the operations, the namespace and the login body; the response shapes below
//! (`<success>` holding the value, `<param name=…>` in the configuration, a SOAP 1.2 fault for
//! refusals) are ours, in the same style.

use crate::uds::{Doc, XmlError};
use crate::xmpp::escape;

/// Where the service listens.
pub const PATH: &str = "/EPASSoap/service/v80";
/// The EPAS namespace.
pub const NS: &str = "urn:cisco:epas:soap";
/// SOAP 1.2 envelope namespace.
pub const SOAP_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
/// `SOAPAction` of an operation.
pub fn action(op: &str) -> String {
    format!("{NS}/EpasSoapServiceInterface/{op}")
}

/// Configuration parameter: the presence (XMPP) domain.
pub const P_DOMAIN: &str = "Presence.Domain";
/// Configuration parameter: the user's primary IM&P node.
pub const P_PRIMARY: &str = "Presence.PrimaryServer";
/// Configuration parameter: the user's secondary IM&P node (its subcluster peer).
pub const P_SECONDARY: &str = "Presence.SecondaryServer";
/// Configuration parameter: re-login lower limit, seconds (SPEC HA2).
pub const P_RELOGIN_LOWER: &str = "Client.ReloginLowerLimit";
/// Configuration parameter: re-login upper limit, seconds (SPEC HA2).
pub const P_RELOGIN_UPPER: &str = "Client.ReloginUpperLimit";

fn envelope(session_key: Option<&str>, body: &str) -> String {
    let header = session_key
        .map(|k| {
            format!("<soap:Header><ns1:session-key xmlns:ns1=\"{NS}\">{}</ns1:session-key></soap:Header>", escape(k))
        })
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope xmlns:soap=\"{SOAP_NS}\">{header}<soap:Body>{body}</soap:Body></soap:Envelope>"
    )
}

/// The `login` request (WIRE.md).
pub fn login_request(user: &str, password: &str, client_version: &str) -> String {
    envelope(
        None,
        &format!(
            "<ns1:login xmlns:ns1=\"{NS}\" client-type=\"CUPC\" client-version=\"{}\" force=\"true\"><ns1:username>{}</ns1:username><ns1:password>{}</ns1:password></ns1:login>",
            escape(client_version),
            escape(user),
            escape(password)
        ),
    )
}

/// A request carrying the session key: `get-all-config` or `get-onetime-password`.
pub fn keyed_request(op: &str, session_key: &str) -> String {
    envelope(Some(session_key), &format!("<ns1:{op} xmlns:ns1=\"{NS}\"/>"))
}

/// A successful answer to `op` carrying `value` (`login-resp/success/<key>`).
pub fn success_response(op: &str, value: &str) -> String {
    envelope(
        None,
        &format!(
            "<ns1:{op}-resp xmlns:ns1=\"{NS}\"><ns1:success>{}</ns1:success></ns1:{op}-resp>",
            escape(value)
        ),
    )
}

/// The `get-all-config` answer.
pub fn config_response(params: &[(&str, &str)]) -> String {
    let mut b = format!("<ns1:get-all-config-resp xmlns:ns1=\"{NS}\"><ns1:config>");
    for (k, v) in params {
        b.push_str(&format!("<ns1:param name=\"{}\">{}</ns1:param>", escape(k), escape(v)));
    }
    b.push_str("</ns1:config></ns1:get-all-config-resp>");
    envelope(None, &b)
}

/// A SOAP 1.2 fault: `code` is `Sender` or `Receiver`, `subcode` names the EPAS reason.
pub fn fault(code: &str, subcode: &str, reason: &str) -> String {
    envelope(
        None,
        &format!(
            "<soap:Fault><soap:Code><soap:Value>soap:{}</soap:Value><soap:Subcode><soap:Value>ns1:{}</soap:Value></soap:Subcode></soap:Code><soap:Reason><soap:Text xml:lang=\"en\">{}</soap:Text></soap:Reason></soap:Fault>",
            escape(code),
            escape(subcode),
            escape(reason)
        ),
    )
}

/// A parsed EPAS request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `login`.
    Login {
        /// User id.
        user: String,
        /// Password (never logged).
        password: String,
    },
    /// Any other operation, with the session key of the header.
    Keyed {
        /// Operation name (`get-all-config`, `get-onetime-password`, …).
        op: String,
        /// The header's session key (empty when missing).
        session_key: String,
    },
}

/// The operation element of a SOAP body: the first element under `Body`.
fn body_op(d: &Doc) -> Option<&str> {
    d.elements.iter().find_map(|e| {
        let rest = e.path.strip_prefix("Body/")?;
        (!rest.contains('/')).then_some(rest)
    })
}

/// Parses a request body (the `SOAPAction` header is informative; the body decides).
pub fn parse_request(bytes: &[u8]) -> Result<Request, XmlError> {
    let d = Doc::expect(bytes, "Envelope")?;
    let op = body_op(&d).ok_or_else(|| XmlError::Malformed("empty SOAP body".into()))?;
    if op == "login" {
        return Ok(Request::Login {
            user: d.text("Body/login/username").unwrap_or("").to_owned(),
            password: d.text("Body/login/password").unwrap_or("").to_owned(),
        });
    }
    Ok(Request::Keyed {
        op: op.to_owned(),
        session_key: d.text("Header/session-key").unwrap_or("").to_owned(),
    })
}

/// What an answer said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// `<op>-resp/success`: its value (session key, one-time password).
    Success(String),
    /// `get-all-config-resp`: the parameters.
    Config(Vec<(String, String)>),
    /// A SOAP fault: subcode and reason.
    Fault {
        /// EPAS reason code (`AuthenticationFailed`, `InvalidSession`, …).
        subcode: String,
        /// Human text.
        reason: String,
    },
}

/// Parses an answer.
pub fn parse_response(bytes: &[u8]) -> Result<Response, XmlError> {
    let d = Doc::expect(bytes, "Envelope")?;
    let op = body_op(&d).ok_or_else(|| XmlError::Malformed("empty SOAP body".into()))?;
    if op == "Fault" {
        let subcode = d.text("Body/Fault/Code/Subcode/Value").unwrap_or("");
        let subcode = subcode.rsplit(':').next().unwrap_or(subcode).to_owned();
        let reason = d.text("Body/Fault/Reason/Text").unwrap_or("").to_owned();
        return Ok(Response::Fault { subcode, reason });
    }
    if op == "get-all-config-resp" {
        let params = d
            .elements
            .iter()
            .filter(|e| e.path == "Body/get-all-config-resp/config/param")
            .map(|e| {
                let name = e.attrs.iter().find(|(k, _)| k == "name").map_or("", |(_, v)| v);
                (name.to_owned(), e.text.trim().to_owned())
            })
            .collect();
        return Ok(Response::Config(params));
    }
    match d.text(&format!("Body/{op}/success")) {
        Some(v) => Ok(Response::Success(v.to_owned())),
        None => Err(XmlError::Malformed(format!("<{op}> without <success>"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn au4_login_config_and_otp_round_trip() {
        let req = login_request("alice", "l<a>b", "14.3");
        assert!(req.contains("client-type=\"CUPC\""));
        assert!(req.contains("<ns1:password>l&lt;a&gt;b</ns1:password>"));
        assert_eq!(
            parse_request(req.as_bytes()).unwrap(),
            Request::Login { user: "alice".into(), password: "l<a>b".into() }
        );
        let req = keyed_request("get-onetime-password", "k-1");
        assert_eq!(
            parse_request(req.as_bytes()).unwrap(),
            Request::Keyed { op: "get-onetime-password".into(), session_key: "k-1".into() }
        );
        let r = success_response("login", "k-1");
        assert_eq!(parse_response(r.as_bytes()).unwrap(), Response::Success("k-1".into()));
        let r = config_response(&[(P_DOMAIN, "example.com"), (P_PRIMARY, "imp1.example.com")]);
        assert_eq!(
            parse_response(r.as_bytes()).unwrap(),
            Response::Config(vec![
                (P_DOMAIN.into(), "example.com".into()),
                (P_PRIMARY.into(), "imp1.example.com".into())
            ])
        );
        let f = fault("Sender", "AuthenticationFailed", "Invalid username or password");
        assert_eq!(
            parse_response(f.as_bytes()).unwrap(),
            Response::Fault {
                subcode: "AuthenticationFailed".into(),
                reason: "Invalid username or password".into()
            }
        );
    }

    #[test]
    fn bad_documents_are_errors() {
        assert!(parse_request(b"<Envelope><Body/></Envelope>").is_err());
        assert!(parse_request(b"<html/>").is_err());
        assert!(parse_response(success_response("login", "k").as_bytes()[..40].as_ref()).is_err());
        let no_success = envelope(None, "<ns1:login-resp xmlns:ns1=\"urn:cisco:epas:soap\"/>");
        assert!(parse_response(no_success.as_bytes()).is_err());
    }
}

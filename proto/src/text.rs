//! Small text codecs shared by the protocol modules.

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Appends `b` as lower-case hex, two digits a byte.
pub fn push_hex(out: &mut String, b: &[u8]) {
    const H: &[u8; 16] = b"0123456789abcdef";
    out.reserve(b.len() * 2);
    for &x in b {
        out.push(char::from(H[usize::from(x >> 4)]));
        out.push(char::from(H[usize::from(x & 15)]));
    }
}

/// `b` as lower-case hex, two digits a byte.
pub fn hex_lower(b: &[u8]) -> String {
    let mut s = String::new();
    push_hex(&mut s, b);
    s
}

/// Percent-decodes a URL query component (`+` is a space, as in HTML forms; RFC 3986 §2.1).
/// Bad escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let decoded = match b[i] {
            b'%' if i + 2 < b.len() => hex(b[i + 1]).zip(hex(b[i + 2])).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (decoded, b[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes text or an attribute value for XML, dropping the control characters XML 1.0 cannot
/// carry at all.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => o.push(c),
        }
    }
    o
}

/// The text of an entity or character reference quick-xml reports (`&amp;`, `&#233;`). Only
/// the five predefined entities exist: there is never a DTD to declare others.
pub fn xml_reference(r: &quick_xml::events::BytesRef<'_>) -> Result<String, String> {
    let name = r.decode().map_err(|e| e.to_string())?.into_owned();
    match r.resolve_char_ref() {
        Ok(Some(c)) => Ok(c.to_string()),
        Ok(None) => match name.as_str() {
            "amp" => Ok("&".into()),
            "lt" => Ok("<".into()),
            "gt" => Ok(">".into()),
            "quot" => Ok("\"".into()),
            "apos" => Ok("'".into()),
            _ => Err(format!("unknown entity &{name};")),
        },
        Err(e) => Err(e.to_string()),
    }
}

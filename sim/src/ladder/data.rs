//! messages.jsonl: for each message line of transcript.txt, the frame that carries it in
//! capture.pcapng and what its sender wrote (plaintext under TLS), so the ladder can be drawn
//! again from a finished run. One JSON object per line:
//! `{"line":12,"frame":34,"cut":false,"text":"REGISTER sip:…"}`, with `"hex"` in place of
//! `"text"` for bytes that are not text (DNS, STUN).

use serde_json::Value;

/// What the run knows of one message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageRecord {
    /// Its line in transcript.txt (1-based; line 1 is the header).
    pub line: usize,
    /// Its frame number in capture.pcapng, when one carried it.
    pub frame: Option<u32>,
    /// What its sender wrote, at most [`uclab_net::DETAIL_MAX`] bytes.
    pub bytes: Vec<u8>,
    /// Whether more was written than is kept.
    pub cut: bool,
}

/// What a finished run left in `dir` (transcript.txt, messages.jsonl, report.json), read
/// back for the ladder. Errors name the file, and the line and column where there is one.
pub fn read_run(dir: &std::path::Path) -> Result<super::Source<'static>, String> {
    let read = |f: &str| {
        let p = dir.join(f);
        std::fs::read_to_string(&p)
            .map_err(|e| format!("{}: {e} (is this a uclab run's output directory?)", p.display()))
    };
    let transcript = read("transcript.txt")?;
    let messages_path = dir.join("messages.jsonl");
    let messages = from_jsonl(&read("messages.jsonl")?, &messages_path.display().to_string())?;
    let report_path = dir.join("report.json");
    let report: Value = serde_json::from_str(&read("report.json")?)
        .map_err(|e| format!("{}:{}:{}: {e}", report_path.display(), e.line(), e.column()))?;
    let bad = |what: &str| format!("{}: {what}", report_path.display());
    let secs = |v: &Value| v.as_str().and_then(|s| crate::time::parse_duration(s).ok());
    // A JSON object of strings, as pairs.
    let pairs = |v: &Value| -> Vec<(String, String)> {
        v.as_object()
            .map(|o| {
                o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned())).collect()
            })
            .unwrap_or_default()
    };
    let mut verdicts = Vec::new();
    for e in report["expectations"].as_array().ok_or_else(|| bad("no \"expectations\""))? {
        let fields = pairs(&e["fields"]);
        verdicts.push(super::VerdictMark::new(
            (
                e["line"].as_u64().unwrap_or(0) as usize,
                e["client"].as_str().unwrap_or(""),
                e["event"].as_str().unwrap_or(""),
                &fields,
            ),
            (
                secs(&e["within"]).ok_or_else(|| bad("an expectation without \"within\""))?,
                e["absent"].as_bool().unwrap_or(false),
                e["count"].as_u64().map(|c| c as usize),
            ),
            (
                e["passed"].as_bool().unwrap_or(false),
                secs(&e["at"]),
                e["detail"].as_str().unwrap_or(""),
            ),
        ));
    }
    Ok(super::Source {
        scenario: report["scenario"].as_str().unwrap_or("").to_owned(),
        seed: report["seed"].as_u64().unwrap_or(0),
        replay: report["replay"].as_str().unwrap_or("").to_owned(),
        transcript: transcript.into(),
        messages: messages.into(),
        verdicts,
        error: report["error"].as_str().map(str::to_owned),
        addresses: pairs(&report["addresses"]).into_iter().collect(),
    })
}

/// Whether `b` reads as text (UTF-8, no control characters but line ends and tabs).
fn is_text(b: &[u8]) -> bool {
    std::str::from_utf8(b)
        .is_ok_and(|s| !s.chars().any(|c| c.is_control() && !matches!(c, '\r' | '\n' | '\t')))
}

/// messages.jsonl of `records`.
pub fn to_jsonl(records: &[MessageRecord]) -> String {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.bytes.len() + 48).sum());
    for r in records {
        write_jsonl(&mut out, r);
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `r`'s line of messages.jsonl to `out` (a run writes them one by one, into one
/// buffer: issue 19).
pub(crate) fn write_jsonl(out: &mut Vec<u8>, r: &MessageRecord) {
    use std::io::Write as _;
    let _ = write!(out, "{{\"line\":{},\"frame\":", r.line);
    let _ = match r.frame {
        Some(f) => write!(out, "{f}"),
        None => write!(out, "null"),
    };
    let _ = write!(out, ",\"cut\":{},", r.cut);
    match std::str::from_utf8(&r.bytes) {
        Ok(t) if is_text(&r.bytes) => {
            out.extend_from_slice(b"\"text\":");
            let _ = serde_json::to_writer(&mut *out, t);
        }
        _ => {
            let _ = write!(out, "\"hex\":\"{}\"", uclab_proto::text::hex_lower(&r.bytes));
        }
    }
    out.extend_from_slice(b"}\n");
}

/// The records of a messages.jsonl; a line that is not one is an error naming it.
pub fn from_jsonl(text: &str, file: &str) -> Result<Vec<MessageRecord>, String> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| format!("{file}:{}:1: {why}", i + 1);
        let v: Value =
            serde_json::from_str(l).map_err(|e| format!("{file}:{}:{}: {e}", i + 1, e.column()))?;
        let line = v["line"].as_u64().ok_or_else(|| bad("no \"line\""))? as usize;
        let frame = match &v["frame"] {
            Value::Null => None,
            f => Some(
                f.as_u64()
                    .and_then(|f| u32::try_from(f).ok())
                    .ok_or_else(|| bad("\"frame\" is not a frame number"))?,
            ),
        };
        let bytes = match (&v["text"], &v["hex"]) {
            (Value::String(t), _) => t.as_bytes().to_vec(),
            (_, Value::String(h)) => unhex(h).ok_or_else(|| bad("\"hex\" is not hex"))?,
            _ => Vec::new(),
        };
        out.push(MessageRecord { line, frame, bytes, cut: v["cut"].as_bool().unwrap_or(false) });
    }
    Ok(out)
}

fn unhex(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok()).collect()
}

/// A hex dump, 16 bytes a line.
fn dump(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, row) in b.chunks(16).enumerate() {
        let hexes: Vec<String> = row.iter().map(|x| format!("{x:02x}")).collect();
        let ascii: String = row
            .iter()
            .map(|&x| if x.is_ascii_graphic() || x == b' ' { x as char } else { '.' })
            .collect();
        s.push_str(&format!("{:04x}  {:<48}  {ascii}\n", i * 16, hexes.join(" ")));
    }
    s
}

/// The message as people read it: DNS fields, text as it is, anything else as a hex dump.
pub fn decode(proto: &str, m: &MessageRecord) -> Option<String> {
    if m.bytes.is_empty() {
        return None;
    }
    let mut s = if proto.eq_ignore_ascii_case("dns") {
        uclab_proto::dns::decoded(&m.bytes)
    } else if is_text(&m.bytes) {
        String::from_utf8_lossy(&m.bytes).replace("\r\n", "\n")
    } else {
        dump(&m.bytes)
    };
    if m.cut {
        s.push_str(&format!("\n… (cut at {} bytes)", m.bytes.len()));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_round_trip() {
        let r = vec![
            MessageRecord {
                line: 2,
                frame: Some(5),
                bytes: b"SIP/2.0 200 OK\r\n\r\n".to_vec(),
                cut: false,
            },
            MessageRecord { line: 3, frame: None, bytes: vec![0, 1, 0xff], cut: true },
            MessageRecord { line: 4, frame: Some(9), bytes: Vec::new(), cut: false },
        ];
        let text = to_jsonl(&r);
        assert!(text.contains("\"hex\":\"0001ff\""), "{text}");
        assert_eq!(from_jsonl(&text, "m").unwrap(), r);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = from_jsonl("{\"line\":1}\n{\"line\": x}\n", "out/messages.jsonl").unwrap_err();
        assert!(e.starts_with("out/messages.jsonl:2:"), "{e}");
        let e = from_jsonl("{\"frame\":3}\n", "m").unwrap_err();
        assert!(e.contains("m:1:1: no \"line\""), "{e}");
    }

    #[test]
    fn binary_is_dumped_and_dns_decoded() {
        let m = MessageRecord { line: 1, frame: None, bytes: vec![0x00, 0x01, 0x41], cut: false };
        assert!(decode("stun", &m).unwrap().starts_with("0000  00 01 41"));
        assert!(decode("dns", &m).unwrap().contains("not a DNS message"));
    }
}

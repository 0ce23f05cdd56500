//! ladder.txt: the ladder in 120 columns of plain text.
//!
//! ```text
//!   time     alice     cucm1
//!               dns-int
//!    0.004s  |------->|        |    #1 DNS query SRV _cisco-uds._tcp.example.com
//! ```
//! Time in the margin, a lane per column, an arrow per message with its summary and frame
//! number on the right; `*` a client event, `+` a note, `v` an expectation that held and `X`
//! one that failed, with their text on the right; `|====>|` the RTP a call starts.

use std::fmt::Write as _;

use super::{Ladder, What};

/// Width of every line.
pub const WIDTH: usize = 120;
/// `1234.567s ` and a space.
const MARGIN: usize = 11;
/// The narrowest the labels get.
const LABEL_MIN: usize = 64;

/// Lane width for `n` columns.
fn lane(n: usize) -> usize {
    ((WIDTH - MARGIN - LABEL_MIN) / n.max(1)).clamp(3, 10)
}

/// `s` with control characters written as `\xNN`, cut to `max` characters with `...`.
fn fit(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    if out.chars().count() > max {
        out = out.chars().take(max.saturating_sub(3)).collect::<String>() + "...";
    }
    out
}

/// ladder.txt of `l`.
pub fn text(l: &Ladder) -> String {
    let n = l.columns.len();
    let w = lane(n);
    let lanes = n * w;
    let label = WIDTH.saturating_sub(MARGIN + lanes + 1).max(8);
    let x = |i: usize| i * w + w / 2;
    let mut out = String::new();
    let mut head = |line: String| {
        out.push_str(&fit(&line, WIDTH));
        out.push('\n');
    };
    head(format!("# uclab ladder: scenario {} seed {}", l.scenario, l.seed));
    head(format!("# replay: {}", l.replay));
    let messages = l.rows.iter().filter(|r| matches!(r.what, What::Message { .. })).count();
    head(format!(
        "# {messages} of {} messages; * event, + note, v expectation held, X failed; #N frame in capture.pcapng",
        l.total_messages
    ));
    if !l.folded.is_empty() {
        head(format!(
            "# {} participants share a column with others; each arrow names its ends",
            l.folded.len()
        ));
    }
    if let Some(e) = &l.error {
        head(format!("# simulation error: {e}"));
    }
    // Column names on two lines, alternately, so each has two lanes of room.
    for parity in 0..2 {
        let mut line: Vec<char> = vec![' '; lanes + w];
        for (i, c) in l.columns.iter().enumerate().filter(|(i, _)| i % 2 == parity) {
            let name: Vec<char> = fit(c, 2 * w - 1).chars().collect();
            let start = x(i).saturating_sub(name.len() / 2);
            for (k, ch) in name.into_iter().enumerate() {
                if let Some(slot) = line.get_mut(start + k) {
                    *slot = ch;
                }
            }
        }
        let head = if parity == 0 { "     time  " } else { "           " };
        let _ = writeln!(out, "{head}{}", line.into_iter().collect::<String>().trim_end());
    }
    for r in &l.rows {
        let mut lane_chars: Vec<char> =
            (0..lanes).map(|p| if p % w == w / 2 { '|' } else { ' ' }).collect();
        let text = match &r.what {
            What::Message { from, to, ends, summary, frame, .. } => {
                let (a, b) = (l.column(from), l.column(to));
                if let (Some(a), Some(b)) = (a, b) {
                    draw(&mut lane_chars, x(a), x(b));
                }
                let mut s = String::new();
                if let Some(f) = frame {
                    let _ = write!(s, "#{f} ");
                }
                if !l.folded.is_empty() {
                    let _ = write!(s, "{} -> {}: ", ends.0, ends.1);
                }
                s.push_str(summary);
                s
            }
            What::Event { who, toward, .. } => {
                match (l.column(who), toward.and_then(|t| l.column(t))) {
                    (Some(a), Some(b)) if a != b => {
                        draw(&mut lane_chars, x(a), x(b));
                        media(&mut lane_chars, x(a), x(b));
                    }
                    (a, _) => mark(&mut lane_chars, a.map(x), '*'),
                }
                r.what.note().unwrap_or_default()
            }
            What::Note { who, .. } => {
                mark(&mut lane_chars, l.column(who).map(x), '+');
                r.what.note().unwrap_or_default()
            }
            What::Verdict { who, passed, .. } => {
                mark(&mut lane_chars, l.column(who).map(x), if *passed { 'v' } else { 'X' });
                r.what.note().unwrap_or_default()
            }
        };
        let stamp = format!("{:>4}.{:03}s", r.t.as_secs(), r.t.subsec_millis());
        let lanes_s: String = lane_chars.into_iter().collect();
        let _ = writeln!(out, "{stamp:>9}  {lanes_s} {}", fit(&text, label).trim_end());
    }
    out
}

/// An arrow drawn by [`draw`] as media: `=` for `-`.
fn media(lanes: &mut [char], a: usize, b: usize) {
    for slot in &mut lanes[a.min(b) + 1..a.max(b)] {
        if *slot == '-' {
            *slot = '=';
        }
    }
}

fn mark(lanes: &mut [char], at: Option<usize>, c: char) {
    if let Some(slot) = at.and_then(|p| lanes.get_mut(p)) {
        *slot = c;
    }
}

/// An arrow from lane position `a` to `b` (a loop mark when they are the same).
fn draw(lanes: &mut [char], a: usize, b: usize) {
    if a == b {
        mark(lanes, Some(a), 'o');
        return;
    }
    let (lo, hi) = (a.min(b), a.max(b));
    for slot in &mut lanes[lo + 1..hi] {
        *slot = '-';
    }
    if b > a {
        lanes[hi - 1] = '>';
    } else {
        lanes[lo + 1] = '<';
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Filter, Ladder, MessageRecord, Source};
    use super::*;

    #[test]
    fn arrows_point_and_lines_fit() {
        let t = "# h\n   0.004s  alice -> dns-int:53 udp DNS query SRV x\n   0.010s  dns-int:53 -> alice udp DNS response SRV x NOERROR\n   0.011s  alice ! signed-in \u{1b}[31m\n";
        let src = Source {
            transcript: t.into(),
            messages: vec![MessageRecord { line: 2, frame: Some(3), ..MessageRecord::default() }]
                .into(),
            ..Source::default()
        };
        let out = {
            let l = Ladder::build(&src, &Filter::default());
            text(&l)
        };
        assert!(out.lines().all(|l| l.chars().count() <= WIDTH), "{out}");
        assert!(out.contains(">|") && out.contains("|<"), "{out}");
        assert!(out.contains("#3 DNS query SRV x"), "{out}");
        assert!(out.contains("alice ! signed-in \\x1b[31m"), "control bytes escaped: {out}");
    }
}

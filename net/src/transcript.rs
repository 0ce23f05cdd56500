//! The transcript: one line per protocol message and client event, in simulated time.
//!
//! Volatile fields are left out when lines are made (DNS ids, ephemeral ports), so a
//! transcript is stable across seeds wherever the behaviour is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::events::{EventRecord, Events};
use crate::spill::{self, Chunked, SpillFile};

/// Ports from here up are ephemeral (turmoil and Linux defaults) and left out of lines.
const EPHEMERAL: u16 = 32768;

/// Lines a live transcript echoes per second at most (issue 13: a flood must not flood the
/// log); the rest are counted and reported once the second is over.
const ECHO_PER_SECOND: u32 = 100;

/// A line on disk: its time, where it starts in the file, its length, its kind.
type SpilledLine = (Duration, u64, u32, Kind);

/// What a transcript line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// A protocol message `from -> to transport summary`, with its id in the capture's
    /// message log when the capture tracks messages ([`Transcript::track`]).
    Message(Option<u32>),
    /// A note of a node or of the lab: `who: text`.
    Note,
    /// A client event: `who ! text`.
    Event,
}

/// [`LineKind`] in four bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Kind(u32);

impl Kind {
    const NOTE: Self = Self(u32::MAX);
    const EVENT: Self = Self(u32::MAX - 1);
    const UNTRACKED: Self = Self(u32::MAX - 2);

    fn message(id: Option<u32>) -> Self {
        id.filter(|&i| i < Self::UNTRACKED.0).map_or(Self::UNTRACKED, Self)
    }

    fn get(self) -> LineKind {
        match self {
            Self::NOTE => LineKind::Note,
            Self::EVENT => LineKind::Event,
            Self::UNTRACKED => LineKind::Message(None),
            Self(i) => LineKind::Message(Some(i)),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    echo: bool,
    /// Echo only: keep no line and no event (live `uclab serve`, which runs for days).
    forget: bool,
    /// The second being echoed, lines echoed in it, and lines dropped.
    window: (u64, u32, u64),
    /// Every line also goes here as it comes (`uclab serve --transcript FILE`).
    file: Option<std::io::BufWriter<std::fs::File>>,
    names: BTreeMap<IpAddr, String>,
    /// Names of single services (live mode, where every node shares one address).
    services: BTreeMap<SocketAddr, String>,
    lines: Vec<(Duration, String, Kind)>,
    /// The capture told where each message starts ([`Transcript::track`]).
    capture: Option<crate::Capture>,
    /// Lines kept on disk while a simulated run goes ([`Transcript::spilling`]): the file,
    /// and each line's time and place in it.
    spill: Option<(SpillFile, Chunked<SpilledLine>)>,
    events: Events,
}

/// `line` with control characters written as `\xNN` (bytes from the wire must not drive the
/// terminal: issue 13).
pub(crate) fn escape_controls(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut s = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if c.is_control() {
            let _ = write!(s, "\\x{:02x}", u32::from(c));
        } else {
            s.push(c);
        }
    }
    std::borrow::Cow::Owned(s)
}

/// A transcript line as written everywhere: `  12.345s  text`.
fn stamped(t: Duration, text: &str) -> String {
    let mut s = String::new();
    stamp_into(&mut s, t, text);
    s
}

/// [`stamped`], written at the end of `s`.
fn stamp_into(s: &mut String, t: Duration, text: &str) {
    let _ = write!(s, "{:>4}.{:03}s  {text}", t.as_secs(), t.subsec_millis());
}

/// A shared transcript (one per simulated world or live process).
#[derive(Clone, Debug, Default)]
pub struct Transcript(Arc<Mutex<Inner>>);

impl Transcript {
    /// A transcript that also prints each line to stderr as it is made (live mode).
    pub fn echoing() -> Self {
        let t = Self::default();
        t.lock().echo = true;
        t
    }

    /// A transcript that prints each line to stderr and keeps nothing (live `uclab serve`).
    pub fn echo_only() -> Self {
        let t = Self::echoing();
        t.lock().forget = true;
        t
    }

    /// An [`echo_only`](Self::echo_only) transcript that also writes every line to `path` as
    /// it comes (control bytes escaped; not rate-limited, since it was asked for).
    pub fn streaming(path: &std::path::Path) -> std::io::Result<Self> {
        let t = Self::echo_only();
        t.lock().file = Some(std::io::BufWriter::new(std::fs::File::create(path)?));
        Ok(t)
    }

    /// A transcript that keeps its lines in a temporary file until they are rendered (a
    /// simulated run: issue 19, a 3,000-client run's lines are a hundred MiB); the events,
    /// which expectations read while the run goes, stay in memory. Where no file can be made,
    /// lines stay in memory: the rendering is the same either way.
    pub fn spilling() -> Self {
        let t = Self::default();
        t.lock().spill = SpillFile::create("lines").map(|f| (f, Chunked::default()));
        t
    }

    /// Tells `capture` where each message starts, so it can say which frame carries it and
    /// what it said (a simulated run, for the ladder: issue 20).
    pub fn track(&self, capture: crate::Capture) {
        capture.track_messages();
        self.lock().capture = Some(capture);
    }

    /// Whether a line at `t` goes nowhere: a live transcript that keeps nothing, writes no
    /// file and has echoed its lines for this second (counted as not shown, as `push` would).
    /// Such a line is not even formatted (issue 19: a loaded live server makes thousands a
    /// second). Never in a simulated run, whose transcript keeps every line.
    fn dropped(g: &mut Inner, t: Duration) -> bool {
        let drop = g.forget
            && g.echo
            && g.file.is_none()
            && g.capture.is_none()
            && g.window.0 == t.as_secs()
            && g.window.1 >= ECHO_PER_SECOND;
        if drop {
            g.window.2 += 1;
        }
        drop
    }

    fn push(&self, t: Duration, line: String, kind: Kind) {
        let mut g = self.lock();
        if g.echo {
            let sec = t.as_secs();
            if g.window.0 != sec {
                if g.window.2 > 0 {
                    eprintln!("{:>4}.000s  ({} lines not shown)", sec, g.window.2);
                }
                g.window = (sec, 0, 0);
            }
            if g.window.1 < ECHO_PER_SECOND {
                g.window.1 += 1;
                eprintln!("{}", stamped(t, &escape_controls(&line)));
            } else {
                g.window.2 += 1;
            }
        }
        if let Some(f) = &mut g.file {
            use std::io::Write as _;
            let text = format!("{}\n", stamped(t, &escape_controls(&line)));
            if f.write_all(text.as_bytes()).and_then(|()| f.flush()).is_err() {
                g.file = None; // a full disk stops the file, not the lab
            }
        }
        if g.forget {
            return;
        }
        if let Some((file, index)) = &mut g.spill {
            if let Ok(at) = file.append(line.as_bytes()) {
                index.push((t, at, line.len() as u32, kind));
                return;
            }
            // A full disk: back to memory, with what was spilled.
            let lines = Self::spilled(&mut g);
            g.lines.splice(0..0, lines);
        }
        g.lines.push((t, line, kind));
    }

    /// The lines spilled so far, taken back from the file.
    fn spilled(g: &mut Inner) -> Vec<(Duration, String, Kind)> {
        let Some((file, index)) = g.spill.take() else { return Vec::new() };
        let bytes = file.bytes().unwrap_or_default();
        let text = |at, len| spill::slice(&bytes, at, len).unwrap_or(&[]);
        index
            .into_iter()
            .map(|(t, at, len, k)| (t, String::from_utf8_lossy(text(at, len)).into_owned(), k))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names an address (node or client name) for the lines.
    pub fn set_name(&self, ip: IpAddr, name: &str) {
        self.lock().names.insert(ip, name.to_owned());
    }

    /// The names given to addresses, by address (the lab's address plan, for reports).
    pub fn names(&self) -> Vec<(IpAddr, String)> {
        self.lock().names.iter().map(|(ip, n)| (*ip, n.clone())).collect()
    }

    /// Names one service address (live mode: several nodes share an address).
    pub fn set_service_name(&self, addr: SocketAddr, name: &str) {
        self.lock().services.insert(addr, name.to_owned());
    }

    fn endpoint(g: &Inner, a: SocketAddr) -> String {
        if let Some(n) = g.services.get(&a) {
            return n.clone();
        }
        let host = g.names.get(&a.ip()).cloned().unwrap_or_else(|| a.ip().to_string());
        if a.port() >= EPHEMERAL || a.port() == 0 { host } else { format!("{host}:{}", a.port()) }
    }

    /// Records a protocol message `from → to` over `transport` ("udp"/"tcp").
    pub fn message(
        &self,
        t: Duration,
        from: SocketAddr,
        to: SocketAddr,
        transport: &str,
        text: &str,
    ) {
        let (line, capture) = {
            let mut g = self.lock();
            if Self::dropped(&mut g, t) {
                return;
            }
            let line = format!(
                "{} -> {} {transport} {text}",
                Self::endpoint(&g, from),
                Self::endpoint(&g, to)
            );
            (line, g.capture.clone())
        };
        let id = capture.and_then(|c| c.mark(from, to));
        self.push(t, line, Kind::message(id));
    }

    /// Records a free-form note of a node (a fault applied, a node started).
    pub fn note(&self, t: Duration, who: &str, text: &str) {
        self.push(t, format!("{who}: {text}"), Kind::NOTE);
    }

    /// Records a client event.
    pub fn event(
        &self,
        t: Duration,
        who: &str,
        kind: &str,
        fields: Vec<(String, String)>,
        text: &str,
    ) {
        self.push(t, format!("{who} ! {text}"), Kind::EVENT);
        let mut g = self.lock();
        if g.forget {
            return;
        }
        g.events.push(t, who, kind, &fields);
    }

    /// All client events so far.
    pub fn events(&self) -> Vec<EventRecord> {
        self.lock().events.to_records()
    }

    /// The client events so far, taken out: a run that is over hands them to its result
    /// rather than copying them (CAP1's are half a million).
    pub fn take_events(&self) -> Events {
        std::mem::take(&mut self.lock().events)
    }

    /// `f` of the client events so far, without copying them (the runner looks often).
    pub fn with_events<R>(&self, f: impl FnOnce(&Events) -> R) -> R {
        f(&self.lock().events)
    }

    /// Renders the lines, times relative to the scenario start (in time order, stable for
    /// equal times, without a second copy of every line).
    pub fn render(&self) -> String {
        self.render_after("")
    }

    /// `head`, then [`render`](Self::render)'s text, in one buffer made to size (CAP1's text
    /// is 86 MiB: no second copy of it to put a header line first).
    pub fn render_after(&self, head: &str) -> String {
        let size = head.len() + {
            let g = self.lock();
            let spilled =
                g.spill.as_ref().map_or(0, |(_, i)| i.iter().map(|e| e.2 as usize + 12).sum());
            spilled + g.lines.iter().map(|(_, l, _)| l.len() + 12).sum::<usize>()
        };
        // Written as transcript.txt is; every line is text, and a Vec takes every write.
        let bytes = self.write_after(head, Vec::with_capacity(size)).unwrap_or_default();
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Writes what [`render_after`](Self::render_after) returns to `w` as the lines are read,
    /// with no copy of the text in memory (a run's transcript.txt: issue 19).
    pub fn write_after<W: std::io::Write>(&self, head: &str, mut w: W) -> std::io::Result<W> {
        w.write_all(head.as_bytes())?;
        let (mut line, mut result) = (String::new(), Ok(()));
        self.for_each_line(|t, l, _| {
            if result.is_ok() {
                line.clear();
                stamp_into(&mut line, t, l);
                line.push('\n');
                result = w.write_all(line.as_bytes());
            }
        });
        result.map(|()| w)
    }

    /// `f` of every line (its time, its text, what it says) in the order
    /// [`render`](Self::render) writes them.
    pub fn for_each_line(&self, mut f: impl FnMut(Duration, &str, LineKind)) {
        let mut g = self.lock();
        if let Some((file, index)) = &mut g.spill {
            // Positions, not copies of the entries, in stable time order.
            let mut order: Vec<u32> = (0..index.len() as u32).collect();
            order.sort_by_key(|&i| index[i as usize].0);
            let mut r = file.reader().ok();
            for i in order {
                let (t, at, len, k) = index[i as usize];
                let line = r.as_mut().and_then(|r| r.get(at, len).ok()).unwrap_or(&[]);
                f(t, &String::from_utf8_lossy(line), k.get());
            }
            return;
        }
        let mut order: Vec<u32> = (0..g.lines.len() as u32).collect();
        order.sort_by_key(|&i| g.lines[i as usize].0);
        for i in order {
            let (t, l, k) = &g.lines[i as usize];
            f(*t, l, k.get());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_are_escaped() {
        assert_eq!(escape_controls("FOO\u{1b}[31m"), "FOO\\x1b[31m");
        assert_eq!(escape_controls("plain"), "plain");
    }

    #[test]
    fn streaming_transcript_writes_each_line_escaped() {
        let path = std::env::temp_dir().join(format!("uclab-stream-{}.txt", std::process::id()));
        let t = Transcript::streaming(&path).unwrap();
        t.note(Duration::from_millis(1500), "n", "FOO\u{1b}[31m");
        t.event(Duration::from_secs(2), "alice", "k", Vec::new(), "signed-in");
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(text.contains("   1.500s  ") && text.contains("FOO\\x1b[31m"), "{text}");
        assert!(text.contains("alice ! signed-in"), "{text}");
        assert!(t.render().is_empty() && t.events().is_empty(), "kept nowhere");
    }

    #[test]
    fn spilled_lines_render_the_same() {
        let fill = |t: &Transcript| {
            t.set_name("10.0.0.1".parse().unwrap(), "alice");
            t.note(Duration::from_millis(30), "lab", "crash cucm1");
            t.event(Duration::from_millis(10), "alice", "signed-in", Vec::new(), "signed-in");
            t.note(Duration::from_millis(10), "lab", "same time, after");
            t.message(
                Duration::from_millis(20),
                "10.0.0.1:40000".parse().unwrap(),
                "10.0.0.2:5060".parse().unwrap(),
                "udp",
                "REGISTER é",
            );
        };
        let (mem, disk) = (Transcript::default(), Transcript::spilling());
        fill(&mem);
        fill(&disk);
        assert!(disk.lock().lines.is_empty() && disk.lock().spill.is_some(), "lines on disk");
        assert_eq!(disk.render(), mem.render());
        assert_eq!(disk.events(), mem.events());
        let path = disk.lock().spill.as_ref().map(|(f, _)| f.path().to_owned()).unwrap();
        drop(disk);
        assert!(!path.exists(), "removed with the transcript");
    }

    #[test]
    fn echo_only_keeps_nothing() {
        let t = Transcript::echo_only();
        for i in 0..500 {
            t.note(Duration::from_millis(i), "n", "x");
            t.event(Duration::from_millis(i), "c", "k", Vec::new(), "e");
        }
        assert!(t.render().is_empty());
        assert!(t.events().is_empty());
    }

    #[test]
    fn lines_past_the_echo_limit_are_counted_unformatted() {
        let t = Transcript::echo_only();
        let (a, b) = ("10.0.0.1:53".parse().unwrap(), "10.0.0.2:4000".parse().unwrap());
        let n = ECHO_PER_SECOND + 25;
        for i in 0..n {
            t.message(Duration::from_millis(u64::from(i)), a, b, "udp", "A? x");
        }
        let w = t.lock().window;
        assert_eq!(w, (0, ECHO_PER_SECOND, 25), "echoed up to the limit, the rest counted");
        t.message(Duration::from_secs(1), a, b, "udp", "A? x");
        assert_eq!(t.lock().window, (1, 1, 0), "a new second echoes again");
        // A transcript that keeps its lines keeps them all.
        let kept = Transcript::echoing();
        for i in 0..n {
            kept.message(Duration::from_millis(u64::from(i)), a, b, "udp", "A? x");
        }
        assert_eq!(kept.render().lines().count(), n as usize);
    }
}

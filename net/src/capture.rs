//! The capture tap: synthesises Ethernet/IPv4 frames for what crosses our sockets.
//!
//! turmoil has no packet hook, so we capture at our own socket layer. TCP flows get a real
//! three-way handshake, data segments split at the MSS with consistent seq/ack numbers, ACKs and
//! FINs; UDP datagrams are framed as they are. Frames carry simulated time from the scenario
//! epoch and are written as pcapng.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etherparse::{IpDscp, IpHeaders, IpNumber, Ipv4Header, PacketBuilder};
use pcap_file::pcapng::PcapNgWriter;

use crate::messages::{MessageLog, MessageStore};
use crate::pcapng::{DSB_MAX, decryption_secrets_block, epb, interface, section_header};
use crate::rng::derive_seed;
use crate::spill::{self, Chunked, SpillFile, SpilledText};

/// Largest TCP payload per synthesised segment (Ethernet MTU 1500 − 40).
pub(crate) const MSS: usize = 1460;
const WINDOW: u16 = 64240;
const TTL: u8 = 64;

/// Who records what on a tapped TCP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapMode {
    /// Both ends are ours and share one capture (simulation): each end records what it sends,
    /// and the ACKs for what it reads.
    SenderRecords,
    /// Only this end is ours (live mode against a real peer): it records both directions.
    BothDirections,
}

/// What a captured frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// TCP segment.
    Tcp,
    /// UDP datagram.
    Udp,
    /// ICMP message.
    Icmp,
}

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Time since the scenario epoch.
    pub time: Duration,
    /// Ethernet frame bytes.
    pub data: Vec<u8>,
    /// Transport of the frame.
    pub kind: FrameKind,
}

#[derive(Clone, Copy, Debug, Default)]
struct End {
    snd_nxt: u32,
    rcv_nxt: u32,
    fin_sent: bool,
}

#[derive(Debug, Default)]
struct Flow {
    ends: BTreeMap<SocketAddr, End>,
}

#[derive(Debug)]
struct Inner {
    seed: u64,
    epoch: Duration,
    frames: Vec<Frame>,
    flows: BTreeMap<FlowKey, Flow>,
    generation: u64,
    /// TLS key log lines (NSS format), for the Decryption Secrets Block; on disk while a
    /// simulated run goes ([`Capture::spilling`]).
    tls_secrets: SpilledText,
    /// Records nothing (live `uclab serve`: a capture kept in memory would grow without
    /// bound, and its key log would hold every session's secrets).
    off: bool,
    /// Written as it happens and kept nowhere (`uclab serve --capture FILE`).
    sink: Option<Sink>,
    /// The ISN of each unanswered connection attempt: a retransmitted SYN repeats it, as a
    /// kernel's does (RFC 9293 §3.8.1).
    syn_isn: BTreeMap<(SocketAddr, SocketAddr), u32>,
    /// Frame bytes kept on disk while the run goes (a simulated run: [`Capture::spilling`]).
    spill: Option<Spill>,
    /// Which frame carries each transcript message ([`Capture::track_messages`]).
    messages: Option<MessageLog>,
}

/// Frame bytes written to a file of their own as they come, in the order they come; only
/// where each one is stays in memory. The pcapng is made from it at the end, in time order,
/// byte for byte what frames kept in memory would give (issue 19: a 3,000-client run's
/// frames are hundreds of MiB).
#[derive(Debug)]
struct Spill {
    file: SpillFile,
    index: Chunked<Spilled>,
}

#[derive(Clone, Copy, Debug)]
struct Spilled {
    time: Duration,
    at: u64,
    len: u32,
    kind: FrameKind,
}

/// A capture file written as frames come (live mode).
struct Sink {
    writer: PcapNgWriter<io::BufWriter<std::fs::File>>,
    epoch: Duration,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sink(..)")
    }
}

/// Flows a streaming capture keeps sequence numbers for; past it the closed ones go (and, if
/// that is not enough, all: a long-lived flow then restarts its numbering in the file).
const STREAM_FLOWS: usize = 4096;

/// A shared capture: all sockets of a simulated world (or of one live process) write into it.
#[derive(Clone, Debug)]
pub struct Capture(Arc<Mutex<Inner>>);

/// A flow's key: its two ends as numbers, the lower first. The capture looks a flow up for
/// every frame, and comparing pairs of `SocketAddr`s was 4% of CAP1's time (issue 19); only
/// lookups use the order.
type FlowKey = (AddrKey, AddrKey);

fn key(a: SocketAddr, b: SocketAddr) -> FlowKey {
    let (a, b) = (addr_key(a), addr_key(b));
    if a <= b { (a, b) } else { (b, a) }
}

/// An address as numbers (IPv4 as its IPv6-mapped form), for keys compared often; ordered as
/// `SocketAddr`s of one family are.
pub(crate) type AddrKey = (u128, u16);

pub(crate) fn addr_key(s: SocketAddr) -> AddrKey {
    let ip = match s.ip() {
        IpAddr::V4(v) => v.to_ipv6_mapped(),
        IpAddr::V6(v) => v,
    };
    (u128::from(ip), s.port())
}

fn v4(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(v) => v.octets(),
        // IPv6 endpoints are mapped into 0.0.0.0/8 only for framing; the lab runs IPv4.
        IpAddr::V6(v) => {
            let o = v.octets();
            [0, o[13], o[14], o[15]]
        }
    }
}

fn mac(ip: [u8; 4]) -> [u8; 6] {
    // Locally administered MAC derived from the address, so frames are stable per node.
    [0x02, 0x00, ip[0], ip[1], ip[2], ip[3]]
}

#[derive(Clone, Copy, Default)]
struct Flags {
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
    psh: bool,
}

impl Capture {
    /// A new, empty capture for a run with `seed` whose epoch is `epoch` after the Unix epoch.
    pub fn new(seed: u64, epoch: Duration) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            seed,
            epoch,
            frames: Vec::new(),
            flows: BTreeMap::new(),
            generation: 0,
            tls_secrets: SpilledText::default(),
            off: false,
            sink: None,
            syn_isn: BTreeMap::new(),
            spill: None,
            messages: None,
        })))
    }

    /// A capture like [`Capture::new`] that keeps its frames' bytes in a temporary file while
    /// the run goes (removed when the capture is dropped). Where no file can be made, frames
    /// stay in memory: the output is the same either way.
    pub fn spilling(seed: u64, epoch: Duration) -> Self {
        let c = Self::new(seed, epoch);
        let mut g = c.lock();
        g.spill = SpillFile::create("frames").map(|file| Spill { file, index: Chunked::default() });
        g.tls_secrets = SpilledText::on_disk("keylog");
        drop(g);
        c
    }

    /// A capture that writes every frame and TLS secret to `path` as pcapng as it happens and
    /// keeps none in memory (live mode, which runs for days). `epoch`: the wall-clock time,
    /// after the Unix epoch, that time zero stands for.
    pub fn streaming(path: &std::path::Path, seed: u64, epoch: Duration) -> io::Result<Self> {
        let file = io::BufWriter::new(std::fs::File::create(path)?);
        let mut writer =
            PcapNgWriter::with_section_header(file, section_header()).map_err(io::Error::other)?;
        writer.write_pcapng_block(interface()).map_err(io::Error::other)?;
        writer.get_mut().flush()?;
        let c = Self::new(seed, epoch);
        c.lock().sink = Some(Sink { writer, epoch });
        Ok(c)
    }

    /// Also notes which frame carries each transcript message and what it said (a simulated
    /// run, for the ladder: issue 20). The transcript tells it where each message starts
    /// ([`Capture::mark`]).
    pub fn track_messages(&self) {
        self.lock().messages = Some(MessageLog::new());
    }

    /// A transcript line for a message `from → to` is made: its id, when messages are tracked.
    pub fn mark(&self, from: SocketAddr, to: SocketAddr) -> Option<u32> {
        self.lock().messages.as_mut().map(|m| m.mark(from, to))
    }

    /// The connection `a`–`b` carries TLS from now on.
    pub(crate) fn tls_flow(&self, a: SocketAddr, b: SocketAddr) {
        if let Some(m) = self.lock().messages.as_mut() {
            m.tls(a, b);
        }
    }

    /// A TLS stream `from → to` is about to be handed plaintext.
    pub(crate) fn plain_arm(&self, from: SocketAddr, to: SocketAddr) {
        if let Some(m) = self.lock().messages.as_mut() {
            m.arm(from, to);
        }
    }

    /// The TLS stream `from → to` took `plain` since [`plain_arm`](Self::plain_arm).
    pub(crate) fn plain(&self, from: SocketAddr, to: SocketAddr, plain: &[u8]) {
        if let Some(m) = self.lock().messages.as_mut() {
            m.plain(from, to, plain);
        }
    }

    /// The tracked messages, once the run is over (the log is handed over: call once).
    pub fn messages(&self) -> Option<MessageStore> {
        let mut g = self.lock();
        let log = g.messages.take()?;
        let numbers = g.frame_numbers();
        Some(log.into_store(numbers))
    }

    /// A capture that records nothing.
    pub fn disabled() -> Self {
        let c = Self::new(0, Duration::ZERO);
        c.lock().off = true;
        c
    }

    fn off(&self) -> bool {
        self.lock().off
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of frames so far.
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.frames.len() + g.spill.as_ref().map_or(0, |s| s.index.len())
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frames in time order (stable for equal times).
    pub fn frames(&self) -> Vec<Frame> {
        let mut g = self.lock();
        g.unspill();
        let mut f = g.frames.clone();
        f.sort_by_key(|f| f.time);
        f
    }

    /// Records a UDP datagram.
    pub fn udp(&self, t: Duration, from: SocketAddr, to: SocketAddr, payload: &[u8], dscp: u8) {
        if self.off() {
            return;
        }
        let (s, d) = (v4(from.ip()), v4(to.ip()));
        let b = PacketBuilder::ethernet2(mac(s), mac(d))
            .ip(ip_header(s, d, IpNumber::UDP, dscp))
            .udp(from.port(), to.port());
        let mut out = Vec::with_capacity(b.size(payload.len()));
        if b.write(&mut out, payload).is_ok() {
            let mut g = self.lock();
            let record = g.count();
            g.emit(Frame { time: t, data: out, kind: FrameKind::Udp });
            if let Some(m) = g.messages.as_mut() {
                m.written(from, to, record, payload);
            }
        }
    }

    /// Records an ICMP port-unreachable sent by `from` about a datagram `orig_from → orig_to`.
    pub fn icmp_port_unreachable(
        &self,
        t: Duration,
        orig_from: SocketAddr,
        orig_to: SocketAddr,
        orig_payload: &[u8],
    ) {
        if self.off() {
            return;
        }
        use etherparse::{Icmpv4Type, icmpv4::DestUnreachableHeader};
        // RFC 792: the ICMP payload is the original IP header plus the first 8 bytes of data.
        let (s, d) = (v4(orig_from.ip()), v4(orig_to.ip()));
        let inner = PacketBuilder::ip(ip_header(s, d, IpNumber::UDP, 0))
            .udp(orig_from.port(), orig_to.port());
        let mut quoted = Vec::new();
        if inner.write(&mut quoted, orig_payload).is_err() {
            return;
        }
        quoted.truncate(28);
        let b = PacketBuilder::ethernet2(mac(d), mac(s))
            .ip(ip_header(d, s, IpNumber::ICMP, 0))
            .icmpv4(Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port));
        let mut out = Vec::new();
        if b.write(&mut out, &quoted).is_ok() {
            self.push(t, out, FrameKind::Icmp);
        }
    }

    /// Records a completed three-way handshake: SYN at `t_syn`, SYN-ACK and ACK at `t_done`.
    /// Starts a new flow for the 4-tuple (a closed earlier flow on the same ports is forgotten).
    pub fn tcp_handshake(
        &self,
        t_syn: Duration,
        t_done: Duration,
        client: SocketAddr,
        server: SocketAddr,
    ) {
        if self.off() {
            return;
        }
        let mut g = self.lock();
        let k = key(client, server);
        let closed = g.flows.get(&k).is_some_and(|f| f.ends.values().any(|e| e.fin_sent));
        if closed {
            g.flows.remove(&k);
        }
        if g.flows.contains_key(&k) {
            // The accepting end already created it (it wrote first); nothing to add.
            return;
        }
        let (ci, si) = g.isns(client, server);
        let syn = Flags { syn: true, ..Flags::default() };
        g.tcp_frame(t_syn, client, server, ci, 0, syn, &[], 0);
        let synack = Flags { syn: true, ack: true, ..Flags::default() };
        g.tcp_frame(t_done, server, client, si, ci.wrapping_add(1), synack, &[], 0);
        let ack = Flags { ack: true, ..Flags::default() };
        g.tcp_frame(t_done, client, server, ci.wrapping_add(1), si.wrapping_add(1), ack, &[], 0);
        g.flow(client, server);
        // A new connection on these ports starts in clear, whatever an earlier one carried.
        if let Some(m) = g.messages.as_mut() {
            m.clear(client, server);
        }
    }

    /// Records SYNs that get no answer (filtered), one per retransmission time in `times`.
    pub fn tcp_syn_unanswered(&self, t: Duration, client: SocketAddr, server: SocketAddr) {
        if self.off() {
            return;
        }
        let mut g = self.lock();
        let ci = match g.syn_isn.get(&(client, server)) {
            Some(isn) => *isn,
            None => {
                let (ci, _) = g.isns(client, server);
                if g.syn_isn.len() >= 4096 {
                    g.syn_isn.clear(); // attempts that long ago retransmit no more
                }
                g.syn_isn.insert((client, server), ci);
                ci
            }
        };
        let syn = Flags { syn: true, ..Flags::default() };
        g.tcp_frame(t, client, server, ci, 0, syn, &[], 0);
    }

    /// The connection attempt from `client` to `server` is over: its next SYN (a new attempt
    /// on a reused port) gets a new ISN.
    pub fn syn_done(&self, client: SocketAddr, server: SocketAddr) {
        self.lock().syn_isn.remove(&(client, server));
    }

    /// Records a refused connection: SYN, then RST-ACK from the server.
    pub fn tcp_refused(&self, t: Duration, client: SocketAddr, server: SocketAddr) {
        if self.off() {
            return;
        }
        let mut g = self.lock();
        let (ci, _) = g.isns(client, server);
        let syn = Flags { syn: true, ..Flags::default() };
        g.tcp_frame(t, client, server, ci, 0, syn, &[], 0);
        let rst = Flags { rst: true, ack: true, ..Flags::default() };
        g.tcp_frame(t, server, client, 0, ci.wrapping_add(1), rst, &[], 0);
    }

    /// Records data sent by `from` on the flow, split into MSS-sized segments.
    pub fn tcp_data(&self, t: Duration, from: SocketAddr, to: SocketAddr, data: &[u8], dscp: u8) {
        if self.off() {
            return;
        }
        if data.is_empty() {
            return;
        }
        let mut g = self.lock();
        let record = g.count();
        for chunk in data.chunks(MSS) {
            let end = g.flow(from, to)[&from];
            let f = Flags { ack: true, psh: true, ..Flags::default() };
            g.tcp_frame(t, from, to, end.snd_nxt, end.rcv_nxt, f, chunk, dscp);
            let n = chunk.len() as u32;
            g.flow(from, to).get_mut(&from).expect("end exists").snd_nxt =
                end.snd_nxt.wrapping_add(n);
        }
        if let Some(m) = g.messages.as_mut() {
            m.written(from, to, record, data);
        }
    }

    /// Records that `at` has read `n` bytes from `peer`: a pure ACK.
    pub fn tcp_ack_read(&self, t: Duration, at: SocketAddr, peer: SocketAddr, n: usize) {
        if self.off() {
            return;
        }
        let mut g = self.lock();
        let ends = g.flow(at, peer);
        let me = ends.get_mut(&at).expect("end exists");
        me.rcv_nxt = me.rcv_nxt.wrapping_add(n as u32);
        let me = *me;
        let f = Flags { ack: true, ..Flags::default() };
        g.tcp_frame(t, at, peer, me.snd_nxt, me.rcv_nxt, f, &[], 0);
    }

    /// Records a FIN from `from` (it closed its sending side).
    pub fn tcp_fin(&self, t: Duration, from: SocketAddr, to: SocketAddr) {
        if self.off() {
            return;
        }
        let mut g = self.lock();
        let end = g.flow(from, to)[&from];
        if end.fin_sent {
            return;
        }
        let f = Flags { fin: true, ack: true, ..Flags::default() };
        g.tcp_frame(t, from, to, end.snd_nxt, end.rcv_nxt, f, &[], 0);
        let e = g.flow(from, to).get_mut(&from).expect("end exists");
        e.snd_nxt = e.snd_nxt.wrapping_add(1);
        e.fin_sent = true;
    }

    /// Records that `at` saw the peer's FIN (end of stream): the ACK of the FIN.
    pub fn tcp_ack_fin(&self, t: Duration, at: SocketAddr, peer: SocketAddr) {
        if self.off() {
            return;
        }
        self.tcp_ack_read(t, at, peer, 1);
    }

    /// Records an RST from `from` (connection reset, e.g. the node crashed or aborted).
    pub fn tcp_rst(&self, t: Duration, from: SocketAddr, to: SocketAddr) {
        if self.off() {
            return;
        }
        let mut g = self.lock();
        let end = g.flow(from, to)[&from];
        let f = Flags { rst: true, ack: true, ..Flags::default() };
        g.tcp_frame(t, from, to, end.snd_nxt, end.rcv_nxt, f, &[], 0);
        g.flows.remove(&key(from, to));
    }

    /// Records one TLS key log line (`LABEL <client random> <secret>`, NSS format).
    pub fn tls_secret(&self, line: String) {
        if self.off() {
            return;
        }
        let mut g = self.lock();
        if let Some(sink) = &mut g.sink {
            // Before the records it decrypts: the key is logged during the handshake.
            let block = decryption_secrets_block(format!("{line}\n").as_bytes());
            let w = sink.writer.get_mut();
            if w.write_all(&block).and_then(|()| w.flush()).is_err() {
                g.sink = None;
                g.off = true;
            }
            return;
        }
        g.tls_secrets.push_line(&line);
    }

    /// The TLS key log so far (an SSLKEYLOGFILE's content).
    pub fn tls_keylog(&self) -> String {
        self.lock().tls_secrets.text()
    }

    /// Writes the capture as pcapng (one Ethernet interface, nanosecond timestamps), with a
    /// Decryption Secrets Block holding the TLS key log when there is one.
    pub fn write_pcapng<W: Write>(&self, w: W) -> io::Result<W> {
        let epoch = self.lock().epoch;
        let keylog = self.tls_keylog();
        let mut writer =
            PcapNgWriter::with_section_header(w, section_header()).map_err(io::Error::other)?;
        writer.write_pcapng_block(interface()).map_err(io::Error::other)?;
        // Readers refuse huge blocks (Wireshark's limit is 16 MiB; a 3,000-client run has
        // 45 MB of secrets), so the key log goes in blocks of at most DSB_MAX, whole lines each.
        let mut chunk = String::new();
        for line in keylog.split_inclusive('\n') {
            if !chunk.is_empty() && chunk.len() + line.len() > DSB_MAX {
                writer.get_mut().write_all(&decryption_secrets_block(chunk.as_bytes()))?;
                chunk.clear();
            }
            chunk.push_str(line);
        }
        if !chunk.is_empty() {
            writer.get_mut().write_all(&decryption_secrets_block(chunk.as_bytes()))?;
        }
        // Time order, stable for equal times, without a second copy of every frame (a
        // 3,000-client run holds hundreds of MiB of them: issue 19).
        let mut g = self.lock();
        if let Some(sp) = &mut g.spill {
            let mut r = sp.file.reader()?;
            // Positions, not copies of the entries, in stable time order.
            let mut order: Vec<u32> = (0..sp.index.len() as u32).collect();
            order.sort_by_key(|&i| sp.index[i as usize].time);
            for i in order {
                let e = sp.index[i as usize];
                let data = r.get(e.at, e.len)?;
                writer.write_pcapng_block(epb(epoch, e.time, data)).map_err(io::Error::other)?;
            }
            return Ok(writer.into_inner());
        }
        let mut order: Vec<u32> = (0..g.frames.len() as u32).collect();
        order.sort_by_key(|&i| g.frames[i as usize].time);
        for i in order {
            let f = &g.frames[i as usize];
            writer.write_pcapng_block(epb(epoch, f.time, &f.data)).map_err(io::Error::other)?;
        }
        drop(g);
        Ok(writer.into_inner())
    }

    fn push(&self, t: Duration, data: Vec<u8>, kind: FrameKind) {
        self.lock().emit(Frame { time: t, data, kind });
    }
}

impl Inner {
    /// Frames recorded so far.
    fn count(&self) -> u32 {
        (self.frames.len() + self.spill.as_ref().map_or(0, |s| s.index.len())) as u32
    }

    /// The number of each recorded frame in the pcapng (1-based; frames are written in time
    /// order, stable for equal times), by the order they were recorded in.
    fn frame_numbers(&self) -> Vec<u32> {
        // Spilled frames first, then those in memory; their times read in place.
        let spilled = self.spill.as_ref().map_or(0, |sp| sp.index.len());
        let time = |i: usize| match &self.spill {
            Some(sp) if i < spilled => sp.index[i].time,
            _ => self.frames[i - spilled].time,
        };
        let n = spilled + self.frames.len();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by_key(|&i| time(i as usize));
        let mut numbers = vec![0; n];
        for (n, i) in order.into_iter().enumerate() {
            numbers[i as usize] = n as u32 + 1;
        }
        numbers
    }

    /// Frames spilled so far back in memory (a spill that fails, or a caller that wants
    /// them all).
    fn unspill(&mut self) {
        let Some(sp) = self.spill.take() else { return };
        let bytes = sp.file.bytes().unwrap_or_default();
        let spilled = sp.index;
        // They came before any frame kept in memory.
        let mut frames: Vec<Frame> = spilled
            .into_iter()
            .map(|e| Frame {
                time: e.time,
                data: spill::slice(&bytes, e.at, e.len).unwrap_or(&[]).to_vec(),
                kind: e.kind,
            })
            .collect();
        frames.append(&mut self.frames);
        self.frames = frames;
    }

    /// Keeps a frame, or writes it straight to the capture file.
    fn emit(&mut self, f: Frame) {
        if let Some(sp) = &mut self.spill {
            if let Ok(at) = sp.file.append(&f.data) {
                sp.index.push(Spilled { time: f.time, at, len: f.data.len() as u32, kind: f.kind });
                return;
            }
            // A full disk: back to memory, with what was spilled.
            self.unspill();
        }
        let Some(sink) = &mut self.sink else {
            self.frames.push(f);
            return;
        };
        let block = epb(sink.epoch, f.time, &f.data);
        // A full disk or a closed file stops the capture, not the lab.
        if sink.writer.write_pcapng_block(block).is_err() || sink.writer.get_mut().flush().is_err()
        {
            self.sink = None;
            self.off = true;
        }
    }

    fn isns(&mut self, a: SocketAddr, b: SocketAddr) -> (u32, u32) {
        // ISNs from the seed and the 4-tuple (and a generation counter so a reused port gets a
        // fresh ISN), never from the order in which sockets were created elsewhere.
        let g = self.generation;
        let ia = derive_seed(self.seed, &format!("isn {a} {b} {g}")) as u32;
        let ib = derive_seed(self.seed, &format!("isn {b} {a} {g}")) as u32;
        (ia, ib)
    }

    fn flow(&mut self, a: SocketAddr, b: SocketAddr) -> &mut BTreeMap<SocketAddr, End> {
        let k = key(a, b);
        if !self.flows.contains_key(&k) {
            if self.sink.is_some() && self.flows.len() >= STREAM_FLOWS {
                self.flows.retain(|_, f| !f.ends.values().any(|e| e.fin_sent));
                if self.flows.len() >= STREAM_FLOWS {
                    self.flows.clear();
                }
            }
            let (ia, ib) = self.isns(a, b);
            self.generation += 1;
            let mut f = Flow::default();
            f.ends.insert(
                a,
                End { snd_nxt: ia.wrapping_add(1), rcv_nxt: ib.wrapping_add(1), fin_sent: false },
            );
            f.ends.insert(
                b,
                End { snd_nxt: ib.wrapping_add(1), rcv_nxt: ia.wrapping_add(1), fin_sent: false },
            );
            self.flows.insert(k, f);
        }
        &mut self.flows.get_mut(&k).expect("inserted above").ends
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp_frame(
        &mut self,
        t: Duration,
        from: SocketAddr,
        to: SocketAddr,
        seq: u32,
        ack: u32,
        fl: Flags,
        payload: &[u8],
        dscp: u8,
    ) {
        let (s, d) = (v4(from.ip()), v4(to.ip()));
        let mut b = PacketBuilder::ethernet2(mac(s), mac(d))
            .ip(ip_header(s, d, IpNumber::TCP, dscp))
            .tcp(from.port(), to.port(), seq, WINDOW);
        if fl.syn {
            b = b.syn();
        }
        if fl.ack {
            b = b.ack(ack);
        }
        if fl.fin {
            b = b.fin();
        }
        if fl.rst {
            b = b.rst();
        }
        if fl.psh {
            b = b.psh();
        }
        let mut out = Vec::with_capacity(b.size(payload.len()));
        if b.write(&mut out, payload).is_ok() {
            self.emit(Frame { time: t, data: out, kind: FrameKind::Tcp });
        }
    }
}

fn ip_header(s: [u8; 4], d: [u8; 4], proto: IpNumber, dscp: u8) -> IpHeaders {
    let mut h = Ipv4Header {
        time_to_live: TTL,
        protocol: proto,
        source: s,
        destination: d,
        dont_fragment: proto == IpNumber::TCP,
        ..Ipv4Header::default()
    };
    h.dscp = IpDscp::try_new(dscp & 0x3f).unwrap_or(IpDscp::ZERO);
    IpHeaders::Ipv4(h, Default::default())
}

/// The unspecified IPv4 address, for sockets not yet bound.
pub(crate) const UNSPECIFIED: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{SlicedPacket, TransportSlice};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn handshake_data_fin_have_consistent_seq_ack() {
        let c = Capture::new(1, Duration::ZERO);
        let (a, b) = (sa("10.0.0.1:40000"), sa("10.0.0.2:8443"));
        c.tcp_handshake(Duration::ZERO, Duration::from_millis(1), a, b);
        c.tcp_data(Duration::from_millis(2), a, b, &[7u8; 3000], 0);
        c.tcp_ack_read(Duration::from_millis(3), b, a, 3000);
        c.tcp_fin(Duration::from_millis(4), a, b);
        let frames = c.frames();
        // SYN, SYN-ACK, ACK, 3 data segments (1460+1460+80), ACK, FIN
        assert_eq!(frames.len(), 8);
        let tcp: Vec<_> = frames
            .iter()
            .map(|f| match SlicedPacket::from_ethernet(&f.data).unwrap().transport {
                Some(TransportSlice::Tcp(t)) => t.to_header(),
                other => panic!("not tcp: {other:?}"),
            })
            .collect();
        let isn_a = tcp[0].sequence_number;
        assert!(tcp[0].syn && !tcp[0].ack);
        assert!(tcp[1].syn && tcp[1].ack && tcp[1].acknowledgment_number == isn_a + 1);
        assert_eq!(tcp[3].sequence_number, isn_a + 1);
        assert_eq!(tcp[4].sequence_number, isn_a + 1 + 1460);
        assert_eq!(tcp[5].sequence_number, isn_a + 1 + 2920);
        assert_eq!(tcp[6].acknowledgment_number, isn_a + 1 + 3000);
        assert!(tcp[7].fin && tcp[7].sequence_number == isn_a + 1 + 3000);
    }

    #[test]
    fn spilled_frames_give_the_same_pcapng_and_the_file_goes_with_the_capture() {
        let fill = |c: &Capture| {
            let (a, b) = (sa("10.0.0.1:40000"), sa("10.0.0.2:8443"));
            c.tls_secret("CLIENT_RANDOM 00 11".into());
            c.tcp_handshake(Duration::from_millis(4), Duration::from_millis(5), a, b);
            c.tcp_data(Duration::from_millis(6), a, b, &[7u8; 5000], 0);
            // Out of time order: written where its time puts it.
            c.udp(Duration::from_millis(1), sa("10.0.0.1:5060"), sa("10.0.0.3:5060"), b"x", 0);
            c.tcp_fin(Duration::from_millis(6), a, b);
        };
        let (mem, disk) = (Capture::new(9, Duration::ZERO), Capture::spilling(9, Duration::ZERO));
        fill(&mem);
        fill(&disk);
        let path =
            disk.lock().spill.as_ref().map(|s| s.file.path().to_owned()).expect("a spill file");
        assert!(disk.lock().frames.is_empty(), "frame bytes are on disk");
        assert_eq!(disk.tls_keylog(), "CLIENT_RANDOM 00 11\n", "and the key log too");
        assert_eq!(disk.len(), mem.len());
        let a = mem.write_pcapng(Vec::new()).unwrap();
        assert_eq!(disk.write_pcapng(Vec::new()).unwrap(), a);
        assert!(path.exists());
        // frames() brings them back into memory; later frames join them there.
        assert_eq!(disk.frames().len(), mem.frames().len());
        assert!(!path.exists(), "the spill file is gone once its frames are back");
        disk.udp(Duration::from_millis(9), sa("10.0.0.1:1"), sa("10.0.0.2:2"), b"y", 0);
        mem.udp(Duration::from_millis(9), sa("10.0.0.1:1"), sa("10.0.0.2:2"), b"y", 0);
        assert_eq!(disk.write_pcapng(Vec::new()).unwrap(), mem.write_pcapng(Vec::new()).unwrap());
        let other = Capture::spilling(9, Duration::ZERO);
        let path =
            other.lock().spill.as_ref().map(|s| s.file.path().to_owned()).expect("a spill file");
        drop(other);
        assert!(!path.exists(), "removed with the capture");
    }

    #[test]
    fn pcapng_round_trips_through_pcap_file() {
        let c = Capture::new(1, Duration::from_secs(1_700_000_000));
        c.udp(Duration::from_millis(5), sa("10.0.0.1:5353"), sa("10.0.0.2:53"), b"hello", 0);
        let bytes = c.write_pcapng(Vec::new()).unwrap();
        let mut r = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
        let mut n = 0;
        while let Some(block) = r.next_block() {
            if let pcap_file::pcapng::Block::EnhancedPacket(epb) = block.unwrap() {
                assert_eq!(
                    epb.timestamp,
                    Duration::from_secs(1_700_000_000) + Duration::from_millis(5)
                );
                n += 1;
            }
        }
        assert_eq!(n, 1);
    }

    /// Issue 13: a streaming capture writes each frame and secret as it comes and keeps none.
    #[test]
    fn streaming_capture_writes_as_it_goes_and_keeps_nothing() {
        let path = std::env::temp_dir().join(format!("uclab-stream-{}.pcapng", std::process::id()));
        let c = Capture::streaming(&path, 1, Duration::from_secs(1_700_000_000)).unwrap();
        c.tls_secret("CLIENT_RANDOM 00 11".into());
        let (a, b) = (sa("127.0.0.1:40000"), sa("127.1.0.11:8443"));
        c.tcp_handshake(Duration::from_millis(1), Duration::from_millis(1), a, b);
        c.tcp_data(Duration::from_millis(2), a, b, b"GET / HTTP/1.1\r\n\r\n", 0);
        c.udp(Duration::from_millis(3), a, b, b"x", 0);
        assert!(c.is_empty(), "nothing kept in memory");
        assert!(c.tls_keylog().is_empty());
        // Readable while the capture is still open: everything is flushed already.
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut r = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
        let (mut packets, mut secrets) = (0, 0);
        while let Some(block) = r.next_block() {
            match block.unwrap() {
                pcap_file::pcapng::Block::EnhancedPacket(epb) => {
                    assert!(epb.timestamp > Duration::from_secs(1_700_000_000));
                    packets += 1;
                }
                pcap_file::pcapng::Block::Unknown(u) if u.type_ == 0x0000_000A => {
                    assert_eq!(packets, 0, "the secret comes before the packets");
                    secrets += 1;
                }
                _ => {}
            }
        }
        assert_eq!((packets, secrets), (3 + 1 + 1, 1), "handshake, data segment, datagram");
    }

    #[test]
    fn many_tls_secrets_split_into_readable_blocks() {
        let c = Capture::new(1, Duration::ZERO);
        // About 3 MiB of key log: more than one block's worth.
        for i in 0..20_000 {
            c.tls_secret(format!("CLIENT_TRAFFIC_SECRET_0 {i:064x} {:0128x}", i * 7));
        }
        let bytes = c.write_pcapng(Vec::new()).unwrap();
        let mut r = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
        let (mut blocks, mut text) = (0, Vec::new());
        while let Some(block) = r.next_block() {
            if let pcap_file::pcapng::Block::Unknown(u) = block.unwrap() {
                assert_eq!(u.type_, 0x0000_000A, "a Decryption Secrets Block");
                assert!(u.value.len() <= DSB_MAX + 12, "block of {} bytes", u.value.len());
                let len = u32::from_be_bytes(u.value[4..8].try_into().unwrap()) as usize;
                text.extend_from_slice(&u.value[8..8 + len]);
                blocks += 1;
            }
        }
        assert!(blocks > 1, "{blocks} blocks");
        assert_eq!(String::from_utf8(text).unwrap(), c.tls_keylog(), "whole lines, in order");
    }
}

//! Runs a scenario in a turmoil world and collects its outputs.
//!
//! One run is single-threaded and deterministic: turmoil's `rng_seed` and `epoch` are always
//! set, every random choice of our nodes comes from [`uclab_net::SeededRng`] streams derived
//! from the seed, and the capture and transcript are built in simulated time.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use std::sync::Arc;
use uclab_client::driver::{self, ClientConfig, UserAction};

use uclab_net::tls::{LabPki, TlsContext};
use uclab_net::{Capture, EventRef, Events, Lab, Policy, SimNet, Transcript};

use crate::nodes;
use crate::scenario::{Expect, Scenario, StepAction};
use crate::time::fmt_secs;

/// Time a run goes on after everything is settled, so closing packets show in the capture.
const GRACE: Duration = Duration::from_millis(200);

/// The verdict on one expectation.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The expectation.
    pub expect: Expect,
    /// Whether it held.
    pub passed: bool,
    /// When the matching event happened, if it did.
    pub at: Option<Duration>,
    /// Explanation for people.
    pub detail: String,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// Scenario file.
    pub file: PathBuf,
    /// Seed used.
    pub seed: u64,
    /// All expectations held and the simulation did not fail.
    pub passed: bool,
    /// Verdicts in file order.
    pub verdicts: Vec<Verdict>,
    /// Simulated time at the end.
    pub sim_time: Duration,
    /// pcapng bytes.
    pub capture: Vec<u8>,
    /// Transcript text (empty when `written`: then it is `written`/transcript.txt).
    pub transcript: String,
    /// Client events.
    pub events: Events,
    /// Each message line's frame and bytes (messages.jsonl, for the ladder: issue 20).
    pub messages: Vec<crate::ladder::MessageRecord>,
    /// The name of each address in the run (nodes and clients), by address.
    pub addresses: std::collections::BTreeMap<String, String>,
    /// A failure of the simulation itself (a node's task failed).
    pub error: Option<String>,
    /// Where `uclab run` wrote the outputs (`--out`), for the replay line.
    pub out: Option<PathBuf>,
    /// The directory capture.pcapng, messages.jsonl and transcript.txt went straight to
    /// ([`run_into`]); then `capture`, `messages` and `transcript` are empty.
    pub written: Option<PathBuf>,
    /// Wall-clock time the run took (filled in by the command; reports only, never a run's
    /// input).
    pub wall: Duration,
}

fn matches(e: &Expect, ev: &EventRef<'_>) -> bool {
    ev.time() >= e.after
        && ev.kind() == e.event
        && e.is_for(ev.who())
        && e.fields.iter().all(|(k, want)| {
            ev.fields().any(|(fk, v)| fk == k && want.split('|').any(|w| field_matches(w, v)))
        })
}

/// One alternative of an expected field: `prefix*`, a whole-number range `lo..hi` (both
/// ends included), or the exact value.
fn field_matches(want: &str, v: &str) -> bool {
    if let Some(prefix) = want.strip_suffix('*') {
        return v.starts_with(prefix);
    }
    let range = want
        .split_once("..")
        .and_then(|(lo, hi)| Some((lo.parse::<i64>().ok()?, hi.parse::<i64>().ok()?)));
    match range {
        Some((lo, hi)) => v.parse::<i64>().is_ok_and(|n| (lo..=hi).contains(&n)),
        None => want == v,
    }
}

/// Judges a counting or many-client expectation: `count` matching events in all, or (with a
/// client pattern and no count) a matching event for every client the pattern names, or for
/// `absent` none at all.
fn evaluate_many(e: &Expect, clients: &[String], events: &Events, end: Duration) -> Verdict {
    let hits: Vec<EventRef<'_>> =
        events.iter().filter(|ev| ev.time() <= e.within && matches(e, ev)).collect();
    let early = end < e.within;
    let (passed, detail) = if let Some(want) = e.count {
        let n = hits.len();
        match (n == want, early) {
            (true, false) => (true, format!("{n} events by {}", fmt_secs(e.within))),
            (_, true) => (false, format!("run ended at {} before the deadline", fmt_secs(end))),
            (false, false) => (false, format!("{n} events by {}, want {want}", fmt_secs(e.within))),
        }
    } else {
        let seen: BTreeSet<&str> = hits.iter().map(EventRef::who).collect();
        let named: Vec<&String> = clients.iter().filter(|c| e.is_for(c)).collect();
        let missing: Vec<&str> =
            named.iter().filter(|c| !seen.contains(c.as_str())).map(|c| c.as_str()).collect();
        match (e.absent, missing.len()) {
            (false, 0) => (true, format!("all {} clients by {}", named.len(), fmt_secs(e.within))),
            (false, m) => (
                false,
                format!(
                    "{m} of {} clients did not see it by {} (first: {})",
                    named.len(),
                    fmt_secs(e.within),
                    missing.iter().take(5).copied().collect::<Vec<_>>().join(", ")
                ),
            ),
            (true, _) if !seen.is_empty() => {
                (false, format!("seen by {} clients but must not happen", seen.len()))
            }
            (true, _) if early => {
                (false, format!("run ended at {} before the deadline", fmt_secs(end)))
            }
            (true, _) => (true, format!("not seen by {}", fmt_secs(e.within))),
        }
    };
    Verdict { expect: e.clone(), passed, at: hits.last().map(EventRef::time), detail }
}

/// Judges expectations against the events of a run that lasted until `end`; `clients` are
/// the scenario's client names (for expectations about many clients).
pub fn evaluate(
    expects: &[Expect],
    clients: &[String],
    events: &Events,
    end: Duration,
) -> Vec<Verdict> {
    expects
        .iter()
        .map(|e| {
            if e.count.is_some() || e.client.ends_with('*') {
                return evaluate_many(e, clients, events, end);
            }
            let hit = events.iter().find(|ev| matches(e, ev) && ev.time() <= e.within);
            let (passed, detail) = match (hit, e.absent) {
                (Some(ev), false) => (true, format!("seen at {}", fmt_secs(ev.time()))),
                (None, true) if end >= e.within => {
                    (true, format!("not seen by {}", fmt_secs(e.within)))
                }
                (None, true) => (
                    false,
                    format!(
                        "run ended at {} before the deadline {}",
                        fmt_secs(end),
                        fmt_secs(e.within)
                    ),
                ),
                (Some(ev), true) => {
                    (false, format!("seen at {} but must not happen", fmt_secs(ev.time())))
                }
                (None, false) => {
                    let seen: Vec<String> = events
                        .iter()
                        .filter(|ev| ev.who() == e.client && ev.kind() == e.event)
                        .map(|ev| {
                            let f: Vec<String> =
                                ev.fields().map(|(k, v)| format!("{k}={v}")).collect();
                            format!("{} {}", fmt_secs(ev.time()), f.join(" "))
                        })
                        .collect();
                    let also = if seen.is_empty() {
                        String::from("no such event at all")
                    } else {
                        format!("saw instead: {}", seen.join("; "))
                    };
                    (false, format!("not seen within {}; {also}", fmt_secs(e.within)))
                }
            };
            Verdict { expect: e.clone(), passed, at: hit.map(|h| h.time()), detail }
        })
        .collect()
}

/// The first whole millisecond at or after `d` (the runner's loop counts 1 ms ticks).
fn ms_ceil(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000).try_into().unwrap_or(u64::MAX)
}

/// Whether expectation `e` is decided at `now`: its event was seen (a pass, or for `absent` a
/// failure) or its deadline has passed.
fn decided(e: &Expect, events: &Events, now: Duration) -> bool {
    now >= e.within
        || (e.count.is_none()
            && !e.client.ends_with('*')
            && events.iter().any(|ev| matches(e, &ev) && ev.time() <= e.within))
}

/// Whether every expectation is decided.
fn settled(expects: &[Expect], events: &Events, now: Duration) -> bool {
    expects.iter().all(|e| decided(e, events, now))
}

/// The first millisecond at which the expectations not decided at `now` all are, if no event
/// comes meanwhile (the last of their deadlines).
fn settled_by(expects: &[Expect], events: &Events, now: Duration) -> u64 {
    expects
        .iter()
        .filter(|e| !decided(e, events, now))
        .map(|e| ms_ceil(e.within))
        .max()
        .unwrap_or(0)
}

/// Runs `s` with `seed`.
pub fn run(s: &Scenario, seed: u64) -> RunResult {
    run_with(s, seed, true, &mut |_| {}, None)
}

/// [`run`], telling `watch` the simulated time reached as the run goes (progress displays),
/// and writing capture.pcapng and messages.jsonl straight into `dir` rather than into the result (issue 19: a day's soak has a capture of 800 MB, a storm's messages are
/// hundreds of MB). Where `dir` cannot be written the result holds them, as [`run`]'s does.
pub fn run_into(
    s: &Scenario,
    seed: u64,
    dir: &std::path::Path,
    watch: &mut dyn FnMut(Duration),
) -> RunResult {
    run_with(s, seed, true, watch, Some(dir))
}

/// [`run`] stepping every host through every simulated millisecond, as turmoil upstream does:
/// slower, and byte for byte the same outputs (issue 19's exactness test compares the two).
pub fn run_stepwise(s: &Scenario, seed: u64) -> RunResult {
    run_with(s, seed, false, &mut |_| {}, None)
}

fn run_with(
    s: &Scenario,
    seed: u64,
    event_driven: bool,
    watch: &mut dyn FnMut(Duration),
    into: Option<&std::path::Path>,
) -> RunResult {
    // Frame bytes wait on disk, not in memory, until the capture is written (issue 19).
    let capture = Capture::spilling(seed, s.epoch);
    let transcript = Transcript::spilling();
    transcript.track(capture.clone());
    let mut error = None;
    let policy = match Policy::new(s.zones.clone(), s.rules.clone()) {
        Ok(p) => p,
        Err(e) => {
            error = Some(e.to_string());
            Policy::default()
        }
    };
    for n in &s.nodes {
        transcript.set_name(n.ip, &n.name);
    }
    // Each node's TLS randomness comes from its own stream under the seed (SimNet::new, see
    // uclab_net::tls).
    let pki = match LabPki::new(seed) {
        Ok(p) => Arc::new(p),
        Err(e) => panic!("the lab PKI cannot be built: {e}"),
    };
    let lab = Lab {
        seed,
        capture: capture.clone(),
        policy: policy.clone(),
        transcript: transcript.clone(),
        tls: TlsContext::sim(pki, capture.clone(), s.epoch),
    };
    for c in &s.clients {
        transcript.set_name(c.ip, &c.name);
    }

    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + s.epoch)
        .simulation_duration(s.duration + GRACE * 2)
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(s.latency)
        .max_message_latency(s.latency)
        // turmoil buffers 64 messages per host by default; a Linux socket holds thousands of
        // small datagrams (rmem_default 208 KiB), and a busy server must not drop a burst.
        .udp_capacity(4096)
        .tcp_capacity(4096)
        .event_driven(event_driven)
        .build();

    let no_live = std::collections::BTreeMap::new();
    let shared = nodes::Shared::new(seed);
    for n in &s.nodes {
        let plan = nodes::plan(s, &n.name, &|_, svc| svc.port, &no_live, &shared)
            .expect("the node exists");
        let (ip, name, lab) = (n.ip, n.name.clone(), lab.clone());
        sim.host(ip, move || {
            let net = SimNet::new(ip, &name, &lab);
            let plan = plan.clone();
            async move {
                nodes::run(net, plan).await?;
                Ok(())
            }
        });
    }

    // Users signed in to IM stay until the last step or deadline of the scenario.
    let horizon = s
        .steps
        .iter()
        .map(|st| st.at)
        .chain(s.expects.iter().map(|e| e.within))
        .max()
        .unwrap_or_default();
    for c in &s.clients {
        let actions: Vec<_> = s
            .steps
            .iter()
            .filter_map(|st| match &st.action {
                StepAction::Discover { client, discovery } if *client == c.name => {
                    Some((st.at, UserAction::Discover { discovery: discovery.clone() }))
                }
                StepAction::Move { client, dns, .. } if *client == c.name => Some((
                    st.at,
                    UserAction::NetworkChanged {
                        dns: dns.iter().filter_map(|d| s.node_addr(d, 53)).collect(),
                    },
                )),
                StepAction::Im { client, action } if *client == c.name => {
                    Some((st.at, UserAction::Im(action.clone())))
                }
                StepAction::Call { client, action } if *client == c.name => {
                    Some((st.at, UserAction::Call(action.clone())))
                }
                StepAction::Feature { client, feature } if *client == c.name => {
                    Some((st.at, UserAction::Feature { name: feature.clone() }))
                }
                StepAction::PhoneCredentials { client, user, password } if *client == c.name => {
                    let (user, password) = (user.clone(), password.clone());
                    Some((st.at, UserAction::PhoneCredentials { user, password }))
                }
                StepAction::Install { client, bootstrap } if *client == c.name => {
                    Some((st.at, UserAction::Install { bootstrap: bootstrap.clone() }))
                }
                StepAction::XmppSignIn { client, server, domain, user, password }
                    if *client == c.name =>
                {
                    Some((
                        st.at,
                        UserAction::ImDirect {
                            server: *server,
                            domain: domain.clone(),
                            user: user.clone(),
                            password: password.clone(),
                        },
                    ))
                }
                StepAction::SignIn { client, discovery, user, password } if *client == c.name => {
                    Some((
                        st.at,
                        UserAction::SignIn {
                            discovery: discovery.clone(),
                            user: user.clone(),
                            password: password.clone(),
                        },
                    ))
                }
                _ => None,
            })
            .collect();
        let cfg = ClientConfig {
            name: c.name.clone(),
            dns: c.dns.iter().filter_map(|d| s.node_addr(d, 53)).collect(),
            bootstrap: c.bootstrap.clone(),
            stay_until: horizon,
        };
        let net = SimNet::new(c.ip, &c.name, &lab);
        sim.client(c.ip, async move {
            driver::run(net, cfg, actions).await?;
            Ok(())
        });
    }

    let client_step = |a: &StepAction| {
        matches!(
            a,
            StepAction::Discover { .. }
                | StepAction::SignIn { .. }
                | StepAction::XmppSignIn { .. }
                | StepAction::PhoneCredentials { .. }
                | StepAction::Feature { .. }
                | StepAction::Install { .. }
                | StepAction::Im { .. }
                | StepAction::Call { .. }
                // Done by the sip-domain node itself (it has the steps from its plan).
                | StepAction::SipUser { .. }
        )
    };
    let mut faults: VecDeque<_> = s.steps.iter().filter(|st| !client_step(&st.action)).collect();
    // Issue 14: once every step has been performed, decided expectations end the run even if
    // the clients would stay signed in until the last deadline.
    let last_step = s.steps.iter().map(|st| st.at).max().unwrap_or_default();
    // The run ends GRACE after the last step or deadline once the clients are done; clients
    // still working (a storm, a long failover) keep it going up to the scenario's duration.
    let mut end = s.duration;
    let mut clients_done = s.clients.is_empty();
    let mut grace_set = false;
    let ip = |n: &str| s.host_ip(n).expect("validated host name");
    let mut ticks: u64 = 0;
    // The last expectation check that found them unsettled: how many events it saw, and the
    // millisecond by which they settle if no event comes.
    let mut unsettled: Option<(usize, u64)> = None;
    while error.is_none() {
        let now = sim.elapsed();
        watch(now);
        while let Some(st) = faults.front().filter(|st| st.at <= now) {
            let note = match &st.action {
                StepAction::Crash { node } => {
                    sim.crash(ip(node));
                    format!("crash {node}")
                }
                StepAction::Restart { node } => {
                    sim.bounce(ip(node));
                    format!("restart {node}")
                }
                StepAction::Blackhole { a, b } => {
                    policy.blackhole(ip(a), ip(b));
                    format!("blackhole {a} <-> {b}")
                }
                StepAction::Heal { a, b } => {
                    policy.heal(ip(a), ip(b));
                    format!("heal {a} <-> {b}")
                }
                StepAction::Partition { a, b } => {
                    sim.partition(ip(a), ip(b));
                    format!("partition {a} <-> {b}")
                }
                StepAction::Repair { a, b } => {
                    sim.repair(ip(a), ip(b));
                    format!("repair {a} <-> {b}")
                }
                StepAction::Latency { a, b, value } => {
                    sim.set_link_latency(ip(a), ip(b), *value);
                    format!("latency {a} <-> {b} {}", fmt_secs(*value))
                }
                StepAction::Loss { a, b, probability } => {
                    policy.set_loss(ip(a), ip(b), *probability);
                    format!("loss {a} <-> {b} {probability}")
                }
                StepAction::Move { client, zone, .. } => {
                    policy.move_host(ip(client), zone);
                    format!("move {client} to {zone}")
                }
                StepAction::Firewall(r) => {
                    policy.push_front(r.clone());
                    let port = r.port.map(|p| format!(" port {p}")).unwrap_or_default();
                    let proto = r.proto.as_ref().map(|p| format!(" {p}")).unwrap_or_default();
                    format!("firewall {} -> {}{proto}{port}: {:?}", r.from, r.to, r.action)
                }
                StepAction::Discover { .. }
                | StepAction::SignIn { .. }
                | StepAction::XmppSignIn { .. }
                | StepAction::PhoneCredentials { .. }
                | StepAction::Feature { .. }
                | StepAction::Install { .. }
                | StepAction::Im { .. }
                | StepAction::Call { .. }
                | StepAction::SipUser { .. } => {
                    unreachable!("filtered above")
                }
            };
            transcript.note(now, "lab", &note);
            faults.pop_front();
        }
        if now >= end {
            break;
        }
        // Checking expectations reads every event: do it every 50 ms of simulation.
        if !grace_set
            && (clients_done || now >= last_step)
            && faults.is_empty()
            && ticks.is_multiple_of(50)
        {
            let (done, seen, by) = transcript.with_events(|events| {
                let done = settled(&s.expects, events, now);
                (done, events.len(), if done { 0 } else { settled_by(&s.expects, events, now) })
            });
            if done {
                end = end.min(now + GRACE);
                grace_set = true;
            } else {
                unsettled = Some((seen, by));
            }
        }
        // Issue 19: jump over ticks in which no host has anything to do and no message lands
        // (turmoil's event-driven time), never past a tick at which this loop acts: the next
        // fault, the end, the next expectation check that could find them settled (with no
        // new event since the last check, not before the last open deadline has passed).
        let check = (!grace_set && faults.is_empty()).then(|| {
            let mut from =
                if clients_done { ticks + 1 } else { (ticks + 1).max(ms_ceil(last_step)) };
            if let Some((seen, by)) = unsettled
                && transcript.with_events(|events| events.len()) == seen
            {
                from = from.max(by);
            }
            from.next_multiple_of(50)
        });
        let bound = [faults.front().map(|st| ms_ceil(st.at)), Some(ms_ceil(end)), check]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(ticks)
            .saturating_sub(ticks);
        let skipped = sim.skip_idle(bound);
        if skipped > 0 {
            ticks += skipped;
            continue;
        }
        match sim.step() {
            Ok(done) => clients_done = done,
            Err(e) => error = Some(e.to_string()),
        }
        ticks += 1;
    }
    let sim_time = sim.elapsed();
    drop(sim);

    let events = transcript.take_events();
    let names: Vec<String> = s.clients.iter().map(|c| c.name.clone()).collect();
    let verdicts = evaluate(&s.expects, &names, &events, sim_time);
    let passed = error.is_none() && verdicts.iter().all(|v| v.passed);
    let addresses = transcript.names().into_iter().map(|(ip, n)| (ip.to_string(), n)).collect();
    let head = format!("# uclab transcript: scenario {} seed {seed}\n", s.name);
    let written = into.filter(|dir| write_streamed(dir, &transcript, &capture, &head).is_ok());
    let (capture, messages) = match written {
        Some(_) => (Vec::new(), Vec::new()),
        None => {
            let mut messages = Vec::new();
            for_each_record(&transcript, &capture, |r| messages.push(r));
            (capture.write_pcapng(Vec::new()).unwrap_or_default(), messages)
        }
    };
    let text = match written {
        Some(_) => String::new(),
        None => transcript.render_after(&head),
    };
    RunResult {
        scenario: s.name.clone(),
        file: s.file.clone(),
        seed,
        passed,
        verdicts,
        sim_time,
        capture,
        transcript: text,
        events,
        messages,
        addresses,
        error,
        out: None,
        written: written.map(std::path::Path::to_path_buf),
        wall: Duration::ZERO,
    }
}

/// Writes capture.pcapng, messages.jsonl and transcript.txt (`head` first) into `dir` as they
/// are read from disk.
fn write_streamed(
    dir: &std::path::Path,
    transcript: &Transcript,
    capture: &Capture,
    head: &str,
) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let file = std::io::BufWriter::new(std::fs::File::create(dir.join("transcript.txt"))?);
    transcript.write_after(head, file)?.flush()?;
    let file = std::io::BufWriter::new(std::fs::File::create(dir.join("capture.pcapng"))?);
    capture.write_pcapng(file)?.flush()?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("messages.jsonl"))?);
    let mut result = Ok(());
    let mut line = Vec::new();
    for_each_record(transcript, capture, |r| {
        if result.is_ok() {
            line.clear();
            crate::ladder::data::write_jsonl(&mut line, &r);
            result = out.write_all(&line);
        }
    });
    result?;
    out.flush()
}

/// `f` of each message line's record, in transcript order: its line in transcript.txt (after
/// the header line), its frame and its bytes.
fn for_each_record(
    transcript: &Transcript,
    capture: &Capture,
    mut f: impl FnMut(crate::ladder::MessageRecord),
) {
    let Some(mut store) = capture.messages() else { return };
    let mut line = 2;
    transcript.for_each_line(|_, text, kind| {
        if let uclab_net::LineKind::Message(Some(id)) = kind
            && let Some((frame, m)) = store.get(id)
        {
            f(crate::ladder::MessageRecord { line, frame, bytes: m.bytes, cut: m.cut });
        }
        line += 1 + text.matches('\n').count();
    });
}

#[cfg(test)]
mod tests {
    use super::field_matches;

    #[test]
    fn field_patterns_exact_prefix_and_range() {
        assert!(field_matches("3000", "3000"));
        assert!(!field_matches("3000", "30000"));
        assert!(field_matches("clusterUser: TLS*", "clusterUser: TLS handshake"));
        assert!(field_matches("3000..3501", "3000") && field_matches("3000..3501", "3501"));
        assert!(!field_matches("3000..3501", "3502") && !field_matches("3000..3501", "x"));
        assert!(field_matches("1.2..3", "1.2..3"), "not numbers: exact");
    }
}

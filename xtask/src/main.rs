//! `cargo xtask ci | bless | sweep | bench | fuzz`: the project's chores in one place.
//!
//! `bench` measures, for each scenario of a suite, the wall time of a run (median of 5),
//! the ratio of simulated to wall time, and the peak RSS of a process that runs only that
//! scenario. Wall-clock reads are fine here: they measure runs, they never shape one.

#![allow(clippy::disallowed_methods)]

mod table;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn sh(cmd: &mut Command) -> bool {
    eprintln!("$ {cmd:?}");
    cmd.current_dir(root()).status().is_ok_and(|s| s.success())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn has_nextest() -> bool {
    cargo().args(["nextest", "--version"]).output().is_ok_and(|o| o.status.success())
}

fn ci() -> bool {
    sh(cargo().args(["fmt", "--all", "--", "--check"]))
        && sh(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
        && if has_nextest() {
            sh(cargo().args(["nextest", "run", "--workspace", "--no-fail-fast"]))
        } else {
            sh(cargo().args(["test", "--workspace", "--no-fail-fast"]))
        }
        && sh(cargo().args(["test", "--workspace", "--doc"]))
        && sh(cargo().args(["doc", "--workspace", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings"))
}

/// Scenario files of a suite, load scenarios (`heavy = true`) left out: they have their own
/// benches (`bench cap1`) and take minutes a run.
fn scenario_files(suite: &str) -> Vec<PathBuf> {
    let files =
        uclab_sim::commands::collect(&[root().join("scenarios").join(suite)]).unwrap_or_default();
    files.into_iter().filter(|f| uclab_sim::load(f).map_or(true, |s| !s.heavy)).collect()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// Runs one scenario 5 times in this process and prints one JSON line.
fn bench_one(file: &Path) -> bool {
    let Ok(s) = uclab_sim::load(file) else {
        eprintln!("{}: does not check", file.display());
        return false;
    };
    let mut walls = Vec::new();
    let mut sim = Duration::ZERO;
    let mut passed = true;
    for _ in 0..5 {
        let t = Instant::now();
        let r = uclab_sim::run(&s, s.seed);
        walls.push(t.elapsed());
        sim = r.sim_time;
        passed &= r.passed;
    }
    walls.sort();
    let median = walls[walls.len() / 2];
    let line = serde_json::json!({
        "scenario": s.name,
        "wall_ms_median": median.as_secs_f64() * 1e3,
        "sim_s": sim.as_secs_f64(),
        "sim_per_wall": sim.as_secs_f64() / median.as_secs_f64().max(1e-9),
        "peak_rss_mib": peak_rss_kib() as f64 / 1024.0,
        "passed": passed,
    });
    println!("{line}");
    passed
}

fn bench(suite: &str) -> bool {
    let exe = std::env::current_exe().expect("own path");
    println!(
        "{:<32} {:>12} {:>10} {:>12} {:>10}",
        "scenario", "wall median", "simulated", "sim/wall", "peak RSS"
    );
    let mut ok = true;
    for f in scenario_files(suite) {
        // One process per scenario, so the peak RSS is that scenario's.
        let out = Command::new(&exe).arg("bench-one").arg(&f).output();
        let Ok(out) = out else { return false };
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(v) =
            text.lines().last().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        else {
            eprintln!("{}: no result", f.display());
            ok = false;
            continue;
        };
        println!(
            "{:<32} {:>9.1} ms {:>9.3}s {:>11.0}x {:>6.1} MiB{}",
            v["scenario"].as_str().unwrap_or("?"),
            v["wall_ms_median"].as_f64().unwrap_or(0.0),
            v["sim_s"].as_f64().unwrap_or(0.0),
            v["sim_per_wall"].as_f64().unwrap_or(0.0),
            v["peak_rss_mib"].as_f64().unwrap_or(0.0),
            if v["passed"].as_bool() == Some(true) { "" } else { "  (FAILED)" }
        );
        ok &= v["passed"].as_bool() == Some(true);
        // Issue 16's target: a sign-in through the edge (discovery, get_edge_config over the
        // traversal zone, UDS and TFTP through it) in under 200 ms of wall time.
        if v["scenario"] == "signin-through-edge" {
            let ms = v["wall_ms_median"].as_f64().unwrap_or(f64::MAX);
            println!(
                "  target: MRA sign-in under 200 ms wall: {ms:.1} ms ({:.2} of the target, {})",
                ms / 200.0,
                if ms < 200.0 { "met" } else { "MISSED" }
            );
        }
    }
    ok
}

/// A scenario in which `n` clients, each with its own user, sign in ten per millisecond
/// (10,000 sign-ins a second, as after a site's WAN comes back). All at once, beyond about
/// 1,000 clients the internal DNS server's socket queue (4,096 datagrams, four queries per
/// client) overflows and clients that exhaust their retries fall back to manual settings.
/// The storm's scenario: `n` users and clients signing in together, ten per simulated
/// millisecond; `outside`: at home (a zone of their own that reaches the DMZ and never the
/// inside), through the edge (SPEC MRA1).
fn storm_text(n: usize, outside: bool) -> String {
    let mut t = String::from(
        "name = \"signin-storm\"\nsummary = \"sign-in storm\"\nseed = 1\nduration = \"120s\"\n",
    );
    if outside {
        t.push_str(
            "[[zone]]\nname = \"home\"\nsubnet = \"198.18.0.0/15\"\n\
             [[rule]]\nfrom = \"home\"\nto = \"inside\"\nverdict = \"drop\"\n",
        );
    }
    for i in 0..n {
        let (hi, lo) = (2 + i / 250, 1 + i % 250);
        let ms = i / 10;
        let (ip, dns) = if outside {
            (format!("198.18.{hi}.{lo}"), "dns-ext")
        } else {
            (format!("10.1.{hi}.{lo}"), "dns-int")
        };
        // Outside, each user has a line (a softphone to register through the edge).
        let line =
            if outside { format!("extension = \"{}\"\n", 20_000 + i) } else { String::new() };
        t.push_str(&format!(
            "[[user]]\nid = \"u{i}\"\ncluster = \"cluster1\"\n{line}\
             [[client]]\nname = \"c{i}\"\nip = \"{ip}\"\ndns = [\"{dns}\"]\naddress = \"u{i}@example.com\"\n\
             [[step]]\nat = \"{ms}ms\"\naction = \"sign-in\"\nclient = \"c{i}\"\n"
        ));
    }
    if outside {
        // Every client signed in, IM and phone included, within 2 s of simulated time (the
        // run lasts that long: a counted expectation is settled at its deadline).
        for ev in ["signed-in", "im-signed-in", "phone-registered"] {
            t.push_str(&format!(
                "[[expect]]\nclient = \"c*\"\nevent = \"{ev}\"\nwithin = \"2s\"\ncount = {n}\n"
            ));
        }
    }
    // One expectation per client would make the check quadratic; the run result counts them.
    t
}

/// Runs the storm with `n` clients in this process and prints one JSON line. Each client signs
/// in through UDS and then to IM&P (SOAP and XMPP, SPEC AU4); `sim_s_all_signed_in` is when the
/// last UDS sign-in completed.
fn storm_one(n: usize) -> bool {
    storm_run(n, false)
}

/// Issue 17's bench: `n` clients sign in together through the edge (HTTP, XMPP and SIP
/// through Expressway-E and -C); prints one JSON line with the wall time, peak RSS and how many
/// got each service.
fn mra_storm_one(n: usize) -> bool {
    storm_run(n, true)
}

fn storm_run(n: usize, outside: bool) -> bool {
    let text = storm_text(n, outside);
    let s = match uclab_sim::parse("storm.toml", &text, Path::new("storm.toml")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("storm scenario: {:?}", e.first());
            return false;
        }
    };
    let (r, wall, capture_mib, transcript_mib) = run_written(&s);
    let wall = Duration::from_secs_f64(wall);
    let signed = r.events.iter().filter(|e| e.kind() == "signed-in").count();
    // Why the others did not sign in: failure reasons and how often.
    let mut failures: std::collections::BTreeMap<String, usize> = Default::default();
    for e in
        r.events.iter().filter(|e| e.kind().ends_with("-failed") && e.kind() != "target-failed")
    {
        let reason = e.fields().find(|(k, _)| *k == "reason").map_or("", |(_, v)| v);
        *failures.entry(format!("{}: {reason}", e.kind())).or_default() += 1;
    }
    let last = r
        .events
        .iter()
        .filter(|e| e.kind() == "signed-in")
        .map(|e| e.time())
        .max()
        .unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "clients": n,
            "signed_in": signed,
            "im_connected": r.events.iter().filter(|e| e.kind() == "im-signed-in").count(),
            "phone_registered": r.events.iter().filter(|e| e.kind() == "phone-registered").count(),
            "through_edge": outside,
            "wall_s": wall.as_secs_f64(),
            "sim_s_all_signed_in": last.as_secs_f64(),
            "sim_s_run": r.sim_time.as_secs_f64(),
            "peak_rss_mib": peak_rss_kib() as f64 / 1024.0,
            "transcript_mib": transcript_mib,
            "capture_mib": capture_mib,
            "error": r.error,
            "failures": failures,
        })
    );
    signed == n
}

fn storm(sizes: &[usize]) -> bool {
    let exe = std::env::current_exe().expect("own path");
    println!(
        "{:>8} {:>10} {:>8} {:>10} {:>16} {:>10}",
        "clients", "signed in", "XMPP", "wall", "sim (all in)", "peak RSS"
    );
    let mut ok = true;
    for n in sizes {
        let out = Command::new(&exe).arg("storm-one").arg(n.to_string()).output();
        let Ok(out) = out else { return false };
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(v) =
            text.lines().last().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        else {
            eprintln!("{n} clients: no result\n{}", String::from_utf8_lossy(&out.stderr));
            ok = false;
            continue;
        };
        println!(
            "{:>8} {:>10} {:>8} {:>8.2} s {:>14.3} s {:>6.0} MiB",
            n,
            v["signed_in"].as_u64().unwrap_or(0),
            v["im_connected"].as_u64().unwrap_or(0),
            v["wall_s"].as_f64().unwrap_or(0.0),
            v["sim_s_all_signed_in"].as_f64().unwrap_or(0.0),
            v["peak_rss_mib"].as_f64().unwrap_or(0.0),
        );
        ok &= v["signed_in"].as_u64() == Some(*n as u64);
    }
    ok
}

/// SPEC CAP2 on the IM&P router: `users` users with `contacts` contacts each change state once
/// in a simulated hour; one JSON line with the rates the design guide quotes and the wall time.
fn cap2_one(users: usize, contacts: usize) -> bool {
    let t = Instant::now();
    let r = uclab_sim::capacity::cap2(users, contacts, 3_600, 1);
    let wall = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "users": users,
            "contacts": contacts,
            "sim_s": r.seconds,
            "notifications": r.notifications,
            "per_s_cluster": r.notifications as f64 / r.seconds as f64,
            "per_s_cluster_rounded_up": r.cluster_rate(),
            "per_s_pair_rounded_up": r.pair_rates(),
            "peak_second": r.peak_second,
            "wall_s": wall,
            "notifications_per_wall_s": r.notifications as f64 / wall,
            "peak_rss_mib": peak_rss_kib() as f64 / 1024.0,
        })
    );
    r.notifications == (users * contacts) as u64
}

/// Issue 5's REGISTER bench in simulation: `n` softphone engines register to the CUCM
/// mock's core and keep registering for `hours` simulated hours; one JSON line.
fn register_one(n: usize, hours: f64) -> bool {
    let sim = Duration::from_secs_f64(hours * 3600.0);
    let t = Instant::now();
    let r = uclab_sim::regbench::register_bench(n, sim, 1);
    let wall = t.elapsed().as_secs_f64();
    let tx = r.registrations + r.keepalives;
    println!(
        "{}",
        serde_json::json!({
            "phones": n,
            "sim_h": hours,
            "registrations": r.registrations,
            "keepalives": r.keepalives,
            "register_transactions": tx,
            "messages": r.messages,
            "registered_at_end": r.registered_at_end,
            "wall_s": wall,
            "register_tx_per_wall_s": tx as f64 / wall,
            "sim_per_wall": sim.as_secs_f64() / wall,
            "peak_rss_mib": peak_rss_kib() as f64 / 1024.0,
        })
    );
    r.registered_at_end == n
}

/// The live REGISTER load generator: keeps `window` REGISTERs in flight over UDP to
/// `target` for `seconds`, users `{prefix}{1..=users}` (zero-padded to `width`), and prints one
/// JSON line: 200s per wall second, other answers, losses (no answer within a second). The
/// same generator drives the mock and Kamailio, so their ratio compares the registrars.
fn register_load(target: &str, domain: &str, prefix: &str, users: usize, seconds: f64) -> bool {
    use std::collections::BTreeMap;
    use std::net::UdpSocket;
    const WINDOW: usize = 64;
    let Ok(target) = target.parse::<std::net::SocketAddr>() else {
        eprintln!("bad target {target}");
        return false;
    };
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else { return false };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(20)));
    let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
    let width = users.to_string().len();
    let mut inflight: BTreeMap<u64, Instant> = BTreeMap::new();
    let (mut next, mut ok, mut other, mut lost) = (0u64, 0u64, 0u64, 0u64);
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    while start.elapsed().as_secs_f64() < seconds {
        while inflight.len() < WINDOW {
            let u = format!("{prefix}{:0width$}", (next as usize % users.max(1)) + 1);
            // The Contact names the line's device (WIRE.md; CUCM binds a line only to the
            // device it is configured on, issue 13): a population user's is CSF<USER>.
            let device = format!("CSF{}", u.to_ascii_uppercase());
            let msg = format!(
                "REGISTER sip:{domain} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKlg{next};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:{u}@{domain}>;tag=lg{next}\r\n\
                 To: <sip:{u}@{domain}>\r\n\
                 Call-ID: lg{next}@127.0.0.1\r\n\
                 CSeq: 1 REGISTER\r\n\
                 Contact: <sip:{device}@127.0.0.1:{port}>\r\n\
                 Expires: 120\r\n\
                 User-Agent: uclab-loadgen\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            if sock.send_to(msg.as_bytes(), target).is_err() {
                return false;
            }
            inflight.insert(next, Instant::now());
            next += 1;
        }
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            let code = text.split_whitespace().nth(1).unwrap_or("").to_owned();
            let id = text
                .lines()
                .find_map(|l| l.strip_prefix("Call-ID: lg").or_else(|| l.strip_prefix("i: lg")))
                .and_then(|r| r.split('@').next())
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id
                && inflight.remove(&id).is_some()
            {
                if code == "200" {
                    ok += 1;
                } else {
                    other += 1;
                    *codes.entry(code).or_default() += 1;
                }
            }
        }
        let now = Instant::now();
        let before = inflight.len();
        inflight.retain(|_, t| now.duration_since(*t) < Duration::from_secs(1));
        lost += (before - inflight.len()) as u64;
    }
    let wall = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "target": target.to_string(),
            "ok_200": ok,
            "other": other,
            "codes": codes,
            "lost": lost,
            "wall_s": wall,
            "register_tx_per_wall_s": ok as f64 / wall,
        })
    );
    ok > 0 && other == 0
}

/// SPEC CAP1 presence storm: runs scenarios/im/presence-storm-cap1.toml once in this process
/// and prints one JSON line (wall time, notifications the clients received, per wall second,
/// peak RSS).
fn cap1_one() -> bool {
    let file = root().join("scenarios/im/presence-storm-cap1.toml");
    let s = match uclab_sim::load(&file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {:?}", file.display(), e.first());
            return false;
        }
    };
    let (r, wall, capture_mib, transcript_mib) = run_written(&s);
    let count = |show: &str| {
        r.events
            .iter()
            .filter(|e| {
                e.kind() == "im-presence" && e.fields().any(|(k, v)| k == "show" && v == show)
            })
            .count()
    };
    let (available, away) = (count("available"), count("away"));
    println!(
        "{}",
        serde_json::json!({
            "clients": s.clients.len(),
            "passed": r.passed,
            "signin_notifications": available,
            "storm_notifications": away,
            "wall_s": wall,
            "notifications_per_wall_s": (available + away) as f64 / wall,
            "sim_s": r.sim_time.as_secs_f64(),
            "peak_rss_mib": peak_rss_kib() as f64 / 1024.0,
            "transcript_mib": transcript_mib,
            "capture_mib": capture_mib,
        })
    );
    r.passed
}

/// A scenario in which `n` users sign in to IM&P (ten per simulated millisecond) on the
/// built-in pair, balanced, with re-login limits of 5–10 s; at 3 s imp1 crashes and its users
/// fail over to imp2 (SPEC HA1, HA2). The real default limits (120–480 s) stretch the wait, not
/// the work, and would multiply the wall time of every idle simulated millisecond.
fn failover_scenario(n: usize) -> String {
    let mut t = format!(
        "name = \"im-failover-{n}\"\nsummary = \"IM&P failover of {n} users\"\nseed = 1\nduration = \"60s\"\n"
    );
    for (name, ip) in [("imp1", "10.1.0.21"), ("imp2", "10.1.0.22")] {
        t.push_str(&format!(
            "[[node]]\nname = \"{name}\"\nkind = \"imp\"\nzone = \"inside\"\nip = \"{ip}\"\n\
             cluster = \"imp-cluster1\"\nrelogin_lower = 5\nrelogin_upper = 10\n"
        ));
    }
    t.push_str(&format!(
        "[[population]]\nprefix = \"u\"\ncount = {n}\ncluster = \"cluster1\"\nzone = \"inside\"\n\
         dns = [\"dns-int\"]\nsubnet = \"10.1.128.0/17\"\n\
         [[step]]\nat = \"0s\"\naction = \"sign-in\"\nclient = \"u*\"\nspread = \"{}ms\"\n\
         [[step]]\nat = \"3s\"\naction = \"crash\"\nnode = \"imp1\"\n",
        n.div_ceil(10),
    ));
    // No expectation: the run ends once every client is settled again (an expectation
    // window would keep 10,000 idle hosts ticking to its deadline); the bench checks.
    t
}

/// Runs the failover with `n` users in this process and prints one JSON line: how long after
/// the crash (simulated) until every user that was on imp1 is XMPPCONNECTED again, and the
/// wall time of the whole run.
fn failover_one(n: usize) -> bool {
    let text = failover_scenario(n);
    let s = match uclab_sim::parse("failover.toml", &text, Path::new("failover.toml")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("failover scenario: {:?}", e.first());
            return false;
        }
    };
    let t = Instant::now();
    let r = uclab_sim::run(&s, s.seed);
    let wall = t.elapsed().as_secs_f64();
    let crash = Duration::from_secs(3);
    let state = |e: &uclab_sim::EventRef<'_>, st: &str| {
        e.kind() == "im-state" && e.fields().any(|(k, v)| k == "state" && v == st)
    };
    let moved: std::collections::BTreeSet<&str> =
        r.events.iter().filter(|e| state(e, "FAILOVER")).map(|e| e.who()).collect();
    let mut back: std::collections::BTreeMap<&str, Duration> = Default::default();
    for e in r.events.iter().filter(|e| e.time() >= crash && state(e, "XMPPCONNECTED")) {
        back.insert(e.who(), e.time());
    }
    let all_back = moved.iter().all(|c| back.contains_key(c));
    let last = moved.iter().filter_map(|c| back.get(c)).max().copied().unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "users": n,
            "signed_in_im": r.events.iter().filter(|e| e.kind() == "im-signed-in" && e.time() < crash).count(),
            "failed_over": moved.len(),
            "all_back": all_back,
            "sim_s_until_all_back": last.saturating_sub(crash).as_secs_f64(),
            "wall_s": wall,
            "peak_rss_mib": peak_rss_kib() as f64 / 1024.0,
            "error": r.error,
        })
    );
    all_back && !moved.is_empty()
}

/// Issue 18's bench (SPEC FED1, IMP3): `n` users of example.com on imp1 and `m` users of
/// partner.example.org, each pair subscribed both ways across the domains, all signed in (plain
/// XMPP); at 3 s every example.com user goes away together: `n` x `m` presence notifications
/// cross the federation (once per watcher to the partner's server, which fans them out).
fn fed_presence_text(n: usize, m: usize) -> String {
    let mut t = String::from(
        "name = \"federation-presence\"\nsummary = \"cross-domain presence fan-out\"\nseed = 1\n\
         duration = \"60s\"\n\
         [[rule]]\nfrom = \"internet\"\nto = \"inside\"\nport = 5269\nverdict = \"allow\"\n\
         [[node]]\nname = \"imp2\"\nremove = true\n\
         [[node]]\nname = \"imp1\"\nkind = \"imp\"\nzone = \"inside\"\nip = \"10.1.0.21\"\n\
         cluster = \"imp-cluster1\"\nfederation = true\ndns = \"dns-int\"\n\
         [[node]]\nname = \"dns-ext\"\nkind = \"dns\"\nzone = \"internet\"\nip = \"203.0.113.53\"\n\
         [[node.authority]]\norigin = \"example.com\"\nrecords = \"\"\"\n\
         _xmpp-server._tcp 3600 IN SRV 0 5 5269 imp1.example.com.\nimp1 3600 IN A 10.1.0.21\n\"\"\"\n\
         [[node.authority]]\norigin = \"partner.example.org\"\nrecords = \"\"\"\n\
         _xmpp-server._tcp 3600 IN SRV 0 5 5269 xmpp.partner.example.org.\n\
         xmpp 3600 IN A 203.0.113.70\n\"\"\"\n",
    );
    let locals: Vec<String> = (0..n).map(|i| format!("\"u{i}@example.com\"")).collect();
    let locals = locals.join(", ");
    t.push_str(&format!(
        "[[node]]\nname = \"partner\"\nkind = \"xmpp-domain\"\nzone = \"internet\"\n\
         ip = \"203.0.113.70\"\nfqdn = \"xmpp.partner.example.org\"\n\
         domain = \"partner.example.org\"\ndns = \"dns-ext\"\ncontact_limit = {l}\nwatcher_limit = {l}\n",
        l = n + 1
    ));
    t.push_str("[node.accounts]\n");
    for j in 0..m {
        t.push_str(&format!("p{j} = \"p{j}-secret\"\n"));
    }
    t.push_str("[node.contacts]\n");
    for j in 0..m {
        t.push_str(&format!("p{j} = [{locals}]\n"));
    }
    for i in 0..n {
        let (hi, lo) = (2 + i / 250, 1 + i % 250);
        t.push_str(&format!(
            "[[user]]\nid = \"u{i}\"\ncluster = \"cluster1\"\n\
             [[client]]\nname = \"c{i}\"\nip = \"10.1.{hi}.{lo}\"\ndns = [\"dns-int\"]\naddress = \"u{i}@example.com\"\n\
             [[step]]\nat = \"{}ms\"\naction = \"xmpp-sign-in\"\nclient = \"c{i}\"\nnode = \"imp1\"\nuser = \"u{i}\"\n",
            i / 10
        ));
    }
    for j in 0..m {
        t.push_str(&format!(
            "[[client]]\nname = \"q{j}\"\nip = \"203.0.113.{}\"\ndns = [\"dns-ext\"]\n\
             [[step]]\nat = \"0s\"\naction = \"xmpp-sign-in\"\nclient = \"q{j}\"\nnode = \"partner\"\nuser = \"p{j}\"\n",
            110 + j
        ));
    }
    t.push_str(&format!(
        "[[step]]\nat = \"3s\"\naction = \"presence\"\nclient = \"c*\"\nshow = \"away\"\n\
         [[expect]]\nclient = \"q*\"\nevent = \"im-presence\"\nfields = {{ show = \"away\" }}\n\
         count = {}\nwithin = \"8s\"\n",
        n * m
    ));
    t
}

/// Parses a scenario made by a bench (`name` for messages) and runs it with its seed: the
/// result and the wall time in seconds.
pub(crate) fn run_generated(
    name: &str,
    text: &str,
) -> Option<(uclab_sim::RunResult, f64, f64, f64)> {
    let s = match uclab_sim::parse(name, text, Path::new(name)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: {:?}", e.first());
            return None;
        }
    };
    Some(run_written(&s))
}

/// Runs `s` as `uclab run` does, the capture and messages.jsonl written straight to a
/// temporary directory (removed after): the result, the wall time in seconds (writing them
/// included) and the capture's size in MiB.
pub(crate) fn run_written(s: &uclab_sim::Scenario) -> (uclab_sim::RunResult, f64, f64, f64) {
    let dir = std::env::temp_dir().join(format!("uclab-bench-{}", std::process::id()));
    let t = Instant::now();
    let r = uclab_sim::run_into(s, s.seed, &dir, &mut |_| {});
    let wall = t.elapsed().as_secs_f64();
    let on_disk = |f: &str| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len());
    let (capture, transcript) = (on_disk("capture.pcapng"), on_disk("transcript.txt"));
    let _ = std::fs::remove_dir_all(&dir);
    let (capture, transcript) = match r.written {
        Some(_) => (capture, transcript),
        None => (r.capture.len() as u64, r.transcript.len() as u64),
    };
    (r, wall, capture as f64 / 1048576.0, transcript as f64 / 1048576.0)
}

/// Runs the federation presence bench in this process and prints one JSON line.
fn fed_presence_one(n: usize, m: usize) -> bool {
    let Some((r, wall, capture_mib, _)) = run_generated("fed.toml", &fed_presence_text(n, m))
    else {
        return false;
    };
    let away = r
        .events
        .iter()
        .filter(|e| {
            e.who().starts_with('q')
                && e.kind() == "im-presence"
                && e.fields().any(|(k, v)| k == "show" && v == "away")
        })
        .count();
    let signed = r.events.iter().filter(|e| e.kind() == "im-signed-in").count();
    println!(
        "{}",
        serde_json::json!({
            "local_users": n,
            "partner_users": m,
            "signed_in": signed,
            "passed": r.passed,
            "cross_domain_notifications": away,
            "wall_s": wall,
            "notifications_per_wall_s": away as f64 / wall,
            "sim_s": r.sim_time.as_secs_f64(),
            "peak_rss_mib": peak_rss_kib() as f64 / 1024.0,
            "capture_mib": capture_mib,
            "error": r.error,
        })
    );
    r.passed && away == n * m
}

/// Runs `sub` (a `*-one` subcommand) in a child process and returns its JSON line.
fn in_child_json(sub: &str, args: &[String]) -> Option<serde_json::Value> {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(&exe).arg(sub).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v =
        text.lines().rev().find(|l| l.starts_with('{')).and_then(|l| serde_json::from_str(l).ok());
    if v.is_none() {
        eprintln!("{sub}: no result\n{}", String::from_utf8_lossy(&out.stderr));
    }
    v
}

/// Runs `sub` (a `*-one` subcommand) in a child process per argument and prints its JSON.
fn in_child(sub: &str, args: &[String]) -> bool {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(&exe).arg(sub).args(args).output();
    let Ok(out) = out else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().last() {
        Some(l) if l.starts_with('{') => {
            println!("{l}");
            out.status.success()
        }
        _ => {
            eprintln!("{sub}: no result\n{}", String::from_utf8_lossy(&out.stderr));
            false
        }
    }
}

fn sweep(seeds: &str) -> bool {
    let mut ok = true;
    for f in scenario_files("") {
        eprintln!("sweep {}", f.display());
        ok &= uclab_sim::commands::cmd_sweep(&f, seeds, 2) == 0;
    }
    ok
}

const FUZZ_TARGETS: &[&str] = &[
    "dns_message",
    "edge_config",
    "edge_path",
    "edge_sip",
    "dns_server",
    "pidf",
    "rtp_packet",
    "s2s_stream",
    "sipfed_endpoint",
    "scenario",
    "sip_message",
    "stun_message",
    "traversal_frame",
    "uds_xml",
    "xmpp_edge",
    "xmpp_stream",
];

fn fuzz(seconds: u64) -> bool {
    // cargo-fuzz needs nightly flags; the machine has one stable toolchain, which accepts
    // them with RUSTC_BOOTSTRAP=1 (what the Rust project itself does for such tools).
    if !cargo().args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success())
        && !sh(cargo().args(["install", "cargo-fuzz", "--locked"]))
    {
        return false;
    }
    FUZZ_TARGETS.iter().all(|t| {
        sh(cargo()
            .args(["fuzz", "run", t, "--", &format!("-max_total_time={seconds}")])
            .env("RUSTC_BOOTSTRAP", "1"))
    })
}

/// mimalloc: the same bytes, a quarter less CPU than glibc's allocator on the large runs
/// (issue 19, docs/decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ok = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bless") => {
            sh(cargo()
                .args(["test", "--workspace"])
                .env("INSTA_UPDATE", "always")
                .env("UCLAB_BLESS", "1"))
                && (args.get(1).map(String::as_str) != Some("--heavy")
                    || sh(cargo()
                        .args(["test", "--release", "-p", "uclab", "--test", "scenarios", "heavy_"])
                        .env("INSTA_UPDATE", "always")))
        }
        Some("sweep") => sweep(args.get(1).map_or("1..51", String::as_str)),
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("storm") => {
                let sizes: Vec<usize> = args[2..].iter().filter_map(|a| a.parse().ok()).collect();
                storm(if sizes.is_empty() { &[100, 1000, 10_000] } else { &sizes })
            }
            Some("cap1") => in_child("cap1-one", &[]),
            // Issue 19: every row of the speed table, `--quick` small.
            Some("table") => table::table(args.get(2).is_some_and(|a| a == "--quick")),
            // Issue 18: N users' presence crossing to M partner users (default 1,000 x 75).
            Some("fed-presence") => {
                let n = args.get(2).cloned().unwrap_or_else(|| "1000".into());
                let m = args.get(3).cloned().unwrap_or_else(|| "75".into());
                in_child("fed-presence-one", &[n, m])
            }
            // Issue 17: N clients sign in through the edge together (target: 1,000 under
            // 10 s wall and 1 GiB).
            Some("mra-storm") => {
                let n = args.get(2).cloned().unwrap_or_else(|| "1000".into());
                in_child("mra-storm-one", &[n])
            }
            Some("cap2") => {
                in_child("cap2-one", &["1000".into(), "75".into()])
                    && in_child("cap2-one", &["1000".into(), "500".into()])
            }
            Some("register-live") => {
                let n = args.get(2).cloned().unwrap_or_else(|| "10000".into());
                let secs = args.get(3).cloned().unwrap_or_else(|| "10".into());
                sh(Command::new("bash").args(["scripts/bench-register-live.sh", &n, &secs]))
            }
            // Issue 19: serve's internal DNS against unbound under dnsperf, one run.
            Some("dns-live") => {
                let secs = args.get(2).cloned().unwrap_or_else(|| "10".into());
                sh(Command::new("bash").args(["scripts/bench-dns-live.sh", &secs]))
            }
            Some("register") => {
                let n = args.get(2).cloned().unwrap_or_else(|| "10000".into());
                let h = args.get(3).cloned().unwrap_or_else(|| "1".into());
                in_child("register-one", &[n, h])
            }
            Some("failover") => {
                let sizes: Vec<String> =
                    if args.len() > 2 { args[2..].to_vec() } else { vec!["10000".into()] };
                sizes.iter().all(|n| in_child("failover-one", std::slice::from_ref(n)))
            }
            suite => bench(suite.unwrap_or("dns")),
        },
        Some("cap1-one") => cap1_one(),
        Some("fed-presence-one") => {
            let n = args.get(1).and_then(|n| n.parse().ok());
            let m = args.get(2).and_then(|m| m.parse().ok());
            n.zip(m).is_some_and(|(n, m)| fed_presence_one(n, m))
        }
        Some("cap2-one") => {
            let n = args.get(1).and_then(|n| n.parse().ok());
            let c = args.get(2).and_then(|c| c.parse().ok());
            n.zip(c).filter(|(n, c)| c < n).is_some_and(|(n, c)| cap2_one(n, c))
        }
        Some("register-load") if args.len() == 6 => {
            let users = args[4].parse().unwrap_or(1);
            let secs = args[5].parse().unwrap_or(5.0);
            register_load(&args[1], &args[2], &args[3], users, secs)
        }
        Some("register-one") => {
            let n = args.get(1).and_then(|n| n.parse().ok());
            let h = args.get(2).and_then(|h| h.parse().ok());
            n.zip(h).is_some_and(|(n, h)| register_one(n, h))
        }
        Some("failover-one") => args.get(1).and_then(|n| n.parse().ok()).is_some_and(failover_one),
        Some("storm-one") => args.get(1).and_then(|n| n.parse().ok()).is_some_and(storm_one),
        Some("soak-one") => args.get(1).and_then(|n| n.parse().ok()).is_some_and(table::soak_one),
        Some("soak-phones-one") => {
            let n = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
            table::soak_phones_one(n(1, 100) as usize, n(2, 24))
        }
        Some("sweep-one") => args.get(1).and_then(|n| n.parse().ok()).is_some_and(table::sweep_one),
        Some("mra-storm-one") => {
            args.get(1).and_then(|n| n.parse().ok()).is_some_and(mra_storm_one)
        }
        Some("bench-one") => args.get(1).is_some_and(|f| bench_one(Path::new(f))),
        Some("fuzz") => fuzz(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60)),
        _ => {
            eprintln!(
                "usage: cargo xtask ci | bless | sweep [A..B] | bench [SUITE | storm N.. | cap1 | cap2 | failover N..] | fuzz [SECONDS]\n\
                 \n  ci      fmt, clippy -D warnings, tests (nextest if present), doc build\
                 \n  bless   accept new transcript snapshots (--heavy: also the release-only load scenarios)\
                 \n  sweep   every scenario over seeds A..B (default 1..51)\
                 \n  bench   per scenario of SUITE (default dns): wall median of 5, sim/wall, peak RSS\
                 \n  bench storm [N..]  sign-in storm: N clients sign in together (default 100 1000 10000)\
                 \n  bench mra-storm [N]  N clients (default 1000) sign in through the edge together: HTTP, XMPP, SIP\
                 \n  bench table [--quick]  issue 19's speed table: soak, CAP1, storm, sweep, live REGISTER and DNS against Kamailio and unbound\
                 \n  bench cap1         SPEC CAP1 presence storm: 3,000 users x 75 contacts change state\
                 \n  bench fed-presence [N [M]]  N users (default 1000) go away together, each watched by M (default 75) partner-domain users\
                 \n  bench cap2         SPEC CAP2: 1,000 users x 75 (then 500) contacts, one change each per simulated hour\
                 \n  bench register [N [H]]  N softphones (default 10000) register and refresh for H simulated hours (default 1)\
                 \n  bench register-live [N [S]]  REGISTERs over UDP for S s (default 10) from N users to serve's CUCM and to Kamailio\
                 \n  bench dns-live [S]  dnsperf for S s (default 10) against serve's internal DNS and against unbound with the same answers\
                 \n  bench failover [N..]  N IM&P users (default 10000) fail over when imp1 crashes\
                 \n  fuzz    each fuzz target for SECONDS (default 60)"
            );
            return ExitCode::from(2);
        }
    };
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

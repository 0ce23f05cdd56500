//! The `uclab` commands. `src/main.rs` only parses arguments and calls these; each returns the
//! process exit code (0 all pass, 1 a failure, 2 bad input).

use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::report::{junit_xml, replay_command, report_json};
use crate::runner::{RunResult, run, run_into};
use crate::scenario::{Scenario, load, parse};
use crate::time::fmt_secs;

/// Exit code: everything passed.
pub const EXIT_OK: i32 = 0;
/// Exit code: a scenario failed.
pub const EXIT_FAIL: i32 = 1;
/// Exit code: bad input (a broken scenario file, a bad argument).
pub const EXIT_BAD_INPUT: i32 = 2;

/// The built-in showcase suite: (virtual path, text).
pub const SHOWCASE: &[(&str, &str)] = &[(
    "<built-in>/showcase/discovery-inside-outside.toml",
    include_str!("../../scenarios/showcase/discovery-inside-outside.toml"),
)];

/// Scenario files under `paths` (directories recursively, `*.toml` in name order).
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut stack = vec![p.clone()];
            let mut found = Vec::new();
            while let Some(d) = stack.pop() {
                let rd = fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
                for e in rd.flatten() {
                    let path = e.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.extension().is_some_and(|x| x == "toml") {
                        found.push(path);
                    }
                }
            }
            found.sort();
            out.extend(found);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or directory", p.display()));
        }
    }
    Ok(out)
}

fn load_all(paths: &[PathBuf]) -> Result<Vec<Scenario>, i32> {
    let files = collect(paths).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_BAD_INPUT
    })?;
    if files.is_empty() {
        eprintln!("error: no scenario files found");
        return Err(EXIT_BAD_INPUT);
    }
    let mut out = Vec::new();
    let mut bad = false;
    for f in files {
        match load(&f) {
            Ok(s) => out.push(s),
            Err(errs) => {
                bad = true;
                for e in errs {
                    eprintln!("{e}");
                }
            }
        }
    }
    if bad { Err(EXIT_BAD_INPUT) } else { Ok(out) }
}

fn showcase() -> Vec<Scenario> {
    SHOWCASE
        .iter()
        .map(|(p, t)| parse(p, t, Path::new(p)).expect("the built-in showcase is valid (tested)"))
        .collect()
}

/// Where a run's outputs go: `<out>/<suite dir>/<scenario>` for a file in a `scenarios/`
/// tree, else `<out>/<file stem>` (issue 14: a file elsewhere went under its folder's name).
pub fn out_dir(out: &Path, s: &Scenario) -> PathBuf {
    let in_tree = s.file.parent().is_some_and(|p| {
        p.components().any(|c| c.as_os_str() == "scenarios" || c.as_os_str() == "<built-in>")
    });
    let suite =
        s.file.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
    match suite {
        Some(suite) if in_tree => out.join(suite).join(&s.name),
        _ => {
            out.join(s.file.file_stem().map_or_else(|| s.name.clone().into(), |f| f.to_os_string()))
        }
    }
}

/// Writes capture.pcapng, transcript.txt, messages.jsonl, report.json, junit.xml, ladder.txt
/// and ladder.html of a run into `dir`.
pub fn write_outputs(dir: &Path, r: &RunResult) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    // A run made with run_into wrote its capture, messages.jsonl and transcript here already.
    let streamed = r.written.as_deref() == Some(dir);
    if !streamed {
        fs::write(dir.join("capture.pcapng"), &r.capture)?;
        fs::write(dir.join("messages.jsonl"), crate::ladder::data::to_jsonl(&r.messages))?;
        fs::write(dir.join("transcript.txt"), &r.transcript)?;
    }
    fs::write(dir.join("report.json"), report_json(r))?;
    fs::write(dir.join("junit.xml"), junit_xml(std::slice::from_ref(r)))?;
    if streamed {
        // The ladder from the files, as `uclab ladder` draws it (the same bytes).
        let src = crate::ladder::data::read_run(dir).map_err(std::io::Error::other)?;
        return crate::ladder::write(dir, &src);
    }
    crate::ladder::write(dir, &crate::ladder::Source::of(r))
}

fn print_result(r: &RunResult, dir: &Path) {
    let verdict = if r.passed { "PASS" } else { "FAIL" };
    println!(
        "{verdict} {} (seed {}, {} simulated) -> {}",
        r.scenario,
        r.seed,
        fmt_secs(r.sim_time),
        dir.display()
    );
    if let Some(e) = &r.error {
        println!("     simulation error: {e}");
    }
    for v in r.verdicts.iter().filter(|v| !v.passed) {
        let fields: String = v.expect.fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
        println!(
            "     line {}: {} {}{}{fields}: {}",
            v.expect.line,
            v.expect.client,
            if v.expect.absent { "no " } else { "" },
            v.expect.event,
            v.detail
        );
    }
    println!("     ladder: {}", dir.join("ladder.html").display());
    if !r.passed {
        println!("     replay: {}", replay_command(r));
    }
}

/// `uclab ladder OUT_DIR`: the ladder of a finished run again, filtered; the text on stdout,
/// the page into `html` when asked.
pub fn cmd_ladder(dir: &Path, filter: &crate::ladder::Filter, html: Option<&Path>) -> i32 {
    let src = match crate::ladder::data::read_run(dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let ladder = crate::ladder::Ladder::build(&src, filter);
    if let Some(path) = html {
        if let Err(e) = fs::write(path, crate::ladder::html(&ladder)) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return EXIT_BAD_INPUT;
        }
        eprintln!("wrote {}", path.display());
        return 0;
    }
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(crate::ladder::text(&ladder).as_bytes());
    0
}

/// `uclab run`.
pub fn cmd_run(paths: &[PathBuf], seed: Option<u64>, out: &Path, skip_heavy: bool) -> i32 {
    let scenarios = if paths.is_empty() {
        showcase()
    } else {
        match load_all(paths) {
            Ok(s) => s,
            Err(code) => return code,
        }
    };
    let mut results = Vec::new();
    for s in &scenarios {
        if skip_heavy && s.heavy {
            println!("SKIP {} (heavy; --skip-heavy)", s.name);
            continue;
        }
        let dir = out_dir(out, s);
        if s.heavy {
            println!(
                "RUN  {} (heavy: {} clients, up to {} simulated; its capture, transcript and report \
                 run to hundreds of MB) -> {}",
                s.name,
                s.clients.len(),
                fmt_secs(s.duration),
                dir.display()
            );
        }
        // Wall time for the reports only: it never feeds the run.
        #[allow(clippy::disallowed_methods)]
        let started = std::time::Instant::now();
        // Issue 20: a run that goes on for seconds shows the simulated time reached, on a
        // terminal only.
        let mut progress = crate::progress::Progress::delayed();
        let mut r = run_into(s, seed.unwrap_or(s.seed), &dir, &mut |t| {
            progress.show(|| format!("RUN  {}: {} simulated", s.name, fmt_secs(t)))
        });
        progress.done();
        r.wall = started.elapsed();
        r.out = Some(out.to_path_buf());
        if let Err(e) = write_outputs(&dir, &r) {
            eprintln!("error: cannot write {}: {e}", dir.display());
            return EXIT_BAD_INPUT;
        }
        print_result(&r, &dir);
        if s.heavy {
            let size = |f: &str| fs::metadata(dir.join(f)).map_or(0, |m| m.len()) / (1 << 20);
            println!(
                "     wrote capture.pcapng {} MiB, transcript.txt {} MiB, report.json {} MiB in {:.1} s",
                size("capture.pcapng"),
                size("transcript.txt"),
                size("report.json"),
                r.wall.as_secs_f64()
            );
        }
        results.push(r);
    }
    let _ = fs::write(out.join("junit.xml"), junit_xml(&results));
    let failed = results.iter().filter(|r| !r.passed).count();
    println!("{} passed, {failed} failed", results.len() - failed);
    if failed == 0 { EXIT_OK } else { EXIT_FAIL }
}

/// `uclab check`.
pub fn cmd_check(paths: &[PathBuf]) -> i32 {
    match load_all(paths) {
        Ok(s) => {
            println!("ok: {} scenario(s)", s.len());
            EXIT_OK
        }
        Err(code) => code,
    }
}

/// `uclab list`.
pub fn cmd_list(dir: Option<&Path>) -> i32 {
    let scenarios = match dir {
        None if Path::new("scenarios").is_dir() => load_all(&[PathBuf::from("scenarios")]),
        None => Ok(showcase()),
        Some(d) => load_all(&[d.to_path_buf()]),
    };
    let scenarios = match scenarios {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut coverage: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    // Columns as wide as their widest entry (issue 14: long paths pushed the rest out of line).
    let file_w = scenarios.iter().map(|s| s.file.display().to_string().len()).max().unwrap_or(0);
    let spec_w = scenarios.iter().map(|s| s.spec.join(",").len()).max().unwrap_or(0);
    for s in &scenarios {
        println!(
            "{:<file_w$}  {:<spec_w$}  {}",
            s.file.display().to_string(),
            s.spec.join(","),
            s.summary
        );
        for id in &s.spec {
            coverage.entry(id).or_default().push(&s.name);
        }
    }
    println!("\nSPEC coverage ({} ids):", coverage.len());
    for (id, names) in coverage {
        println!("  {id:<6} {}", names.join(", "));
    }
    EXIT_OK
}

/// Parses `A..B` (inclusive of A, exclusive of B) or a single seed.
pub fn parse_seeds(s: &str) -> Result<std::ops::Range<u64>, String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let a: u64 = a.parse().map_err(|_| format!("bad seed range `{s}`"))?;
            let b: u64 = b.parse().map_err(|_| format!("bad seed range `{s}`"))?;
            if a >= b {
                return Err(format!("empty seed range `{s}`"));
            }
            Ok(a..b)
        }
        None => s.parse::<u64>().map(|a| a..a + 1).map_err(|_| format!("bad seed `{s}`")),
    }
}

/// `uclab sweep`: one scenario over many seeds, spread over `jobs` threads.
pub fn cmd_sweep(file: &Path, seeds: &str, jobs: usize) -> i32 {
    let range = match parse_seeds(seeds) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let s = match load(file) {
        Ok(s) => s,
        Err(errs) => {
            for e in errs {
                eprintln!("{e}");
            }
            return EXIT_BAD_INPUT;
        }
    };
    let seeds: Vec<u64> = range.collect();
    let jobs = jobs.max(1).min(seeds.len());
    let failed = std::sync::Mutex::new(Vec::new());
    // Issue 20: seeds done and failures so far, on a terminal only.
    let progress = std::sync::Mutex::new((crate::progress::Progress::now(), 0usize));
    std::thread::scope(|scope| {
        for j in 0..jobs {
            let (s, seeds, failed, progress) = (&s, &seeds, &failed, &progress);
            scope.spawn(move || {
                for seed in seeds.iter().skip(j).step_by(jobs) {
                    let r = run(s, *seed);
                    let mut f = failed.lock().unwrap_or_else(|e| e.into_inner());
                    if !r.passed {
                        f.push((*seed, replay_command(&r)));
                    }
                    let bad = f.len();
                    drop(f);
                    let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
                    p.1 += 1;
                    let done = p.1;
                    p.0.show(|| {
                        format!("sweep {}: {done}/{} seeds, {bad} failed", s.name, seeds.len())
                    });
                }
            });
        }
    });
    progress.into_inner().unwrap_or_else(|e| e.into_inner()).0.done();
    let mut failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
    failed.sort();
    for (seed, cmd) in &failed {
        println!("FAIL seed {seed}: {cmd}");
    }
    println!("{} passed, {} failed", seeds.len() - failed.len(), failed.len());
    if failed.is_empty() { EXIT_OK } else { EXIT_FAIL }
}

/// A single-threaded runtime and the `LocalSet` live nodes and clients run in.
fn local_runtime() -> Option<(tokio::runtime::Runtime, tokio::task::LocalSet)> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => Some((rt, tokio::task::LocalSet::new())),
        Err(e) => {
            eprintln!("error: cannot start a runtime: {e}");
            None
        }
    }
}

/// `uclab serve`.
pub fn cmd_serve(
    file: Option<&Path>,
    bind: IpAddr,
    ports_json: Option<&Path>,
    ca_pem: Option<&Path>,
    seed: Option<u64>,
    keep: crate::live::Keep,
) -> i32 {
    let mut s = match file {
        Some(f) => match load(f) {
            Ok(s) => s,
            Err(errs) => {
                for e in errs {
                    eprintln!("{e}");
                }
                return EXIT_BAD_INPUT;
            }
        },
        None => parse("<built-in default topology>", "", Path::new("default.toml"))
            .expect("the default topology is valid (tested)"),
    };
    crate::live::default_credential_policy(&mut s);
    let plan = match crate::live::plan(&s, bind) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot bind {bind}: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    for (e, product) in crate::live::moved(&s, &plan) {
        eprintln!(
            "warning: {}/{} listens on {} instead of port {product} (taken, or privileged): \
             clients that use the product's fixed port will not reach it",
            e.node, e.service, e.addr
        );
    }
    // Issue 13: secrets and the lab CA from the OS random source unless --seed (tests).
    let entropy = match uclab_net::Entropy::from_option(seed) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAIL;
        }
    };
    let pki = match crate::live::lab_pki(entropy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAIL;
        }
    };
    if let Some(p) = ca_pem
        && fs::write(p, pki.ca_pem()).is_err()
    {
        eprintln!("error: cannot write {}", p.display());
        return EXIT_BAD_INPUT;
    }
    let json = serde_json::to_string_pretty(&plan).unwrap_or_default();
    if let Some(p) = ports_json {
        // Write atomically so a waiting script never reads half a file.
        let tmp = p.with_extension("tmp");
        if fs::write(&tmp, format!("{json}\n")).and_then(|()| fs::rename(&tmp, p)).is_err() {
            eprintln!("error: cannot write {}", p.display());
            return EXIT_BAD_INPUT;
        }
    }
    println!("{json}");
    let _ = std::io::stdout().flush();
    let Some((rt, local)) = local_runtime() else { return EXIT_FAIL };
    match local.block_on(&rt, crate::live::serve(&s, &plan, entropy, pki, &keep)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAIL
        }
    }
}

/// What every probe command is given about randomness, trust and reach (issue 13).
#[derive(Clone, Debug, Default)]
pub struct LiveArgs {
    /// `--seed` (tests only).
    pub seed: Option<u64>,
    /// `--ca FILE`: the lab CA to trust.
    pub ca: Option<PathBuf>,
    /// `--allow-remote`.
    pub allow_remote: bool,
}

impl LiveArgs {
    /// The probe's options, or the exit code of a bad `--ca`.
    fn options(&self, verbose: bool) -> Result<crate::live::ProbeOptions, i32> {
        let ca = match &self.ca {
            Some(p) => {
                let text = fs::read_to_string(p).map_err(|e| {
                    eprintln!("error: {}: {e}", p.display());
                    EXIT_BAD_INPUT
                })?;
                Some(uclab_net::tls::certs_from_pem(&text).map_err(|e| {
                    eprintln!("error: {}: {e}", p.display());
                    EXIT_BAD_INPUT
                })?)
            }
            None => None,
        };
        Ok(crate::live::ProbeOptions {
            seed: self.seed,
            ca,
            allow_remote: self.allow_remote,
            verbose,
        })
    }
}

/// `uclab probe`.
pub fn cmd_probe(
    domain: &str,
    dns: SocketAddr,
    credentials: Option<(String, String)>,
    json: bool,
    live: &LiveArgs,
) -> i32 {
    let signing_in = credentials.is_some();
    let opts = match live.options(!json) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let Some((rt, local)) = local_runtime() else { return EXIT_FAIL };
    match local.block_on(&rt, crate::live::probe(domain, dns, credentials, &opts)) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                println!("method: {}", r.method.as_deref().unwrap_or("(none)"));
                println!("target: {}", r.target.as_deref().unwrap_or("(none reached)"));
                if signing_in {
                    println!(
                        "authenticator: {}",
                        r.authenticator.as_deref().unwrap_or("(not signed in)")
                    );
                    println!(
                        "product mode: {}",
                        r.product_mode.as_deref().unwrap_or("(not signed in)")
                    );
                }
                if let Some(e) = &r.error {
                    println!("error: {e}");
                }
            }
            // Issue 14: any failed decision is a failure (a discovery that found nothing,
            // as well as a refused sign-in).
            let ok = r.error.is_none()
                && r.method.is_some()
                && (!signing_in || r.authenticator.is_some());
            if ok { EXIT_OK } else { EXIT_FAIL }
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAIL
        }
    }
}

/// `uclab probe-xmpp`.
pub fn cmd_probe_xmpp(
    server: SocketAddr,
    domain: &str,
    (user, password): (&str, &str),
    messages: Vec<(String, String)>,
    wait: std::time::Duration,
    json: bool,
    live: &LiveArgs,
) -> i32 {
    let opts = match live.options(!json) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let Some((rt, local)) = local_runtime() else { return EXIT_FAIL };
    let probe = crate::live::probe_xmpp(server, domain, (user, password), messages, wait, &opts);
    match local.block_on(&rt, probe) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                println!("jid: {}", r.jid.as_deref().unwrap_or("(not signed in)"));
                for (from, body) in &r.messages {
                    println!("message from {from}: {body}");
                }
                if let Some(e) = &r.error {
                    println!("error: {e}");
                }
            }
            if r.jid.is_some() && r.error.is_none() { EXIT_OK } else { EXIT_FAIL }
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAIL
        }
    }
}

/// `uclab probe-sip`.
pub fn cmd_probe_sip(
    servers: Vec<SocketAddr>,
    (user, password): (&str, &str),
    line: &str,
    (wait, calls): (std::time::Duration, crate::live::SipProbeCalls),
    json: bool,
    live: &LiveArgs,
) -> i32 {
    let opts = match live.options(!json) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let Some((rt, local)) = local_runtime() else { return EXIT_FAIL };
    let probe = crate::live::probe_sip(servers, (user, password), line, (wait, calls), &opts);
    match local.block_on(&rt, probe) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                match &r.registered {
                    Some((node, expires)) => println!("registered: {node} for {expires} s"),
                    None => println!("registered: no"),
                }
                if let Some(e) = &r.error {
                    println!("error: {e}");
                }
            }
            if r.registered.is_some() { EXIT_OK } else { EXIT_FAIL }
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAIL
        }
    }
}

/// `uclab pki`: a lab certificate for `names` (and its key and the CA) into files.
pub fn cmd_pki(
    seed: Option<u64>,
    names: &[String],
    cert: &Path,
    key: &Path,
    ca: Option<&Path>,
) -> i32 {
    let entropy = match uclab_net::Entropy::from_option(seed) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAIL;
        }
    };
    let (c, k, a) = match crate::live::issue_pem(entropy, names) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAIL;
        }
    };
    let mut writes = vec![(cert, c), (key, k)];
    if let Some(ca) = ca {
        writes.push((ca, a));
    }
    for (path, text) in writes {
        if let Err(e) = fs::write(path, text) {
            eprintln!("error: {}: {e}", path.display());
            return EXIT_FAIL;
        }
    }
    EXIT_OK
}

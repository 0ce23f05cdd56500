//! `cargo xtask ci | bless | sweep | bench | fuzz`: the project's chores in one place.
//!
//! `bench` measures, for each scenario of a suite, the wall time of a run (median of 5),
//! the ratio of simulated to wall time, and the peak RSS of a process that runs only that
//! scenario. Wall-clock reads are fine here: they measure runs, they never shape one.

#![allow(clippy::disallowed_methods)]

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

fn scenario_files(suite: &str) -> Vec<PathBuf> {
    uclab_sim::commands::collect(&[root().join("scenarios").join(suite)]).unwrap_or_default()
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
    }
    ok
}

/// A scenario in which `n` clients, each with its own user, sign in ten per millisecond
/// (10,000 sign-ins a second, as after a site's WAN comes back). All at once, beyond about
/// 1,000 clients the internal DNS server's socket queue (4,096 datagrams, four queries per
/// client) overflows and clients that exhaust their retries fall back to manual settings.
fn storm_scenario(n: usize) -> String {
    let mut t = String::from(
        "name = \"signin-storm\"\nsummary = \"sign-in storm\"\nseed = 1\nduration = \"120s\"\n",
    );
    for i in 0..n {
        let (hi, lo) = (2 + i / 250, 1 + i % 250);
        let ms = i / 10;
        t.push_str(&format!(
            "[[user]]\nid = \"u{i}\"\ncluster = \"cluster1\"\n\
             [[client]]\nname = \"c{i}\"\nip = \"10.1.{hi}.{lo}\"\ndns = [\"dns-int\"]\naddress = \"u{i}@example.com\"\n\
             [[step]]\nat = \"{ms}ms\"\naction = \"sign-in\"\nclient = \"c{i}\"\n"
        ));
    }
    // One expectation per client would make the check quadratic; the run result counts them.
    t
}

/// Runs the storm with `n` clients in this process and prints one JSON line. Each client signs
/// in through UDS and then to IM&P (SOAP and XMPP, SPEC AU4); `sim_s_all_signed_in` is when the
/// last UDS sign-in completed.
fn storm_one(n: usize) -> bool {
    let text = storm_scenario(n);
    let s = match uclab_sim::parse("storm.toml", &text, Path::new("storm.toml")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("storm scenario: {:?}", e.first());
            return false;
        }
    };
    let t = Instant::now();
    let r = uclab_sim::run(&s, s.seed);
    let wall = t.elapsed();
    let signed = r.events.iter().filter(|e| e.kind == "signed-in").count();
    // Why the others did not sign in: failure reasons and how often.
    let mut failures: std::collections::BTreeMap<String, usize> = Default::default();
    for e in r.events.iter().filter(|e| e.kind.ends_with("-failed") && e.kind != "target-failed") {
        let reason = e.fields.iter().find(|(k, _)| k == "reason").map_or("", |(_, v)| v.as_str());
        *failures.entry(format!("{}: {reason}", e.kind)).or_default() += 1;
    }
    let last =
        r.events.iter().filter(|e| e.kind == "signed-in").map(|e| e.time).max().unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "clients": n,
            "signed_in": signed,
            "im_connected": r.events.iter().filter(|e| e.kind == "im-signed-in").count(),
            "wall_s": wall.as_secs_f64(),
            "sim_s_all_signed_in": last.as_secs_f64(),
            "sim_s_run": r.sim_time.as_secs_f64(),
            "peak_rss_mib": peak_rss_kib() as f64 / 1024.0,
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

fn sweep(seeds: &str) -> bool {
    let mut ok = true;
    for f in uclab_sim::commands::collect(&[root().join("scenarios")]).unwrap_or_default() {
        eprintln!("sweep {}", f.display());
        ok &= uclab_sim::commands::cmd_sweep(&f, seeds, 2) == 0;
    }
    ok
}

const FUZZ_TARGETS: &[&str] = &["dns_message", "dns_server", "scenario", "uds_xml", "xmpp_stream"];

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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ok = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bless") => sh(cargo()
            .args(["test", "--workspace"])
            .env("INSTA_UPDATE", "always")
            .env("UCLAB_BLESS", "1")),
        Some("sweep") => sweep(args.get(1).map_or("1..51", String::as_str)),
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("storm") => {
                let sizes: Vec<usize> = args[2..].iter().filter_map(|a| a.parse().ok()).collect();
                storm(if sizes.is_empty() { &[100, 1000, 10_000] } else { &sizes })
            }
            suite => bench(suite.unwrap_or("dns")),
        },
        Some("storm-one") => args.get(1).and_then(|n| n.parse().ok()).is_some_and(storm_one),
        Some("bench-one") => args.get(1).is_some_and(|f| bench_one(Path::new(f))),
        Some("fuzz") => fuzz(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60)),
        _ => {
            eprintln!(
                "usage: cargo xtask ci | bless | sweep [A..B] | bench [SUITE | storm N..] | fuzz [SECONDS]\n\
                 \n  ci      fmt, clippy -D warnings, tests (nextest if present), doc build\
                 \n  bless   accept new transcript snapshots\
                 \n  sweep   every scenario over seeds A..B (default 1..51)\
                 \n  bench   per scenario of SUITE (default dns): wall median of 5, sim/wall, peak RSS\
                 \n  bench storm [N..]  sign-in storm: N clients sign in together (default 100 1000 10000)\
                 \n  fuzz    each fuzz target for SECONDS (default 60)"
            );
            return ExitCode::from(2);
        }
    };
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

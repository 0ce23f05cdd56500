//! The `uclab` binary as a user meets it: exit codes and error messages.

use std::process::Command;

fn uclab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_uclab"))
}

#[test]
fn check_reports_file_line_col_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("uclab-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("broken.toml");
    std::fs::write(
        &f,
        "name = \"broken\"\n[[node]]\nname = \"x\"\nkind = \"teleporter\"\nzone = \"inside\"\n",
    )
    .unwrap();
    let out = uclab().arg("check").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:4:8: unknown node kind `teleporter`", f.display())), "{err}");
}

#[test]
fn run_of_a_failing_scenario_exits_1_and_prints_the_replay() {
    let dir = std::env::temp_dir().join(format!("uclab-cli-fail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("fails.toml");
    std::fs::write(
        &f,
        "[[step]]\nat = \"0s\"\naction = \"discover\"\nclient = \"alice\"\n\
         [[expect]]\nclient = \"alice\"\nevent = \"discovery-resolved\"\nfields = { via = \"webex\" }\nwithin = \"1s\"\n",
    )
    .unwrap();
    let out = uclab()
        .arg("run")
        .arg(&f)
        .arg("--seed")
        .arg("7")
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL fails"), "{text}");
    assert!(text.contains(&format!("replay: uclab run {} --seed 7", f.display())), "{text}");
    assert!(text.contains(&format!("--seed 7 --out {}", dir.join("out").display())), "{text}");
    // Outside a scenarios/ tree the outputs go by the file's stem.
    assert!(dir.join("out").join("fails").join("report.json").exists());
    // Issue 20: where the ladder is, and the failed expectation marked in it.
    let page = dir.join("out").join("fails").join("ladder.html");
    assert!(text.contains(&format!("ladder: {}", page.display())), "{text}");
    let ladder = std::fs::read_to_string(dir.join("out").join("fails").join("ladder.txt")).unwrap();
    assert!(ladder.contains("X      |      |      |      |      |    FAIL line 6: alice discovery-resolved via=webex within 1.000s"), "{ladder}");
}

/// Issue 20: `uclab ladder` draws a finished run again, filtered, as the README shows; bad
/// directories and files are errors that name them.
#[test]
fn ladder_draws_a_run_again_as_the_readme_shows() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("uclab-cli-ladder-{}", std::process::id()));
    let run = uclab()
        .current_dir(root)
        .args(["run", "scenarios/calls/sip-over-tls.toml", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0));
    let dir = out.join("calls/sip-over-tls");
    let ladder = |args: &[&str]| uclab().arg("ladder").arg(&dir).args(args).output().unwrap();
    let got = ladder(&["--only", "sip", "--from", "0.02s", "--to", "1s"]);
    assert_eq!(got.status.code(), Some(0));
    let text = String::from_utf8_lossy(&got.stdout);
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let cmd =
        "cargo run --release -- ladder out/calls/sip-over-tls --only sip --from 0.02s --to 1s\n";
    let at = readme.find(cmd).expect("the README shows uclab ladder") + cmd.len();
    for shown in readme[at..].lines().take_while(|l| !l.starts_with("cargo ")) {
        assert!(
            text.lines().any(|l| l == shown),
            "README.md's line `{shown}` is not printed:\n{text}"
        );
    }
    assert!(!text.contains(" DNS ") && !text.contains(" HTTP "), "only SIP: {text}");
    let html = out.join("bob.html");
    let got = ladder(&["--node", "bob", "--html", html.to_str().unwrap()]);
    assert_eq!(got.status.code(), Some(0));
    assert!(std::fs::read_to_string(&html).unwrap().contains("\"columns\":[\"bob\""));
    // Not a run's directory; a broken messages.jsonl.
    let none = uclab().args(["ladder"]).arg(out.join("nothing")).output().unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("transcript.txt"));
    std::fs::write(dir.join("messages.jsonl"), "{\"line\": 2}\n{oops\n").unwrap();
    let bad = ladder(&[]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains(&format!("{}:2:2:", dir.join("messages.jsonl").display())), "{err}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn run_without_a_path_runs_the_showcase() {
    let dir = std::env::temp_dir().join(format!("uclab-cli-show-{}", std::process::id()));
    let out = uclab().arg("run").arg("--out").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    for f in [
        "capture.pcapng",
        "transcript.txt",
        "report.json",
        "junit.xml",
        "messages.jsonl",
        "ladder.txt",
        "ladder.html",
    ] {
        assert!(dir.join("showcase/discovery-inside-outside").join(f).exists(), "{f}");
    }
}

/// Issue 14: the README's sample run prints what the README says it prints.
#[test]
fn readme_sample_run_prints_what_the_readme_shows() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let cmd = "cargo run --release -- run scenarios/dns/srv-blackholed-first.toml\n";
    let at = readme.find(cmd).expect("the README shows the sample run") + cmd.len();
    let shown = readme[at..].lines().next().unwrap().strip_prefix("# ").expect("its output");
    let out = std::env::temp_dir().join(format!("uclab-readme-{}", std::process::id()));
    let run = uclab()
        .current_dir(root)
        .args(["run", "scenarios/dns/srv-blackholed-first.toml", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&out);
    assert_eq!(run.status.code(), Some(0));
    let printed = String::from_utf8_lossy(&run.stdout);
    let first = printed.lines().next().unwrap().replace(&out.display().to_string(), "out");
    assert_eq!(first, shown, "README.md's sample line is out of date");
}

/// Issue 20: a sweep shows seeds done and failures so far on a terminal, and nothing of it when
/// stderr is not one (CI logs, pipes).
#[test]
fn sweep_progress_shows_on_a_terminal_only() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/calls/register.toml");
    let out = uclab().args(["sweep", file, "--seeds", "1..3", "--jobs", "1"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("seeds,") && !err.contains('\r'), "progress in a pipe: {err:?}");
    // Under a pseudo-terminal (util-linux script, installed by scripts/setup.sh) it shows, and
    // is cleared before the result.
    let cmd = format!("{} sweep {file} --seeds 1..3 --jobs 1", env!("CARGO_BIN_EXE_uclab"));
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script(1) runs (scripts/setup.sh installs bsdutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\rsweep register: 1/2 seeds, 0 failed"), "{text:?}");
    assert!(text.contains("2 passed, 0 failed"), "{text:?}");
}

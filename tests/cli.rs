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
}

#[test]
fn run_without_a_path_runs_the_showcase() {
    let dir = std::env::temp_dir().join(format!("uclab-cli-show-{}", std::process::id()));
    let out = uclab().arg("run").arg("--out").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    for f in ["capture.pcapng", "transcript.txt", "report.json", "junit.xml"] {
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

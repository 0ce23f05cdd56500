//! Generates one integration test per scenario file, so `cargo test` (and nextest, in
//! parallel) runs every file under `scenarios/` without a list to keep up to date.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dir = root.join("scenarios");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    collect(&dir, &mut files);
    files.sort();
    let mut code = String::new();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel =
            f.strip_prefix(&root).expect("under the root").to_string_lossy().replace('\\', "/");
        let ident: String = rel
            .trim_start_matches("scenarios/")
            .trim_end_matches(".toml")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .collect();
        // Load scenarios (`heavy = true`) take minutes in a debug build: they run in release
        // (scripts/test.sh runs them as a second step) and a debug run lists them as ignored.
        let heavy = std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().any(|l| l.split('#').next().unwrap_or("").replace(' ', "") == "heavy=true")
        });
        if heavy {
            let _ = writeln!(
                code,
                "#[test]\n#[cfg_attr(debug_assertions, ignore = \"heavy: runs in release, see scripts/test.sh\")]\nfn heavy_{ident}() {{\n    check_scenario({rel:?});\n}}\n"
            );
        } else {
            let _ = writeln!(code, "#[test]\nfn {ident}() {{\n    check_scenario({rel:?});\n}}\n");
        }
    }
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("scenario_tests.rs");
    std::fs::write(out, code).expect("OUT_DIR is writable");
}

//! Golden captures: the showcase scenarios' pcapng files are committed under `captures/` and
//! every build must reproduce them byte for byte (on any machine). `cargo xtask bless`
//! (UCLAB_BLESS=1) rewrites them after an intended change.

use std::path::Path;

#[test]
fn showcase_captures_match_the_golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = uclab_sim::commands::collect(&[root.join("scenarios/showcase")]).unwrap();
    assert!(!files.is_empty());
    for f in files {
        let s = uclab_sim::load(&f).unwrap();
        let r = uclab_sim::run(&s, s.seed);
        let golden = root.join("captures").join(format!("{}.pcapng", s.name));
        if std::env::var_os("UCLAB_BLESS").is_some() {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &r.capture).unwrap();
            continue;
        }
        let want = std::fs::read(&golden).unwrap_or_else(|e| {
            panic!("{}: {e} (run `cargo xtask bless` to create it)", golden.display())
        });
        assert!(want == r.capture, "{} no longer reproduces {}", s.name, golden.display());
    }
}

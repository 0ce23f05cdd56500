//! `uclab check` on one file per class of error (issue 14): every error of the file, in line
//! order, in plain words, without cascades. Each file's report is an insta snapshot.

use std::path::Path;

#[test]
fn each_error_class_reports_as_snapshotted() {
    let dir = Path::new("tests/check_errors");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    for f in files {
        let report = match uclab_sim::load(&f) {
            Ok(_) => panic!("{} has errors to report", f.display()),
            Err(errs) => errs.iter().map(|e| format!("{e}\n")).collect::<String>(),
        };
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        insta::with_settings!({ snapshot_path => "snapshots", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(format!("check__{name}"), report);
        });
    }
}

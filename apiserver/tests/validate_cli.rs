//! The `validate` subcommand, run as the real binary over the shared corpus.

use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus")
}

fn yaml_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

fn validate(args: &[&str], files: &[PathBuf]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kfp-apiserver"))
        .arg("validate")
        .args(args)
        .args(files)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn valid_ir_and_manifests_pass_with_ok_lines() {
    let mut files = yaml_in(&corpus());
    files.extend(yaml_in(&corpus().join("k8s")));
    let (code, out) = validate(&[], &files);
    assert_eq!(code, 0, "{out}");
    for f in &files {
        let line = format!("{}: ok", f.display());
        assert!(out.contains(&line), "missing {line:?} in\n{out}");
    }
    assert!(out.contains("hello_world.version_only.yaml: note: document 1: Pipeline \"hello-world\" is not among the files given"));
}

#[test]
fn every_invalid_file_fails_alone_with_its_path() {
    for f in yaml_in(&corpus().join("invalid")) {
        let (code, out) = validate(&["--kind", "ir"], std::slice::from_ref(&f));
        assert_eq!(code, 1, "{}: {out}", f.display());
        assert!(out.starts_with(&format!("{}: ", f.display())), "{out}");
        assert!(!out.contains(": ok"), "{out}");
    }
}

#[test]
fn one_bad_file_fails_the_run_and_errors_name_fields() {
    let files = [
        corpus().join("hello_world.yaml"),
        corpus().join("invalid/missing_dependent_task.yaml"),
    ];
    let (code, out) = validate(&[], &files);
    assert_eq!(code, 1);
    assert!(out.contains("hello_world.yaml: ok"));
    assert!(
        out.contains("missing_dependent_task.yaml: document 1: root.dag.tasks.say.dependentTasks[0]: task \"ghost-task\" does not exist in this DAG"),
        "{out}"
    );
    let (code, out) = validate(&[], &[corpus().join("does-not-exist.yaml")]);
    assert_eq!(code, 1);
    assert!(out.contains("does-not-exist.yaml: No such file"), "{out}");
}

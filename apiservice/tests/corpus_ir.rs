//! Every compiled pipeline in `../shared/corpus/*.yaml` is valid IR; every file in
//! `../shared/corpus/invalid/` is rejected with a message naming its problem. The directories are
//! iterated, so new corpus files are picked up automatically.

use std::path::{Path, PathBuf};

use kfp_apiservice::ir;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus files in {}", dir.display());
    files
}

#[test]
fn every_valid_corpus_pipeline_validates() {
    for path in yaml_files(&corpus()) {
        let bytes = std::fs::read(&path).unwrap();
        match ir::parse_pipeline_file(&bytes) {
            Ok(parsed) => assert!(!parsed.name.is_empty(), "{}", path.display()),
            Err(errs) => panic!(
                "{} should be valid:\n{}",
                path.display(),
                errs.iter().map(|e| format!("  {e}\n")).collect::<String>()
            ),
        }
    }
}

/// What each invalid file's error must mention. A file missing here must still be rejected;
/// the table pins the message for the known ones.
const EXPECTED: &[(&str, &str)] = &[
    ("argo_v1_workflow.yaml", "KFP v1 Argo Workflow"),
    (
        "bad_parameter_type_enum.yaml",
        "parameterType: \"STRINGG\" is not a valid value",
    ),
    ("bad_yaml.yaml", "not valid YAML"),
    ("dependency_cycle.yaml", "cycle"),
    (
        "dotted_pipeline_name.yaml",
        "pipelineInfo.name: \"team.pipeline\"",
    ),
    ("empty_document.yaml", "no pipeline spec found"),
    ("huge_5mib.yaml", "a PipelineVersion holds at most 1.5 MiB"),
    (
        "k8s_manifest_uploaded_as_ir.yaml",
        "Kubernetes PipelineVersion manifest",
    ),
    (
        "malformed_platform_spec.yaml",
        "platforms.kubernetes.deploymentSpec: must be a mapping",
    ),
    (
        "missing_dependent_task.yaml",
        "dependentTasks[0]: task \"ghost-task\" does not exist",
    ),
    (
        "missing_pipeline_info.yaml",
        "pipelineInfo: pipelineInfo (with the pipeline's name) is missing",
    ),
    (
        "missing_pipeline_info_name.yaml",
        "pipelineInfo.name: the pipeline's name is missing",
    ),
    (
        "missing_root.yaml",
        "root: the pipeline's root component (its DAG) is missing",
    ),
    (
        "missing_schema_version.yaml",
        "schemaVersion: KFP only supports schema version 2.1.0",
    ),
    ("pipeline_name_too_long.yaml", "got 129 characters"),
    ("platform_spec_only.yaml", "only a platform spec"),
    ("tab_indentation.yaml", "not valid YAML"),
    (
        "top_level_list.yaml",
        "must be a mapping (a KFP PipelineSpec), found a sequence",
    ),
    (
        "two_pipeline_specs.yaml",
        "multiple pipeline specs provided",
    ),
    ("unknown_component_ref.yaml", "is not defined in components"),
    (
        "unknown_top_level_field.yaml",
        "extraField: unknown field \"extraField\"",
    ),
    (
        "uppercase_pipeline_name.yaml",
        "pipelineInfo.name: \"My_Pipeline\"",
    ),
    ("wrong_schema_version.yaml", "got \"2.0.0\""),
];

#[test]
fn every_invalid_corpus_file_is_rejected_with_its_problem() {
    for path in yaml_files(&corpus().join("invalid")) {
        let name = path.file_name().unwrap().to_str().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let errs = match ir::parse_pipeline_file(&bytes) {
            Ok(_) => panic!("{name} must be rejected"),
            Err(errs) => errs,
        };
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(!text.is_empty() && text.iter().all(|t| !t.is_empty()));
        if let Some((_, want)) = EXPECTED.iter().find(|(f, _)| *f == name) {
            assert!(
                text.iter().any(|t| t.contains(want)),
                "{name}: expected a message containing {want:?}, got {text:#?}"
            );
        }
    }
}

#[test]
fn packaged_json_pipeline_validates() {
    let bytes = std::fs::read(corpus().join("packages/hello_world.json")).unwrap();
    let parsed = ir::parse_pipeline_file(&bytes).expect("hello_world.json is valid IR");
    assert_eq!(parsed.name, "hello-world");
}

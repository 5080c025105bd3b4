//! Every manifest in `../shared/corpus/k8s/` validates as Kubernetes objects, and every corpus
//! pipeline survives the round trip through the KFP REST shapes.

use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kfp_apiservice::convert::{self, RestPipeline, RestPipelineVersion};
use kfp_apiservice::manifest::{self, Object};
use kfp_apiservice::strategy::{self, CreateContext, Parent};
use kfp_apiservice::{Pipeline, PipelineSpec, ir};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

#[test]
fn every_k8s_corpus_manifest_validates() {
    for path in yaml_files(&corpus().join("k8s")) {
        let docs = manifest::read(&std::fs::read(&path).unwrap()).unwrap();
        assert!(manifest::looks_like_manifest(&docs));
        let report = manifest::validate_documents(&docs);
        assert!(
            report.errors.is_empty(),
            "{}: {:#?}",
            path.display(),
            report
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
        assert_eq!(report.objects.len(), docs.len(), "{}", path.display());
        assert!(
            report
                .objects
                .iter()
                .any(|o| matches!(o, Object::Version(_)))
        );
    }
}

#[test]
fn manifest_errors_name_document_and_field() {
    let text = std::fs::read_to_string(corpus().join("k8s/hello_world.yaml")).unwrap();
    let bad = text.replacen(
        "pipelineName: hello-world",
        "pipelineName: hello-world\n  noSuchField: 1",
        1,
    );
    let report = manifest::validate_documents(&manifest::read(bad.as_bytes()).unwrap());
    let msgs: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        vec!["document 2: strict decoding error: unknown field \"spec.noSuchField\""]
    );

    let bad = text.replace("schemaVersion: 2.1.0", "schemaVersion: 2.0.0");
    let report = manifest::validate_documents(&manifest::read(bad.as_bytes()).unwrap());
    let msgs: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        vec![
            "document 2: spec.pipelineSpec.schemaVersion: KFP only supports schema version 2.1.0, got \"2.0.0\""
        ]
    );
}

fn ctx(uid: &str) -> CreateContext {
    CreateContext {
        uid: uid.into(),
        now: "2026-03-04T05:06:07Z".parse().unwrap(),
    }
}

/// REST create -> object -> REST read gives back what was sent (plus server-owned ids), and the
/// object rebuilt from that REST view equals the stored one.
#[test]
fn every_corpus_pipeline_round_trips_through_the_rest_shapes() {
    for path in yaml_files(&corpus()) {
        let parsed = ir::parse_pipeline_file(&std::fs::read(&path).unwrap()).unwrap();
        let request = RestPipeline {
            name: parsed.name.clone(),
            display_name: parsed.display_name.clone().unwrap_or_default(),
            description: parsed.description.clone().unwrap_or_default(),
            tags: Some([("team".to_owned(), "ml".to_owned())].into()),
            ..Default::default()
        };
        let mut pipeline = convert::pipeline_from_rest(&request, "team-a");
        strategy::prepare_pipeline_for_create(&mut pipeline, &ctx("p-uid"));
        assert!(strategy::validate_pipeline_create(&pipeline).is_ok());
        let rest = convert::pipeline_to_rest(&pipeline);
        assert_eq!(rest.pipeline_id, "p-uid");
        assert_eq!(rest.created_at, "2026-03-04T05:06:07Z");
        assert_eq!(rest.namespace, "team-a");
        assert_eq!(rest.name, request.name);
        assert_eq!(
            rest.display_name,
            parsed.display_name.clone().unwrap_or(parsed.name.clone())
        );
        assert_eq!(rest.tags, request.tags);
        // Back again: the REST view rebuilds the same spec.
        let again = convert::pipeline_from_rest(&rest, "team-a");
        assert_eq!(again.spec, pipeline.spec, "{}", path.display());

        let vreq = RestPipelineVersion {
            name: "v1".into(),
            code_source_url: "https://example.com/src".into(),
            description: "first".into(),
            ..Default::default()
        };
        let mut version = convert::version_from_rest(
            &vreq,
            &pipeline,
            parsed.pipeline_spec.clone(),
            parsed.platform_spec.clone(),
        );
        strategy::prepare_version_for_create(&mut version, &ctx("v-uid"), Parent::Found(&pipeline));
        let outcome = strategy::validate_version_create(&version, Parent::Found(&pipeline));
        assert!(outcome.is_ok(), "{}: {:?}", path.display(), outcome.errors);
        assert_eq!(
            version.metadata.name.as_deref(),
            Some(format!("{}-v1", parsed.name).as_str())
        );

        let vrest = convert::version_to_rest(&version, true);
        assert_eq!(vrest.pipeline_id, "p-uid");
        assert_eq!(vrest.pipeline_version_id, "v-uid");
        assert_eq!(vrest.name, "v1");
        assert_eq!(vrest.display_name, "v1");
        assert_eq!(vrest.code_source_url, vreq.code_source_url);
        let wire = serde_json::to_value(&vrest).unwrap();
        let expected_spec =
            convert::wrap_spec(&parsed.pipeline_spec, parsed.platform_spec.as_ref());
        assert_eq!(wire["pipeline_spec"], expected_spec);
        if parsed.platform_spec.is_some() {
            assert!(
                wire["pipeline_spec"].get("platform_spec").is_some(),
                "{}",
                path.display()
            );
        }
        // The REST JSON parses back into the same REST value, and rebuilds the same object spec.
        let reparsed: RestPipelineVersion = serde_json::from_value(wire).unwrap();
        assert_eq!(reparsed, vrest);
        let (spec, platform) = convert::unwrap_spec(reparsed.pipeline_spec.as_ref().unwrap());
        let rebuilt = convert::version_from_rest(&reparsed, &pipeline, spec, platform);
        assert_eq!(rebuilt.spec, version.spec, "{}", path.display());
        assert_eq!(rebuilt.metadata.name, version.metadata.name);
    }
}

/// Objects written with kubectl (no versionName, no displayName) read sensibly over REST.
#[test]
fn gitops_objects_show_their_object_names_over_rest() {
    let docs =
        manifest::read(&std::fs::read(corpus().join("k8s/hello_world.versioned.yaml")).unwrap())
            .unwrap();
    let report = manifest::validate_documents(&docs);
    let Object::Version(v) = &report.objects[1] else {
        panic!("second object is the version")
    };
    let mut v = (**v).clone();
    v.spec.display_name = None;
    let rest = convert::version_to_rest(&v, false);
    assert_eq!(rest.name, "hello-world-v2");
    assert_eq!(rest.display_name, "hello-world-v2");
    assert!(rest.pipeline_spec.is_none());
    let p = Pipeline {
        metadata: ObjectMeta {
            name: Some("x".into()),
            ..Default::default()
        },
        spec: PipelineSpec::default(),
        ..Default::default()
    };
    assert_eq!(convert::pipeline_to_rest(&p).display_name, "x");
}

/// `kfp-apiserver manifest`'s library half: every corpus pipeline becomes a Pipeline and a
/// PipelineVersion that validate, whose YAML reads back to the same objects, and whose
/// pipelineSpec and platformSpec are the compiled documents unchanged.
#[test]
fn every_corpus_pipeline_becomes_manifests_that_read_back() {
    for path in yaml_files(&corpus()) {
        let parsed = ir::parse_pipeline_file(&std::fs::read(&path).unwrap()).unwrap();
        for naming in [
            manifest::Naming::default(),
            manifest::Naming {
                name: Some("renamed".into()),
                namespace: Some("team-a".into()),
                version_name: Some("v2".into()),
            },
        ] {
            let objects = manifest::from_pipeline(&parsed, &naming)
                .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            let text = kfp_apiservice::emit::documents(&objects);
            let docs = manifest::read(text.as_bytes()).unwrap();
            let back: Vec<_> = docs.iter().map(|d| d.value.clone()).collect();
            assert_eq!(back, objects, "{}", path.display());
            let report = manifest::validate_documents(&docs);
            assert!(report.errors.is_empty(), "{}", path.display());
            let [Object::Pipeline(p), Object::Version(v)] = &report.objects[..] else {
                panic!("{}: {:?}", path.display(), report.objects);
            };
            let pipeline_name = naming.name.clone().unwrap_or_else(|| parsed.name.clone());
            assert_eq!(p.metadata.name.as_deref(), Some(pipeline_name.as_str()));
            assert_eq!(
                v.spec.pipeline_name.as_deref(),
                Some(pipeline_name.as_str())
            );
            let expected_version = match &naming.version_name {
                Some(vn) => format!("{pipeline_name}-{vn}"),
                None => pipeline_name.clone(),
            };
            assert_eq!(v.metadata.name.as_deref(), Some(expected_version.as_str()));
            assert_eq!(v.spec.pipeline_spec.as_ref(), Some(&parsed.pipeline_spec));
            assert_eq!(v.spec.platform_spec, parsed.platform_spec);
            assert_eq!(
                objects[0]
                    .pointer("/metadata/namespace")
                    .and_then(|n| n.as_str()),
                naming.namespace.as_deref()
            );
        }
    }
}

//! `kfp-apiserver manifest FILE`: a compiled pipeline -> Pipeline + PipelineVersion manifests,
//! validated with the server's rules and written as YAML that kubectl reads unchanged
//! (`kfp_apiservice::emit`). It reads one file and writes stdout or the `--split` directory;
//! it never talks to a server.

use std::io::Write;
use std::path::Path;

use kfp_apiservice::{emit, ir, manifest};

use crate::options::ManifestOptions;

/// Runs the subcommand; returns the process exit code (0 written, 1 invalid input, 2 I/O).
pub fn run(opts: &ManifestOptions, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let name = opts.file.display().to_string();
    let bytes = match crate::validate::read(&opts.file) {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(err, "{name}: {e}");
            return 2;
        }
    };
    let parsed = match ir::parse_pipeline_file(&bytes) {
        Ok(p) => p,
        Err(errs) => {
            for e in errs {
                let _ = writeln!(err, "{name}: {e}");
            }
            return 1;
        }
    };
    let naming = manifest::Naming {
        name: opts.name.clone(),
        namespace: opts.namespace.clone(),
        version_name: opts.version_name.clone(),
    };
    let objects = match manifest::from_pipeline(&parsed, &naming) {
        Ok(o) => o,
        Err(errs) => {
            for e in errs {
                let _ = writeln!(err, "{name}: {e}");
            }
            return 1;
        }
    };
    match &opts.split {
        None => match out.write_all(emit::documents(&objects).as_bytes()) {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(err, "writing the manifests: {e}");
                2
            }
        },
        Some(dir) => match split(dir, &objects) {
            Ok(lines) => {
                for l in lines {
                    let _ = writeln!(out, "{l}");
                }
                0
            }
            Err(e) => {
                let _ = writeln!(err, "{}: {e}", dir.display());
                2
            }
        },
    }
}

/// Writes each object to `<name>.<plural-ish kind>.yaml` in `dir`, and a kustomization listing
/// them when `dir` has none; returns what was written.
fn split(dir: &Path, objects: &[serde_json::Value]) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    let mut lines = Vec::new();
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or("object").to_ascii_lowercase();
        let name = o["metadata"]["name"].as_str().unwrap_or("unnamed");
        let file = format!("{name}.{kind}.yaml");
        std::fs::write(dir.join(&file), emit::document(o))?;
        lines.push(format!("wrote {}", dir.join(&file).display()));
        files.push(file);
    }
    let kustomization = dir.join("kustomization.yaml");
    if kustomization.exists() {
        lines.push(format!(
            "{} exists and was not changed; its resources should list {}",
            kustomization.display(),
            files.join(", ")
        ));
    } else {
        let doc = serde_json::json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": files,
        });
        std::fs::write(&kustomization, emit::document(&doc))?;
        lines.push(format!("wrote {}", kustomization.display()));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn opts(file: PathBuf) -> ManifestOptions {
        ManifestOptions {
            name: None,
            namespace: Some("team-a".into()),
            version_name: None,
            split: None,
            file,
        }
    }

    fn corpus(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/corpus")
            .join(name)
    }

    #[test]
    fn writes_both_objects_or_says_why_not() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(
            run(&opts(corpus("hello_world.yaml")), &mut out, &mut err),
            0
        );
        let text = String::from_utf8(out).unwrap();
        let docs = manifest::read(text.as_bytes()).unwrap();
        let kinds: Vec<_> = docs.iter().map(|d| d.value["kind"].clone()).collect();
        assert_eq!(kinds, ["Pipeline", "PipelineVersion"]);
        assert_eq!(docs[1].value["metadata"]["namespace"], "team-a");

        let (mut out, mut err) = (Vec::new(), Vec::new());
        let bad = corpus("invalid/bad_parameter_type_enum.yaml");
        assert_eq!(run(&opts(bad), &mut out, &mut err), 1);
        assert!(out.is_empty());
        assert!(!err.is_empty());

        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut o = opts(corpus("hello_world.yaml"));
        o.name = Some("Not A DNS Name".into());
        assert_eq!(run(&o, &mut out, &mut err), 1);
        let err = String::from_utf8(err).unwrap();
        assert!(err.contains("metadata.name"), "{err}");
        assert!(out.is_empty());
    }

    #[test]
    fn split_writes_one_file_per_object_and_a_kustomization_once() {
        let dir = std::env::temp_dir().join(format!("kfp-manifest-{}", uuid::Uuid::new_v4()));
        let mut o = opts(corpus("hello_world.yaml"));
        o.split = Some(dir.clone());
        o.version_name = Some("v1".into());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(&o, &mut out, &mut err), 0);
        let k = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
        assert!(k.contains("- hello-world.pipeline.yaml"), "{k}");
        assert!(k.contains("- hello-world-v1.pipelineversion.yaml"), "{k}");
        let v = std::fs::read(dir.join("hello-world-v1.pipelineversion.yaml")).unwrap();
        let docs = manifest::read(&v).unwrap();
        assert_eq!(docs[0].value["spec"]["versionName"], "v1");
        // A second run leaves the kustomization alone and says so.
        std::fs::write(dir.join("kustomization.yaml"), "resources: []\n").unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(&o, &mut out, &mut err), 0);
        assert!(String::from_utf8(out).unwrap().contains("was not changed"));
        assert_eq!(
            std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap(),
            "resources: []\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

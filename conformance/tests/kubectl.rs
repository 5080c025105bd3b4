//! The real kubectl 1.35 against `kfp-apiserver serve --dev`: discovery, explain, apply
//! (client-side and server-side) of every corpus manifest, get in every output format, watch,
//! diff, label, annotate, replace, patch of each type, delete with cascading, delete --all,
//! wait, and the rejections with their messages.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use kfp_conformance::{DevServer, Run, corpus, corpus_files};
use serde_json::{Value, json};

fn ok(r: &Run, what: &str) -> String {
    assert_eq!(
        r.code, 0,
        "{what} failed:\nstdout: {}\nstderr: {}",
        r.stdout, r.stderr
    );
    r.stdout.clone()
}

fn fails_with(r: &Run, what: &str, needle: &str) {
    assert_ne!(r.code, 0, "{what} should fail:\n{}", r.stdout);
    assert!(
        r.stderr.contains(needle),
        "{what}: expected {needle:?} in:\n{}",
        r.stderr
    );
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn discovery_and_explain() {
    let s = DevServer::start("discovery");
    let out = ok(
        &s.kubectl(&[
            "api-resources",
            "--api-group=pipelines.kubeflow.org",
            "-o",
            "wide",
        ]),
        "api-resources",
    );
    assert!(
        out.contains("pipelines") && out.contains("pl ") && out.contains("Pipeline"),
        "{out}"
    );
    assert!(
        out.contains("pipelineversions") && out.contains("plv") && out.contains("PipelineVersion"),
        "{out}"
    );
    assert!(out.contains("kubeflow"), "categories: {out}");
    let out = ok(&s.kubectl(&["explain", "pipelineversion.spec"]), "explain");
    for field in [
        "pipelineSpec",
        "codeSourceURL",
        "pipelineName",
        "platformSpec",
        "versionName",
    ] {
        assert!(out.contains(field), "explain lacks {field}:\n{out}");
    }
    let out = ok(
        &s.kubectl(&["explain", "pipeline.spec.displayName"]),
        "explain field",
    );
    assert!(out.contains("displayName"), "{out}");
    let out = ok(&s.kubectl(&["get", "kubeflow", "-A"]), "get by category");
    assert!(out.is_empty() || out.contains("No resources"), "{out}");
}

#[test]
fn apply_every_corpus_manifest_client_side_then_server_side() {
    let s = DevServer::start("apply");
    let mut versions = 0;
    for f in corpus_files("k8s") {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name == "nested_subpipelines.yaml" {
            // kubectl reads YAML 1.1: the SDK's unquoted input name `n` arrives as `false`, a
            // broken pipeline (upstream KFP's webhook rejects it too). The message says why.
            let r = s.kubectl(&["apply", "-f", path(&f)]);
            fails_with(
                &r,
                &name,
                "componentInputParameter: Invalid type: must be a string, found a boolean (false)",
            );
            assert!(r.stderr.contains("quote"), "{}", r.stderr);
            continue;
        }
        if name == "stress_200.yaml" {
            // Client-side apply stores the whole object in an annotation; 300 KB is over the
            // 256 KiB annotation limit, exactly as on kube-apiserver. Server-side apply below works.
            let r = s.kubectl(&["apply", "-f", path(&f)]);
            fails_with(
                &r,
                &name,
                "metadata.annotations: Too long: must have at most 262144 bytes",
            );
            continue;
        }
        if name == "hello_world.version_only.yaml" {
            // No namespace and no Pipeline: kubectl sends it to "default", where its parent is missing.
            fails_with(
                &s.kubectl(&["apply", "-f", path(&f)]),
                &name,
                "Pipeline \"hello-world\" does not exist in namespace \"default\"",
            );
            continue;
        }
        let out = ok(&s.kubectl(&["apply", "-f", path(&f)]), &name);
        assert!(
            out.contains("created") || out.contains("unchanged") || out.contains("configured"),
            "{name}: {out}"
        );
    }
    for f in corpus_files("k8s") {
        if f.ends_with("hello_world.version_only.yaml") || f.ends_with("nested_subpipelines.yaml") {
            continue;
        }
        let r = s.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            path(&f),
        ]);
        let out = ok(&r, &format!("server-side apply {}", f.display()));
        assert!(out.contains("serverside-applied"), "{out}");
        versions += 1;
    }
    let list: Value =
        serde_json::from_str(&ok(&s.kubectl(&["get", "plv", "-A", "-o", "json"]), "list"))
            .expect("json");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(versions));
    for item in list["items"].as_array().into_iter().flatten() {
        assert_eq!(item["status"]["conditions"][0]["reason"], "READY");
        assert!(item["metadata"]["labels"]["pipelines.kubeflow.org/pipeline-id"].is_string());
        assert_eq!(item["metadata"]["ownerReferences"][0]["kind"], "Pipeline");
    }
    // A second server-side apply without --force-conflicts by the same manager is a no-op.
    let again = s.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        path(&corpus().join("k8s/hello_world.yaml")),
    ]);
    ok(&again, "repeat server-side apply");
    // A fresh server-side apply onto a new object, with the pipelineInfo.name warning.
    let r = s.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        path(&corpus().join("k8s/hello_world.versioned.yaml")),
    ]);
    ok(&r, "server-side apply versioned");
}

#[test]
fn get_output_formats_label_annotate_patch_replace_diff_wait() {
    let s = DevServer::start("verbs");
    ok(
        &s.kubectl(&["apply", "-f", path(&corpus().join("k8s/hello_world.yaml"))]),
        "apply",
    );
    let ns = ["-n", "kubeflow"];
    let get = |extra: &[&str]| {
        let mut args = vec!["get", "plv", "hello-world"];
        args.extend_from_slice(&ns);
        args.extend_from_slice(extra);
        ok(&s.kubectl(&args), &format!("get {extra:?}"))
    };
    let wide = get(&["-o", "wide"]);
    assert!(
        wide.contains("PIPELINE")
            && wide.contains("STATUS")
            && wide.contains("DESCRIPTION")
            && wide.contains("READY"),
        "{wide}"
    );
    assert!(get(&["-o", "yaml"]).contains("kind: PipelineVersion"));
    let json: Value = serde_json::from_str(&get(&["-o", "json"])).expect("json");
    assert_eq!(json["spec"]["pipelineName"], "hello-world");
    assert_eq!(get(&["-o", "jsonpath={.spec.pipelineName}"]), "hello-world");
    let cc = get(&[
        "-o",
        "custom-columns=NAME:.metadata.name,PIPE:.spec.pipelineName",
    ]);
    assert!(
        cc.contains("NAME")
            && cc.contains("PIPE")
            && cc.lines().nth(1).is_some_and(|l| l.contains("hello-world")),
        "{cc}"
    );

    ok(
        &s.kubectl(&["label", "plv", "hello-world", "team=ml", "-n", "kubeflow"]),
        "label",
    );
    ok(
        &s.kubectl(&["annotate", "pl", "hello-world", "note=hi", "-n", "kubeflow"]),
        "annotate",
    );
    assert!(
        ok(
            &s.kubectl(&[
                "get", "plv", "-n", "kubeflow", "-l", "team=ml", "-o", "name"
            ]),
            "selector"
        )
        .contains("hello-world")
    );
    assert!(
        ok(
            &s.kubectl(&[
                "get",
                "pl",
                "hello-world",
                "-n",
                "kubeflow",
                "-o",
                "jsonpath={.metadata.annotations.note}"
            ]),
            "annotation"
        ) == "hi"
    );

    // Patch of each type: merge, json, server-side apply; strategic merge is refused (415).
    ok(
        &s.kubectl(&[
            "patch",
            "plv",
            "hello-world",
            "-n",
            "kubeflow",
            "--type=merge",
            "-p",
            r#"{"spec":{"displayName":"Merged"}}"#,
        ]),
        "merge patch",
    );
    ok(
        &s.kubectl(&[
            "patch",
            "plv",
            "hello-world",
            "-n",
            "kubeflow",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/spec/tags","value":{"team":"ml"}}]"#,
        ]),
        "json patch",
    );
    let v: Value = serde_json::from_str(&get(&["-o", "json"])).expect("json");
    assert_eq!(
        (
            v["spec"]["displayName"].as_str(),
            v["spec"]["tags"]["team"].as_str()
        ),
        (Some("Merged"), Some("ml"))
    );
    fails_with(
        &s.kubectl(&[
            "patch",
            "plv",
            "hello-world",
            "-n",
            "kubeflow",
            "-p",
            r#"{"spec":{"displayName":"x"}}"#,
        ]),
        "strategic merge patch",
        "application/strategic-merge-patch+json is not supported",
    );

    // Replace a Pipeline.
    let yaml = ok(
        &s.kubectl(&["get", "pl", "hello-world", "-n", "kubeflow", "-o", "yaml"]),
        "get yaml",
    );
    let changed = yaml.replace("displayName: hello-world", "displayName: Replaced");
    ok(
        &s.kubectl_stdin(&["replace", "-f", "-"], Some(&changed)),
        "replace",
    );
    assert_eq!(
        ok(
            &s.kubectl(&[
                "get",
                "pl",
                "hello-world",
                "-n",
                "kubeflow",
                "-o",
                "jsonpath={.spec.displayName}"
            ]),
            "get"
        ),
        "Replaced"
    );

    // Diff: exit 0 with no change, 1 with one.
    let manifest = std::fs::read_to_string(corpus().join("k8s/hello_world.yaml")).expect("read");
    let r = s.kubectl_stdin(
        &["diff", "-f", "-"],
        Some(&manifest.replace(
            "description: One task that echoes a string.\n  displayName: hello-world\n---",
            "description: Different.\n  displayName: hello-world\n---",
        )),
    );
    assert_eq!(
        r.code, 1,
        "diff with a change exits 1: {}{}",
        r.stdout, r.stderr
    );
    assert!(r.stdout.contains("Different."), "{}", r.stdout);

    let r = s.kubectl(&[
        "wait",
        "--for=condition=PipelineVersionStatus",
        "plv/hello-world",
        "-n",
        "kubeflow",
        "--timeout=10s",
    ]);
    assert!(ok(&r, "wait").contains("condition met"));
}

#[test]
fn watch_sees_add_modify_delete() {
    let s = DevServer::start("watch");
    ok(
        &s.kubectl(&["apply", "-f", path(&corpus().join("k8s/hello_world.yaml"))]),
        "apply",
    );
    let (mut child, rx) = s.kubectl_lines(&[
        "get",
        "plv",
        "-n",
        "kubeflow",
        "-w",
        "--output-watch-events",
        "--no-headers",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let wait_for = |prefix: &str, name: &str| loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {prefix} {name} event within 30 s"));
        if line.starts_with(prefix) && line.contains(name) {
            return;
        }
    };
    wait_for("ADDED", "hello-world");
    ok(
        &s.kubectl(&["apply", "-f", path(&corpus().join("k8s/exit_handler.yaml"))]),
        "apply 2",
    );
    wait_for("ADDED", "exit-handler");
    ok(
        &s.kubectl(&["label", "plv", "exit-handler", "-n", "kubeflow", "x=y"]),
        "label",
    );
    wait_for("MODIFIED", "exit-handler");
    ok(
        &s.kubectl(&["delete", "plv", "exit-handler", "-n", "kubeflow"]),
        "delete",
    );
    wait_for("DELETED", "exit-handler");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn deletes_cascade_and_delete_all_empties_a_namespace() {
    let s = DevServer::start("delete");
    for f in [
        "k8s/hello_world.yaml",
        "k8s/hello_world.versioned.yaml",
        "k8s/kubernetes_platform.versioned.yaml",
    ] {
        ok(&s.kubectl(&["apply", "-f", path(&corpus().join(f))]), f);
    }
    // team-a holds Pipelines hello-world and kubernetes-platform, each with a version.
    ok(
        &s.kubectl(&["delete", "pipeline", "hello-world", "-n", "team-a"]),
        "delete pipeline",
    );
    let left = ok(
        &s.kubectl(&["get", "plv", "-n", "team-a", "-o", "name"]),
        "get",
    );
    assert!(
        !left.contains("hello-world-v2"),
        "versions of a deleted Pipeline go with it: {left}"
    );
    assert!(left.contains("kubernetes-platform-v2"), "{left}");
    let r = s.kubectl(&["get", "plv", "hello-world-v2", "-n", "team-a"]);
    assert_ne!(r.code, 0);
    ok(
        &s.kubectl(&["delete", "plv,pl", "--all", "-n", "team-a"]),
        "delete --all",
    );
    let left = ok(
        &s.kubectl(&["get", "plv,pl", "-n", "team-a", "-o", "name"]),
        "get after delete --all",
    );
    assert!(left.trim().is_empty(), "{left}");
    // The other namespace is untouched.
    assert!(
        ok(
            &s.kubectl(&["get", "plv", "-n", "kubeflow", "-o", "name"]),
            "kubeflow"
        )
        .contains("hello-world")
    );
}

/// Wraps a compiled pipeline document as a PipelineVersion manifest.
fn as_version(name: &str, ir: &Value) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "pipelines.kubeflow.org/v2beta1",
        "kind": "PipelineVersion",
        "metadata": {"name": name, "namespace": "kubeflow"},
        "spec": {"pipelineName": "hello-world", "pipelineSpec": ir},
    }))
    .expect("json")
}

#[test]
fn rejections_say_what_is_wrong_and_leave_nothing_behind() {
    let s = DevServer::start("reject");
    ok(
        &s.kubectl(&["apply", "-f", path(&corpus().join("k8s/hello_world.yaml"))]),
        "apply",
    );
    // Changing a version's pipelineSpec.
    let r = s.kubectl(&[
        "patch",
        "plv",
        "hello-world",
        "-n",
        "kubeflow",
        "--type=merge",
        "-p",
        r#"{"spec":{"pipelineSpec":{"sdkVersion":"kfp-9.9.9"}}}"#,
    ]);
    fails_with(&r, "spec change", "Pipeline spec is immutable");
    let r = s.kubectl(&[
        "patch",
        "plv",
        "hello-world",
        "-n",
        "kubeflow",
        "--type=merge",
        "-p",
        r#"{"spec":{"pipelineName":"other"}}"#,
    ]);
    fails_with(&r, "parent change", "spec.pipelineName: Forbidden");
    // A version whose Pipeline does not exist.
    let hello = kfp_apiservice::yaml::read_documents(
        &std::fs::read(corpus().join("hello_world.yaml")).expect("read"),
    )
    .expect("yaml");
    let orphan = as_version("orphan", &hello[0].value).replace(
        "\"pipelineName\":\"hello-world\"",
        "\"pipelineName\":\"ghost\"",
    );
    fails_with(
        &s.kubectl_stdin(&["apply", "-f", "-"], Some(&orphan)),
        "missing parent",
        "Pipeline \"ghost\" does not exist",
    );
    // Not a DNS-1123 name.
    let bad_name = as_version("Bad_Name", &hello[0].value);
    fails_with(
        &s.kubectl_stdin(&["create", "-f", "-"], Some(&bad_name)),
        "bad name",
        "metadata.name: Invalid value",
    );
    // Unknown fields under strict validation (kubectl's default).
    let unknown = as_version("unknown-field", &hello[0].value)
        .replace("\"pipelineName\"", "\"noSuchField\":1,\"pipelineName\"");
    fails_with(
        &s.kubectl_stdin(&["create", "-f", "-"], Some(&unknown)),
        "unknown field",
        "unknown field \"spec.noSuchField\"",
    );
    // Every invalid corpus pipeline that is one YAML mapping, wrapped as a version.
    let mut wrapped = 0;
    for f in corpus_files("invalid") {
        let name = f
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .replace('_', "-");
        let Ok(docs) = kfp_apiservice::yaml::read_documents(&std::fs::read(&f).expect("read"))
        else {
            continue;
        };
        if docs.len() != 1 || !docs[0].value.is_object() {
            continue;
        }
        let r = s.kubectl_stdin(
            &["create", "-f", "-"],
            Some(&as_version(&name, &docs[0].value)),
        );
        assert_ne!(r.code, 0, "{} must be rejected", f.display());
        assert!(
            r.stderr.contains("spec.pipelineSpec") || r.stderr.contains("Request entity too large"),
            "{}: the message names the field: {}",
            f.display(),
            r.stderr
        );
        wrapped += 1;
    }
    assert!(
        wrapped >= 12,
        "only {wrapped} invalid files could be wrapped"
    );
    // Nothing was left behind.
    let names = ok(&s.kubectl(&["get", "plv", "-A", "-o", "name"]), "get");
    assert_eq!(names.lines().count(), 1, "{names}");
}

#[test]
fn restart_keeps_data_and_credentials() {
    let dir = std::env::temp_dir().join(format!("kfp-conformance-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut s = DevServer::start_in(dir.clone(), false);
    ok(
        &s.kubectl(&["apply", "-f", path(&corpus().join("k8s/hello_world.yaml"))]),
        "apply",
    );
    let rv = ok(
        &s.kubectl(&[
            "get",
            "plv",
            "hello-world",
            "-n",
            "kubeflow",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ]),
        "rv",
    );
    assert_eq!(s.stop(), 0, "SIGTERM is a clean exit");
    drop(s);
    let s = DevServer::start_in(dir.clone(), true);
    let again = ok(
        &s.kubectl(&[
            "get",
            "plv",
            "hello-world",
            "-n",
            "kubeflow",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ]),
        "rv after restart",
    );
    assert_eq!(rv, again);
}

#[test]
fn sigterm_ends_open_watches_and_exits_cleanly() {
    let mut s = DevServer::start("sigterm");
    ok(
        &s.kubectl(&["apply", "-f", path(&corpus().join("k8s/hello_world.yaml"))]),
        "apply",
    );
    let mut watch = s.kubectl_spawn(&["get", "plv", "-n", "kubeflow", "-w"]);
    let stdout = watch.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("the watch printed its first line");
    assert_eq!(s.stop(), 0, "graceful shutdown with an open watch exits 0");
    // The watch ended on the shutdown signal; the server did not wait out its drain time-out.
    let log = std::fs::read_to_string(s.log_path()).expect("server log");
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        !log.contains("drain timed out"),
        "an open watch held shutdown:\n{log}"
    );
    // kubectl's watch ends when the server closes it.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if watch.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl -w did not end after the server shut down"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Flux and Argo CD dry-run every object of a change before applying any: a Pipeline and its
/// PipelineVersion in one file, nothing existing yet. The server-side dry-run passes with a
/// warning for the version's parent that does not exist yet and creates nothing; the same
/// apply without dry-run creates both.
#[test]
fn server_side_dry_run_of_a_pipeline_with_its_version_passes_and_creates_nothing() {
    let s = DevServer::start("dryrun");
    let file = corpus().join("k8s/hello_world.yaml");
    let listed = |s: &DevServer| {
        ok(
            &s.kubectl(&["get", "pipelines,pipelineversions", "-A", "-o", "name"]),
            "get",
        )
    };
    for args in [
        vec![
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            path(&file),
        ],
        vec!["apply", "--dry-run=server", "-f", path(&file)],
        vec!["create", "--dry-run=server", "-f", path(&file)],
    ] {
        let r = s.kubectl(&args);
        let out = ok(&r, &args.join(" "));
        assert!(out.contains("server dry run"), "{args:?}: {out}");
        assert!(
            r.stderr.contains("Warning:") && r.stderr.contains("does not exist yet"),
            "{args:?}: the missing parent is a warning: {}",
            r.stderr
        );
        assert_eq!(listed(&s).trim(), "", "{args:?}: a dry run creates nothing");
    }
    ok(
        &s.kubectl(&["apply", "--server-side", "-f", path(&file)]),
        "apply",
    );
    let out = listed(&s);
    assert!(
        out.contains("pipeline.pipelines.kubeflow.org/hello-world")
            && out.contains("pipelineversion.pipelines.kubeflow.org/hello-world"),
        "{out}"
    );
}

/// Numbers as kubectl hands them on: YAML `42.0` arrives as JSON `42` (go-yaml reads a float,
/// encoding/json writes it without the fraction), so specs are compared by numeric value.
fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn manifest_command(args: &[&str]) -> String {
    let out = std::process::Command::new(kfp_conformance::server_binary())
        .arg("manifest")
        .args(args)
        .output()
        .expect("run kfp-apiserver manifest");
    assert!(
        out.status.success(),
        "manifest {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 manifests")
}

/// `kfp-apiserver manifest` output of every corpus pipeline applies with the real kubectl,
/// client-side and server-side, and round-trips: the stored pipelineSpec and platformSpec are the
/// compiled documents — including `nested_subpipelines`, whose SDK-made manifest kubectl
/// misreads (its input `n` becomes `false`; see the apply test above).
#[test]
fn manifest_output_applies_and_round_trips() {
    let s = DevServer::start("manifest");
    let dir = std::env::temp_dir().join(format!("kfp-manifest-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked = 0;
    for f in corpus_files("") {
        let compiled =
            kfp_apiservice::ir::parse_pipeline_file(&std::fs::read(&f).unwrap()).unwrap();
        let stem = f.file_stem().and_then(|n| n.to_str()).unwrap().to_owned();
        let mut applied = Vec::new();
        // Client-side apply keeps the whole object in an annotation (256 KiB at most), so the
        // 380 KiB stress pipeline only applies server-side, as on kube-apiserver.
        if stem != "stress_200" {
            let text = manifest_command(&["--namespace", "client-side", path(&f)]);
            let file = dir.join(format!("{stem}.cs.yaml"));
            std::fs::write(&file, &text).unwrap();
            let out = ok(&s.kubectl(&["apply", "-f", path(&file)]), &stem);
            assert!(out.contains("created"), "{stem}: {out}");
            applied.push(("client-side", compiled.name.clone()));
        }
        let text = manifest_command(&[
            "--namespace",
            "server-side",
            "--version-name",
            "v1",
            path(&f),
        ]);
        let file = dir.join(format!("{stem}.ss.yaml"));
        std::fs::write(&file, &text).unwrap();
        let out = ok(
            &s.kubectl(&["apply", "--server-side", "-f", path(&file)]),
            &stem,
        );
        assert!(out.contains("serverside-applied"), "{stem}: {out}");
        applied.push(("server-side", format!("{}-v1", compiled.name)));
        for (ns, version) in applied {
            let got: Value = serde_json::from_str(&ok(
                &s.kubectl(&["get", "plv", "-n", ns, &version, "-o", "json"]),
                &version,
            ))
            .unwrap();
            assert_eq!(
                numbers_as_f64(&got["spec"]["pipelineSpec"]),
                numbers_as_f64(&compiled.pipeline_spec),
                "{stem} in {ns}: the stored pipelineSpec differs from the compiled one"
            );
            assert_eq!(
                numbers_as_f64(&got["spec"]["platformSpec"]),
                numbers_as_f64(compiled.platform_spec.as_ref().unwrap_or(&Value::Null)),
                "{stem} in {ns}: platformSpec"
            );
            assert_eq!(got["spec"]["pipelineName"], json!(compiled.name));
            checked += 1;
        }
        // Applying the same output again changes nothing.
        let again = ok(
            &s.kubectl(&["apply", "--server-side", "-f", path(&file)]),
            &stem,
        );
        assert!(again.contains("serverside-applied"), "{again}");
    }
    assert!(checked >= 2 * corpus_files("").len() - 1, "{checked}");
    let _ = std::fs::remove_dir_all(&dir);
}

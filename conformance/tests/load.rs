//! `kfp-load` against the real binary's `serve --dev`: every scenario runs briefly and its
//! figures are checked for sense — counts match what was made, nothing failed, every watch
//! event reached every watcher — never for speed (that is for the benchmark runs of
//! docs/performance.md).

use std::process::Command;

use kfp_conformance::DevServer;
use serde_json::Value;

/// Runs kfp-load with `args` against `server`; returns its exit code and JSON reports.
fn load(server: &DevServer, args: &[&str]) -> (i32, Vec<Value>, String) {
    let pid = server.pid().expect("running").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_kfp-load"))
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .args(["--json", "--server-pid", &pid, "--request-timeout", "20"])
        .args(args)
        .output()
        .expect("run kfp-load");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let reports = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out.status.code().unwrap_or(-1), reports, stderr)
}

fn one(server: &DevServer, args: &[&str]) -> Value {
    let (code, mut reports, stderr) = load(server, args);
    assert_eq!(code, 0, "kfp-load {args:?}: {stderr}");
    assert_eq!(reports.len(), 1, "{reports:?}");
    let r = reports.remove(0);
    assert_eq!(r["errors"], serde_json::json!({}), "{args:?}: {r}");
    assert_eq!(r["ok"], r["ops"], "{args:?}: {r}");
    let server = &r["server"];
    assert!(server["cpu_ms"].as_f64().expect("server CPU") >= 0.0, "{r}");
    assert!(
        server["rss_mib_after"].as_f64().expect("server RSS") > 1.0,
        "{r}"
    );
    r
}

fn count(server: &DevServer, resource: &str, selector: Option<&str>) -> usize {
    let mut args = vec!["get", resource, "-n", "kfp-load", "-o", "name"];
    if let Some(s) = selector {
        args.extend(["-l", s]);
    }
    let r = server.kubectl(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout.lines().count()
}

#[test]
fn every_scenario_runs_against_the_dev_server_with_sane_figures() {
    let server = DevServer::start("load");

    // seed: 3 pipelines x 4 versions; a second seed finds them all and makes nothing.
    let r = one(
        &server,
        &["seed", "--pipelines", "3", "--versions", "4", "-c", "4"],
    );
    assert_eq!(r["ops"], 15, "{r}");
    assert_eq!(r["extra"]["created"], 15, "{r}");
    assert_eq!(count(&server, "pipelineversions", None), 12);
    assert_eq!(count(&server, "pipelineversions", Some("team=t3")), 1);
    let r = one(&server, &["seed", "--pipelines", "3", "--versions", "4"]);
    assert_eq!(r["extra"]["already_existed"], 15, "{r}");
    assert_eq!(r["extra"]["created"], 0, "{r}");

    // create: exactly the count asked for, all stored.
    let r = one(&server, &["create", "-n", "20", "-c", "4"]);
    assert_eq!(r["ops"], 20, "{r}");
    assert_eq!(count(&server, "pipelineversions", None), 32);

    // get and list: every answer 200, with bodies of the right size.
    let r = one(&server, &["get", "-n", "50", "-c", "2"]);
    assert_eq!(r["ops"], 50, "{r}");
    assert!(r["bytes_per_op"].as_f64().expect("bytes") > 1000.0, "{r}");
    let r = one(&server, &["get", "-n", "20", "-c", "2", "--http2"]);
    assert_eq!(r["proto"], "Http2", "{r}");
    let r = one(&server, &["list", "--limit", "5", "-n", "10"]);
    assert_eq!(r["ops"], 10, "{r}");

    // full lists follow continue to the end: 32 versions in pages of 5 are 7 pages.
    let r = one(
        &server,
        &["list", "--full", "--limit", "5", "-n", "3", "-c", "1"],
    );
    assert_eq!(r["extra"]["items_per_list"], 32, "{r}");
    assert_eq!(r["extra"]["pages"], 21, "{r}");
    let r = one(
        &server,
        &["list", "--full", "--limit", "2", "-l", "team=t3", "-n", "1"],
    );
    assert_eq!(
        r["extra"]["items_per_list"],
        count(&server, "pipelineversions", Some("team=t3")),
        "{r}"
    );

    // watch fan-out: every write reaches every watcher, over HTTP/1.1 and HTTP/2.
    for proto in [&[][..], &["--http2", "--streams-per-conn", "7"][..]] {
        let mut args = vec![
            "watch-fanout",
            "--watchers",
            "20",
            "--writes",
            "5",
            "--rate",
            "50",
        ];
        args.extend_from_slice(proto);
        let r = one(&server, &args);
        assert_eq!(r["extra"]["watchers_connected"], 20, "{r}");
        assert_eq!(r["extra"]["writes_acked"], 5, "{r}");
        assert_eq!(r["extra"]["delivered"], 100, "{r}");
        assert_eq!(r["extra"]["expected"], 100, "{r}");
    }

    // mixed: reads of seeded names, label lists and creates, none failing.
    let r = one(
        &server,
        &[
            "mixed",
            "--pipelines",
            "3",
            "--versions",
            "4",
            "-n",
            "300",
            "-c",
            "4",
        ],
    );
    assert_eq!(r["ops"], 300, "{r}");

    // kfp-list: the KFP view (single-user: namespace `default`), sorted pages with a filter.
    one(
        &server,
        &[
            "seed",
            "-N",
            "default",
            "--pipelines",
            "25",
            "--versions",
            "0",
        ],
    );
    let r = one(
        &server,
        &[
            "kfp-list",
            "-N",
            "default",
            "--page-size",
            "4",
            "--pages",
            "10",
            "-n",
            "2",
            "-c",
            "1",
            "--substring",
            "load-1",
        ],
    );
    // "load load-1", "load load-10" … "load-19": 11 matches, 3 pages a walk.
    assert_eq!(r["extra"]["total_size"], 11, "{r}");
    assert_eq!(r["extra"]["items"], 22, "{r}");
    assert_eq!(r["ops"], 6, "{r}");
}

#[test]
fn failures_are_counted_by_status_and_fail_the_run() {
    let server = DevServer::start("load-errors");
    let (code, reports, _) = load(
        &server,
        &["get", "--name", "missing", "-n", "10", "-c", "2"],
    );
    assert_ne!(code, 0, "a run where nothing succeeded must fail");
    assert_eq!(reports[0]["errors"]["404"], 10, "{:?}", reports);
    assert_eq!(reports[0]["ok"], 0);
}

#[test]
fn compare_runs_the_scenario_against_both_servers_and_prints_ratios() {
    let a = DevServer::start("load-a");
    let b = DevServer::start("load-b");
    for s in [&a, &b] {
        one(s, &["seed", "--pipelines", "1", "--versions", "2"]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_kfp-load"))
        .arg("--kubeconfig")
        .arg(&a.kubeconfig)
        .arg("--compare")
        .arg(&b.kubeconfig)
        .args(["get", "-n", "30", "-c", "2"])
        .output()
        .expect("run kfp-load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("get ")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[0].contains(&a.addr) && rows[1].contains(&b.addr),
        "{text}"
    );
    assert!(text.contains("first vs second: throughput"), "{text}");
}

//! A writer process killed with SIGKILL in the middle of a write storm leaves no partial object
//! and loses no acknowledged write. The child is this test binary itself, re-run with
//! `KFP_CRASH_CHILD_URL` set; it prints `ACK name revision` after each committed write.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use kfp_storage::{Key, LabelSelector, ListRequest, Revision, Store, WatchItem, WatchRequest};
use serde_json::json;
use tokio_stream::StreamExt;

/// The child's body; a no-op unless run by `sigkill_mid_write_storm_loses_nothing_acknowledged`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_writer() {
    let Ok(url) = std::env::var("KFP_CRASH_CHILD_URL") else {
        return;
    };
    let s = common::open(&url).await;
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100_000u64 {
                let name = format!("c{w}-{i}");
                let obj = json!({"metadata": {"name": name, "namespace": "crash", "uid": format!("u-{name}"),
                    "labels": {"crash": "yes"}}, "spec": {"payload": "x".repeat(2000)}});
                let o = s.create(&Key::new("pipelines", "crash", &name), obj).await.unwrap();
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {name} {}", o.revision).unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_write_storm_loses_nothing_acknowledged() {
    if std::env::var("KFP_CRASH_CHILD_URL").is_ok() {
        return;
    }
    for b in common::backends().await {
        // Create the schema first so the child starts writing at once.
        drop(common::open(&b.url).await);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KFP_CRASH_CHILD_URL", &b.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acked = Vec::new();
        let reader = BufReader::new(child.stdout.take().unwrap());
        for line in reader.lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (name, rev) = rest.split_once(' ').unwrap();
                acked.push((name.to_owned(), Revision(rev.parse().unwrap())));
                if acked.len() == 300 {
                    child.kill().unwrap(); // SIGKILL
                    break;
                }
            }
        }
        child.wait().unwrap();
        assert_eq!(
            acked.len(),
            300,
            "{}: the child acknowledged writes",
            b.name
        );

        let s = common::open(&b.url).await;
        for (name, rev) in &acked {
            let o = s
                .get(&Key::new("pipelines", "crash", name))
                .await
                .unwrap_or_else(|e| panic!("{}: acknowledged {name} lost: {e}", b.name));
            assert_eq!(o.revision, *rev, "{}: {name}", b.name);
        }
        // Nothing partial: every stored object is whole JSON, found by its label (labels
        // table consistent), and has exactly one ADDED event in the change feed.
        let all = s
            .list(&ListRequest {
                resource: "pipelines".into(),
                namespace: Some("crash".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let by_label = s
            .list(&ListRequest {
                resource: "pipelines".into(),
                namespace: Some("crash".into()),
                labels: LabelSelector::parse("crash=yes").unwrap(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.items.len(), by_label.items.len(), "{}", b.name);
        assert!(all.items.len() >= acked.len());
        for o in &all.items {
            let v = o.json().unwrap();
            assert_eq!(
                v["spec"]["payload"].as_str().map(str::len),
                Some(2000),
                "{}: partial object {}",
                b.name,
                o.key
            );
        }
        let mut w = s
            .watch(&WatchRequest {
                resource: "pipelines".into(),
                from: Revision(0),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut events = 0;
        while events < all.items.len() {
            match tokio::time::timeout(std::time::Duration::from_secs(30), w.next())
                .await
                .unwrap()
                .unwrap()
            {
                WatchItem::Event { .. } => events += 1,
                WatchItem::Bookmark(_) => {}
                WatchItem::Error(e) => panic!("{}: {e}", b.name),
            }
        }
        assert_eq!(
            s.current_revision().await.unwrap(),
            all.items.iter().map(|o| o.revision).max().unwrap(),
            "{}: no revision without its object",
            b.name
        );
    }
}

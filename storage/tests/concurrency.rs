//! 8 writers x 500 writes across 2 store instances sharing one database; a watcher on each
//! instance sees every committed write exactly once, in revision order, with the revisions the
//! writers got back. Runs on every backend (two SQLite instances share one file).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use kfp_storage::{Key, Preconditions, Revision, Store, WatchItem, WatchRequest};
use serde_json::json;
use tokio_stream::StreamExt;

const WRITERS: usize = 8;
const WRITES: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_two_instances_are_seen_once_in_order_by_every_watcher() {
    for b in common::backends().await {
        let stores = [common::open(&b.url).await, common::open(&b.url).await];
        let start = stores[0].current_revision().await.unwrap();
        let mut watches = Vec::new();
        for s in &stores {
            watches.push(
                s.watch(&WatchRequest {
                    resource: "pipelines".into(),
                    from: start,
                    ..Default::default()
                })
                .await
                .unwrap(),
            );
        }
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let s = stores[w % 2].clone();
            tasks.push(tokio::spawn(async move {
                let mut revs = Vec::with_capacity(WRITES);
                for i in 0..WRITES {
                    let name = format!("w{w}-{}", i / 2);
                    let key = Key::new("pipelines", "ns", &name);
                    let obj = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("u-{w}-{}", i / 2),
                                     "labels": {"writer": w.to_string(), "step": i.to_string()}}});
                    // Even steps create, odd steps update what was just created.
                    let o = if i % 2 == 0 {
                        s.create(&key, obj).await
                    } else {
                        s.update(&key, obj, &Preconditions::default()).await
                    };
                    revs.push(o.expect("write").revision);
                }
                revs
            }));
        }
        let mut written: Vec<Revision> = Vec::new();
        for t in tasks {
            written.extend(t.await.unwrap());
        }
        written.sort();
        let expected: BTreeSet<Revision> = written.iter().copied().collect();
        assert_eq!(
            expected.len(),
            WRITERS * WRITES,
            "{}: every write got its own revision",
            b.name
        );
        for (i, w) in watches.iter_mut().enumerate() {
            let mut seen = Vec::with_capacity(WRITERS * WRITES);
            while seen.len() < WRITERS * WRITES {
                let item = tokio::time::timeout(Duration::from_secs(60), w.next())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "{} instance {i}: stalled after {} events",
                            b.name,
                            seen.len()
                        )
                    })
                    .expect("stream open");
                match item {
                    WatchItem::Event { revision, .. } => seen.push(revision),
                    WatchItem::Bookmark(_) => {}
                    WatchItem::Error(e) => panic!("{} instance {i}: {e}", b.name),
                }
            }
            assert!(
                seen.windows(2).all(|p| p[0] < p[1]),
                "{} instance {i}: strictly increasing",
                b.name
            );
            assert_eq!(
                seen, written,
                "{} instance {i}: exactly the committed revisions",
                b.name
            );
        }
    }
}

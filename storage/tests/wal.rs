//! SQLite's write-ahead log stays bounded: a reader that is always in some read transaction
//! keeps SQLite's automatic checkpoint from ever restarting the log (a 1M-object seed left a
//! 29 GB log beside a 7 GB database); the writer truncates it once no reader is in it.

mod common;

use std::time::Duration;

use kfp_storage::{Key, Maintenance, Revision, SqlStore, Store, WatchItem, WatchRequest};
use serde_json::json;
use tokio_stream::StreamExt;

/// The writer's limit (storage/src/sql/writer.rs).
const WAL_LIMIT: u64 = 64 << 20;

fn wal_len(db: &std::path::Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

fn object(name: &str, payload: usize) -> serde_json::Value {
    json!({"metadata": {"name": name, "namespace": "wal", "uid": format!("u-{name}")},
        "spec": {"payload": "x".repeat(payload)}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_truncated_once_no_reader_holds_it() {
    let server = common::servers().into_iter().next().unwrap();
    let backend = server.fresh().await;
    let db = std::path::PathBuf::from(backend.url.strip_prefix("sqlite://").unwrap());
    // The tailer reads only when a commit wakes it, so the test knows when it is idle.
    let mut config = common::config(&backend.url);
    config.poll_interval = Duration::from_secs(3600);
    let store = SqlStore::open(config).await.unwrap();
    let first = store
        .create(&Key::new("pipelines", "wal", "first"), object("first", 10))
        .await
        .unwrap();

    // A reader in one read transaction throughout: the log can only grow.
    let reader = rusqlite::Connection::open(&db).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let seen: i64 = reader
        .query_row("SELECT count(*) FROM kfp_objects", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seen, 1);
    let mut written = 1;
    while wal_len(&db) <= WAL_LIMIT && written < 600 {
        let name = format!("big-{written}");
        store
            .create(
                &Key::new("pipelines", "wal", &name),
                object(&name, 256 << 10),
            )
            .await
            .unwrap();
        written += 1;
    }
    let held = wal_len(&db);
    assert!(
        held > WAL_LIMIT,
        "the log grew past the limit behind the reader ({held} bytes after {written} writes)"
    );
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);

    // One write, then wait until the tailer has published it (its read is over), then one more:
    // at that commit nobody is in the log.
    let mut watch = store
        .watch(&WatchRequest {
            resource: "pipelines".into(),
            from: first.revision,
            ..Default::default()
        })
        .await
        .unwrap();
    let after = store
        .create(&Key::new("pipelines", "wal", "after"), object("after", 10))
        .await
        .unwrap();
    let mut last = Revision(0);
    while last < after.revision {
        match tokio::time::timeout(Duration::from_secs(30), watch.next()).await {
            Ok(Some(WatchItem::Event { revision, .. })) => last = revision,
            other => panic!("the watch ended before the last write: {other:?}"),
        }
    }
    store
        .create(&Key::new("pipelines", "wal", "last"), object("last", 10))
        .await
        .unwrap();
    let now = wal_len(&db);
    assert!(
        now < 1 << 20,
        "the log was truncated once the reader left ({held} -> {now} bytes)"
    );

    // Nothing was lost on the way: every object reads back from the database file.
    let check = rusqlite::Connection::open(&db).unwrap();
    let count: i64 = check
        .query_row(
            "SELECT count(*) FROM kfp_objects WHERE namespace = 'wal'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(count, written + 2);
}

/// Compaction deletes in batches of 1,000 revisions, each its own transaction; one call still
/// reaches its target, and watches from below it get Gone while those above it replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_over_many_batches_reaches_its_target() {
    for backend in common::backends().await {
        // A ring of 10 events: resumes come from the database (the ring would serve them past
        // the compaction, as kube-apiserver's watch cache does).
        let mut config = common::config(&backend.url);
        config.feed.ring_capacity = 10;
        let store = SqlStore::open(config).await.unwrap();
        let mut revs = Vec::new();
        for i in 0..2_500 {
            let name = format!("c-{i}");
            let o = store
                .create(&Key::new("pipelines", "wal", &name), object(&name, 10))
                .await
                .unwrap();
            revs.push(o.revision);
        }
        let target = revs[2_200];
        let compacted = store.compact(target).await.unwrap();
        assert_eq!(compacted, target, "{}", backend.name);
        let mut gone = store
            .watch(&WatchRequest {
                resource: "pipelines".into(),
                from: Revision(target.0 - 1),
                ..Default::default()
            })
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(30), gone.next()).await {
            Ok(Some(WatchItem::Error(kfp_storage::StoreError::Gone { .. }))) => {}
            other => panic!("{}: below the compaction: {other:?}", backend.name),
        }
        let mut rest = store
            .watch(&WatchRequest {
                resource: "pipelines".into(),
                from: target,
                ..Default::default()
            })
            .await
            .unwrap();
        for want in &revs[2_201..] {
            match tokio::time::timeout(Duration::from_secs(30), rest.next()).await {
                Ok(Some(WatchItem::Event { revision, .. })) => {
                    assert_eq!(revision, *want, "{}", backend.name)
                }
                other => panic!("{}: above the compaction: {other:?}", backend.name),
            }
        }
    }
}

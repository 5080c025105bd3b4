//! A full disk under a write storm, against the real binary on a small tmpfs: every write the
//! server acknowledged (201) is there after a restart with its resourceVersion,
//! resourceVersions never repeat, `/readyz` fails while writes fail, and writes succeed again
//! within seconds of space coming back, without a restart.
//!
//! A watcher started before the storm must have been shown only committed writes, in increasing
//! revisions, and every acknowledged one.
//!
//! Needs permission to mount a tmpfs (root with CAP_SYS_ADMIN). Without it the test says so
//! and returns, unless `KFP_TEST_REQUIRE_FAULTS=1` (scripts/test sets it), which makes that a
//! failure.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kfp_apiservice::{Pipeline, PipelineSpec};
use kfp_conformance::DevServer;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mount_tmpfs(size: &str) -> Option<Mount> {
    let dir = std::env::temp_dir().join(format!("kfp-disk-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Some(Mount(dir))
    } else {
        let _ = std::fs::remove_dir_all(&dir);
        None
    }
}

mod common;
use common::client;

fn pipeline(name: &str) -> Pipeline {
    let mut p = Pipeline {
        spec: PipelineSpec {
            description: Some("x".repeat(20_000)),
            ..Default::default()
        },
        ..Default::default()
    }
    .with_type_meta();
    p.metadata.name = Some(name.to_owned());
    p
}

/// `/readyz`'s status, by one plain HTTPS GET: not through kube-rs, whose client retries a 503
/// with backoff for minutes (that retry was the "client-side stall" this test once had).
async fn readyz(s: &DevServer) -> u16 {
    let ca = std::fs::read_to_string(s.dir.join("pki/ca.crt")).expect("CA");
    let addr = s.addr.clone();
    tokio::task::spawn_blocking(move || kfp_conformance::https_get(&addr, &ca, "/readyz", &[]))
        .await
        .expect("readyz")
        .map_or(0, |(code, _)| code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_loses_no_acknowledged_write_and_writes_recover() {
    let Some(mount) = mount_tmpfs("64m") else {
        assert!(
            std::env::var("KFP_TEST_REQUIRE_FAULTS").as_deref() != Ok("1"),
            "cannot mount a tmpfs but KFP_TEST_REQUIRE_FAULTS=1"
        );
        eprintln!("note: cannot mount a tmpfs here (needs root); the disk-full test did not run");
        return;
    };
    let data = mount.0.join("data");
    let addr = format!("127.0.0.1:{}", kfp_conformance::free_port());
    let mut server = DevServer::start_with(data.clone(), false, &addr, &[]);
    let c = client(&server).await;
    let api: Api<Pipeline> = Api::namespaced(c.clone(), "full");
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    // A watcher from the start: every event it is shown must be a committed write.
    let seen: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let watch_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watches: Arc<Mutex<Vec<String>>> = Arc::default();
    // From the list's revision, not "0": a watch from "0" starts with the existing objects as
    // ADDED in name order (as kube-apiserver's), whose revisions need not increase, and the
    // writers below may already have created some when the watch request arrives. A store that
    // has never been written lists at revision "0" (docs/kubernetes-api.md), so one object goes
    // in first.
    api.create(&PostParams::default(), &pipeline("before-the-watch"))
        .await
        .expect("first create");
    let start = api
        .list(&ListParams::default().limit(1))
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("list revision");
    assert_ne!(start, "0", "a store with an object lists above revision 0");
    let watcher = {
        let (api, seen, watch_stop, watches) = (
            api.clone(),
            seen.clone(),
            watch_stop.clone(),
            watches.clone(),
        );
        tokio::spawn(async move {
            let mut from = start;
            while !watch_stop.load(std::sync::atomic::Ordering::Relaxed) {
                let from_was = from.clone();
                let Ok(stream) = api.watch(&WatchParams::default().timeout(5), &from).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let mut stream = stream.boxed();
                let mut events = 0usize;
                let ended = loop {
                    let event = match stream.next().await {
                        Some(Ok(event)) => event,
                        Some(Err(e)) => break format!("error {e}"),
                        None => break "end".to_owned(),
                    };
                    events += 1;
                    match event {
                        WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                            let rv = p.metadata.resource_version.clone().unwrap_or_default();
                            let name = p.metadata.name.clone().unwrap_or_default();
                            seen.lock().unwrap().push((name, rv.parse().expect("rv")));
                            from = rv;
                        }
                        WatchEvent::Bookmark(b) => from = b.metadata.resource_version,
                        WatchEvent::Deleted(_) => panic!("nothing is deleted here"),
                        WatchEvent::Error(e) => panic!("watch error: {e:?}"),
                    }
                };
                // For the failure messages below: where each watch started and how it ended.
                watches
                    .lock()
                    .unwrap()
                    .push(format!("from {from_was}: {events} items, {ended}"));
            }
        })
    };
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (api, acked, failed, stop) = (api.clone(), acked.clone(), failed.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("p-{w}-{i}");
                i += 1;
                // Bounded: a request that gets no answer counts as failed (never as acked).
                let created = tokio::time::timeout(
                    Duration::from_secs(10),
                    api.create(&PostParams::default(), &pipeline(&name)),
                )
                .await;
                match created {
                    Ok(Ok(p)) => {
                        let rv = p.metadata.resource_version.and_then(|r| r.parse().ok());
                        acked.lock().unwrap().insert(name, rv.expect("rv"));
                    }
                    Ok(Err(_)) | Err(_) => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    // Let the storm run, then fill what is left of the filesystem.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 50 {
        assert!(Instant::now() < deadline, "no writes went through");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    eprintln!("storm running; filling the disk");
    let filler = mount.0.join("filler");
    {
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 1 << 16];
        while f.write_all(&chunk).and_then(|_| f.flush()).is_ok() {}
    }
    let before = failed.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while failed.load(std::sync::atomic::Ordering::Relaxed) < before + 20 {
        assert!(
            Instant::now() < deadline,
            "writes kept succeeding on a full disk"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{:?}: writes failing", t0.elapsed());
    assert_eq!(
        readyz(&server).await,
        503,
        "/readyz fails while writes fail"
    );
    // Space comes back: writes succeed again, without a restart.
    std::fs::remove_file(&filler).expect("free space");
    let n = acked.lock().unwrap().len();
    let freed = Instant::now();
    while acked.lock().unwrap().len() < n + 20 {
        assert!(
            freed.elapsed() < Duration::from_secs(15),
            "writes did not recover within 15 s of space coming back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "writes recovered {:?} after space came back",
        freed.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    eprintln!("{:?}: writers stopped", t0.elapsed());
    // Let the watcher catch up with the last acknowledged write, then stop it.
    let last = acked.lock().unwrap().values().copied().max().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().last().map(|(_, rv)| *rv) < Some(last) {
        assert!(
            Instant::now() < deadline,
            "the watcher never saw revision {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.await.expect("watcher");
    let timed_out = failed.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{timed_out} creates failed or got no answer in all");
    assert_eq!(server.stop(), 0);
    eprintln!("{:?}: server stopped", t0.elapsed());
    drop(server);
    // After a restart every acknowledged write is there, at its revision, each revision once.
    let server = DevServer::start_with(data, false, &addr, &[]);
    let c = client(&server).await;
    let api: Api<Pipeline> = Api::namespaced(c.clone(), "full");
    let list = api.list(&ListParams::default()).await.expect("list");
    let have: BTreeMap<String, u64> = list
        .items
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                p.metadata
                    .resource_version
                    .as_deref()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(n, rv)| have.get(*n) != Some(rv))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost or changed: {lost:?}",
        lost.len(),
        acked.len()
    );
    // What the watcher was shown was committed: each event is in the store at its revision, in
    // increasing revisions, and every acknowledged write was shown.
    let seen = seen.lock().unwrap().clone();
    for (name, rv) in &seen {
        assert_eq!(
            have.get(name),
            Some(rv),
            "watched {name}@{rv} is not what was committed"
        );
    }
    let backwards: Vec<_> = seen.windows(2).filter(|w| w[0].1 >= w[1].1).collect();
    assert!(
        backwards.is_empty(),
        "watch revisions only go forward; went back at {backwards:?} of {} events; watches: {:?}",
        seen.len(),
        watches.lock().unwrap()
    );
    let shown: std::collections::BTreeSet<&String> = seen.iter().map(|(n, _)| n).collect();
    assert!(
        acked.keys().all(|n| shown.contains(n)),
        "every acknowledged write reached the watcher"
    );
    eprintln!("{} watch events, all committed", seen.len());
    let mut revs: Vec<u64> = have.values().copied().collect();
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), have.len(), "no resourceVersion repeats");
    assert_eq!(readyz(&server).await, 200);
}

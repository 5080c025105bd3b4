//! The store conformance suite as one function over any backend: [`run`] takes a [`Harness`]
//! that makes fresh, empty stores, and runs every case against them, so the SQL dialects and any
//! later backend (the CRD store) are held to exactly the same contract. Cases that need the
//! backend's own history upkeep ([`Maintenance`]) skip that part when it has none.
//!
//! Bounded: every wait has a timeout and no case sleeps in hope; the two 20 ms sleeps make
//! history older than a 5 ms age cutoff, which a monotonic clock guarantees.
//!
//! Test code: it panics with the backend's name and the case on the first failed expectation.

#![allow(missing_docs, clippy::unwrap_used)]

pub mod host;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_stream::StreamExt;

use crate::index::{IndexColumn, Indexed, Indexer};
use crate::{
    Backend, FieldSelector, Key, LabelSelector, ListRequest, Maintenance, Preconditions, ReadAt,
    Revision, Store, StoreError, WatchItem, WatchRequest, selector::Field,
};

/// What the suite asks of a store it opens.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Events kept in the in-memory ring (`None`: the backend's default).
    pub ring_capacity: Option<usize>,
}

/// Makes stores for the suite.
#[async_trait::async_trait]
pub trait Harness: Send + Sync {
    /// The backend's name, for messages.
    fn name(&self) -> String;
    /// A store over a fresh, empty database, indexing with `indexer`.
    async fn open(&self, indexer: Arc<dyn Indexer>, options: Options) -> Backend;
    /// Whether unfiltered pages carry `remainingItemCount`. Not for the kube:// store with a
    /// namespace prefix on a real cluster: its lists across namespaces select the prefix's
    /// records by label, and kube-apiserver counts no selected list.
    fn counts_remaining(&self) -> bool {
        true
    }
}

/// The suite's own indexer: what a resource table would register for `R`.
pub struct SuiteIndexer;

impl Indexer for SuiteIndexer {
    fn index(&self, resource: &str, object: &Value) -> Indexed {
        if resource != R {
            return Indexed::default();
        }
        let at = |p: &str| {
            object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Indexed {
            title: at("/spec/displayName"),
            parent_name: at("/spec/pipelineName"),
            parent_uid: at("/metadata/ownerReferences/0/uid"),
            alias: at("/spec/versionName"),
            detail: at("/spec/description"),
            terms: object
                .pointer("/spec/tags")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

type CaseFn = for<'a> fn(&'a dyn Harness) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |h| Box::pin($name(h)))),*]
    };
}

/// Every case, by name.
pub const CASES: &[(&str, CaseFn)] = cases![
    crud_with_revisions_and_preconditions,
    lists_filter_by_labels_fields_and_namespace_in_sql,
    pages_carry_one_revision_and_remaining_count,
    paginated_lists_are_a_consistent_snapshot,
    watch_replays_then_follows_in_order_with_selector_transitions,
    watch_from_beyond_the_ring_replays_from_the_database_and_compacted_is_gone,
    watches_filter_by_indexed_columns,
    a_filtered_watch_bookmarks_at_the_revision_it_has_passed,
    a_database_that_is_gone_is_unavailable_not_a_panic,
    sorted_filtered_queries_page_by_keyset_with_totals,
    queries_filter_on_alias_detail_and_terms,
    create_all_is_all_or_nothing_in_revision_order,
    age_based_compaction_target,
    compaction_keeps_the_horizon_of_revisions_and_age,
    dangling_label_values_name_the_owners_that_are_gone,
];

/// Runs every case against `harness`, each on a fresh store; panics on the first failure.
pub async fn run(harness: &dyn Harness) {
    for (name, case) in CASES {
        eprintln!("store suite [{}]: {name}", harness.name());
        case(harness).await;
    }
}

struct Case {
    name: String,
    store: Arc<dyn Store>,
    maintenance: Option<Arc<dyn Maintenance>>,
}

impl Case {
    async fn open(h: &dyn Harness, options: Options) -> Case {
        let b = h.open(Arc::new(SuiteIndexer), options).await;
        Case {
            name: h.name(),
            store: b.store,
            maintenance: b.maintenance,
        }
    }

    /// Compacts history through `rev` when the backend keeps its own; false when it has none.
    async fn compact(&self, rev: Revision) -> bool {
        match &self.maintenance {
            Some(m) => {
                m.compact(rev).await.unwrap();
                true
            }
            None => false,
        }
    }
}

const R: &str = "pipelineversions";

fn obj(ns: &str, name: &str, labels: Value, n: u64) -> Value {
    json!({
        "apiVersion": "pipelines.kubeflow.org/v2beta1",
        "kind": "PipelineVersion",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"),
                     "labels": labels, "creationTimestamp": "2026-01-01T00:00:00Z",
                     "ownerReferences": [{"uid": format!("owner-{}", n % 3)}]},
        "spec": {"pipelineName": format!("p{}", n % 3), "displayName": format!("v{n}")}
    })
}

fn key(ns: &str, name: &str) -> Key {
    Key::new(R, ns, name)
}

fn names(items: &[crate::Object]) -> Vec<String> {
    items
        .iter()
        .map(|o| format!("{}/{}", o.key.namespace, o.key.name))
        .collect()
}

async fn next_event(w: &mut crate::WatchStream) -> WatchItem {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event within 10 s")
        .expect("watch stream open")
}

async fn crud_with_revisions_and_preconditions(h: &dyn Harness) {
    {
        let b = Case::open(h, Options::default()).await;
        let s = b.store.clone();
        let r0 = s.current_revision().await.unwrap();
        let a = s
            .create(&key("ns", "a"), obj("ns", "a", json!({}), 1))
            .await
            .unwrap();
        assert!(a.revision > r0, "{}", b.name);
        let got = s.get(&key("ns", "a")).await.unwrap();
        assert_eq!(got, a, "{}", b.name);
        let v = got.json().unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], a.revision.to_string());
        assert_eq!(
            s.get_by_uid(R, "uid-ns-a").await.unwrap().key,
            key("ns", "a")
        );

        let dup = s
            .create(&key("ns", "a"), obj("ns", "a", json!({}), 1))
            .await;
        assert!(
            matches!(dup, Err(StoreError::AlreadyExists(_))),
            "{}: {dup:?}",
            b.name
        );

        let mut changed = v.clone();
        changed["spec"]["displayName"] = json!("changed");
        let stale = Preconditions {
            resource_version: Some(Revision(a.revision.0 - 1)),
            uid: None,
        };
        let conflict = s.update(&key("ns", "a"), changed.clone(), &stale).await;
        assert!(
            matches!(conflict, Err(StoreError::Conflict { .. })),
            "{}",
            b.name
        );
        let fresh = Preconditions {
            resource_version: Some(a.revision),
            uid: None,
        };
        let u = s.update(&key("ns", "a"), changed, &fresh).await.unwrap();
        assert!(u.revision > a.revision);
        assert_eq!(
            s.get(&key("ns", "a")).await.unwrap().json().unwrap()["spec"]["displayName"],
            "changed"
        );

        let wrong_uid = Preconditions {
            uid: Some("nope".into()),
            resource_version: None,
        };
        assert!(matches!(
            s.delete(&key("ns", "a"), &wrong_uid).await,
            Err(StoreError::Conflict { .. })
        ));
        let d = s
            .delete(&key("ns", "a"), &Preconditions::default())
            .await
            .unwrap();
        assert!(d.revision > u.revision);
        assert_eq!(
            d.json().unwrap()["metadata"]["resourceVersion"],
            d.revision.to_string()
        );
        assert!(matches!(
            s.get(&key("ns", "a")).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.delete(&key("ns", "a"), &Preconditions::default()).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.update(
                &key("ns", "a"),
                obj("ns", "a", json!({}), 1),
                &Preconditions::default()
            )
            .await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(s.current_revision().await.unwrap(), d.revision);
        s.ping().await.unwrap();
    }
}

async fn lists_filter_by_labels_fields_and_namespace_in_sql(h: &dyn Harness) {
    {
        let b = Case::open(h, Options::default()).await;
        let s = b.store.clone();
        for i in 0..30u64 {
            let ns = if i % 2 == 0 { "even" } else { "odd" };
            let labels = json!({"team": format!("t{}", i % 5), "n": i.to_string()});
            s.create(
                &key(ns, &format!("o{i:02}")),
                obj(ns, &format!("o{i:02}"), labels, i),
            )
            .await
            .unwrap();
        }
        let list = |labels: &str, fields: &str, ns: Option<&str>| ListRequest {
            resource: R.into(),
            namespace: ns.map(str::to_owned),
            labels: LabelSelector::parse(labels).unwrap(),
            fields: FieldSelector::parse(
                fields,
                &[
                    ("metadata.name", Field::Name),
                    ("metadata.namespace", Field::Namespace),
                    ("spec.pipelineName", Field::Indexed(IndexColumn::ParentName)),
                ],
            )
            .unwrap(),
            ..Default::default()
        };
        let count = |req: ListRequest| {
            let s = s.clone();
            async move { s.list(&req).await.unwrap().items.len() }
        };
        assert_eq!(count(list("", "", None)).await, 30, "{}", b.name);
        assert_eq!(count(list("", "", Some("even"))).await, 15);
        assert_eq!(count(list("team=t3", "", None)).await, 6);
        assert_eq!(count(list("team!=t3", "", None)).await, 24);
        assert_eq!(count(list("team in (t1,t2)", "", None)).await, 12);
        assert_eq!(count(list("team notin (t1,t2)", "", None)).await, 18);
        assert_eq!(count(list("team", "", None)).await, 30);
        assert_eq!(count(list("!team", "", None)).await, 0);
        assert_eq!(count(list("team=t3,n=3", "", None)).await, 1);
        assert_eq!(count(list("", "metadata.name=o07", None)).await, 1);
        assert_eq!(count(list("", "metadata.namespace!=even", None)).await, 15);
        assert_eq!(count(list("", "spec.pipelineName=p0", None)).await, 10);
        let all = s.list(&list("", "", None)).await.unwrap();
        let mut sorted = names(&all.items);
        sorted.sort();
        assert_eq!(
            names(&all.items),
            sorted,
            "lists are ordered by namespace, name"
        );
        assert_eq!(all.revision, s.current_revision().await.unwrap());
        // A label equality drives the page from the label index: still in key order, across
        // namespaces, with the other requirements applied.
        for selector in ["team=t3", "team in (t3),team", "n!=3,team=t3"] {
            let page = s.list(&list(selector, "", None)).await.unwrap();
            let keys: Vec<(String, String)> = page
                .items
                .iter()
                .map(|o| (o.key.namespace.clone(), o.key.name.clone()))
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted, "{}: {selector} in key order", b.name);
            let expected = if selector.starts_with("n!=3") { 5 } else { 6 };
            assert_eq!(keys.len(), expected, "{}: {selector}", b.name);
        }
        // Pages of 4 across namespaces and within one, with and without a label, follow
        // `continue` to the same items as one unpaged list.
        for (selector, ns) in [
            ("", None),
            ("", Some("odd")),
            ("team=t3", None),
            ("team=t1", Some("even")),
        ] {
            let whole = names(&s.list(&list(selector, "", ns)).await.unwrap().items);
            let mut req = ListRequest {
                limit: Some(4),
                ..list(selector, "", ns)
            };
            let mut paged = Vec::new();
            for _ in 0..20 {
                let page = s.list(&req).await.unwrap();
                paged.extend(names(&page.items));
                match page.continue_token {
                    Some(t) => req.continue_token = Some(t),
                    None => break,
                }
            }
            assert_eq!(paged, whole, "{}: {selector} in {ns:?}", b.name);
        }
    }
}

async fn pages_carry_one_revision_and_remaining_count(h: &dyn Harness) {
    {
        let b = Case::open(h, Options::default()).await;
        let s = b.store.clone();
        for i in 0..23u64 {
            s.create(
                &key("ns", &format!("o{i:02}")),
                obj("ns", &format!("o{i:02}"), json!({}), i),
            )
            .await
            .unwrap();
        }
        let mut req = ListRequest {
            resource: R.into(),
            limit: Some(7),
            ..Default::default()
        };
        let mut seen = Vec::new();
        let mut revs = Vec::new();
        let mut remaining = Vec::new();
        loop {
            let page = s.list(&req).await.unwrap();
            seen.extend(names(&page.items));
            revs.push(page.revision);
            remaining.push(page.remaining);
            match page.continue_token {
                Some(t) => req.continue_token = Some(t),
                None => break,
            }
            if revs.len() == 1 {
                // Writes after the first page change neither the pages nor their counts: the
                // list is a snapshot at its first page's revision.
                for name in ["o05x", "o30"] {
                    s.create(&key("ns", name), obj("ns", name, json!({}), 99))
                        .await
                        .unwrap();
                }
                s.delete(&key("ns", "o20"), &Preconditions::default())
                    .await
                    .unwrap();
            }
        }
        assert_eq!(seen.len(), 23, "{}", b.name);
        assert!(!seen.iter().any(|n| n == "ns/o30" || n == "ns/o05x"));
        assert!(
            seen.iter().any(|n| n == "ns/o20"),
            "deleted after the first page"
        );
        assert!(revs.iter().all(|r| *r == revs[0]));
        if h.counts_remaining() {
            assert_eq!(remaining, vec![Some(16), Some(9), Some(2), None]);
        } else {
            assert!(remaining.iter().all(Option::is_none), "{remaining:?}");
        }
        // A new list sees the writes, counted afresh.
        let fresh = s
            .list(&ListRequest {
                continue_token: None,
                ..req.clone()
            })
            .await
            .unwrap();
        assert_eq!(
            fresh.remaining,
            h.counts_remaining().then_some(24 - 7),
            "{}",
            b.name
        );
        let bad = ListRequest {
            continue_token: Some("garbage".into()),
            ..req.clone()
        };
        assert!(matches!(s.list(&bad).await, Err(StoreError::Invalid(_))));
        let future = ListRequest {
            at: ReadAt::NotOlderThan(Revision(10_000)),
            continue_token: None,
            ..req
        };
        assert!(matches!(
            s.list(&future).await,
            Err(StoreError::TooLarge { .. })
        ));
    }
}

/// Page 1 of 1,000; 200 creates/updates/deletes; the remaining pages still show the state at
/// page 1's revision; after compaction the continue token answers Gone.
async fn paginated_lists_are_a_consistent_snapshot(h: &dyn Harness) {
    {
        let b = Case::open(h, Options::default()).await;
        let s = b.store.clone();
        for i in 0..1000u64 {
            let labels = json!({"team": format!("t{}", i % 4)});
            s.create(
                &key("ns", &format!("o{i:04}")),
                obj("ns", &format!("o{i:04}"), labels, i),
            )
            .await
            .unwrap();
        }
        for selector in ["", "team=t1"] {
            let req = ListRequest {
                resource: R.into(),
                namespace: Some("ns".into()),
                labels: LabelSelector::parse(selector).unwrap(),
                limit: Some(100),
                ..Default::default()
            };
            let snapshot = s
                .list(&ListRequest {
                    limit: None,
                    ..req.clone()
                })
                .await
                .unwrap();
            let first = s.list(&req).await.unwrap();
            assert_eq!(first.revision, snapshot.revision);
            let before: BTreeMap<String, Value> = snapshot
                .items
                .iter()
                .map(|o| (o.key.name.clone(), o.json().unwrap()))
                .collect();
            // 200 writes: deletes and updates (with label changes) across the whole range, and new objects.
            let mut rng = 7u64;
            for i in 0..200u64 {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let target = format!("o{:04}", (rng >> 33) % 1000);
                match i % 3 {
                    0 => {
                        let _ = s
                            .delete(&key("ns", &target), &Preconditions::default())
                            .await;
                    }
                    1 => {
                        if let Ok(cur) = s.get(&key("ns", &target)).await {
                            let mut v = cur.json().unwrap();
                            v["metadata"]["labels"]["team"] = json!("moved");
                            s.update(&key("ns", &target), v, &Preconditions::default())
                                .await
                                .unwrap();
                        }
                    }
                    _ => {
                        let name = format!("new{i:03}-{selector}");
                        let name = name.trim_end_matches('-').replace('=', "-");
                        s.create(
                            &key("ns", &name),
                            obj("ns", &name, json!({"team": "t1"}), i),
                        )
                        .await
                        .unwrap();
                    }
                }
            }
            let mut union: BTreeMap<String, Value> = first
                .items
                .iter()
                .map(|o| (o.key.name.clone(), o.json().unwrap()))
                .collect();
            let mut token = first.continue_token.clone();
            while let Some(t) = token {
                let page = s
                    .list(&ListRequest {
                        continue_token: Some(t),
                        ..req.clone()
                    })
                    .await
                    .unwrap();
                assert_eq!(page.revision, first.revision, "{}", b.name);
                for o in &page.items {
                    assert!(
                        union
                            .insert(o.key.name.clone(), o.json().unwrap())
                            .is_none(),
                        "duplicate {}",
                        o.key.name
                    );
                }
                token = page.continue_token;
            }
            assert_eq!(
                union, before,
                "{} selector {selector:?}: pages must equal the state at page 1",
                b.name
            );
            // The same state by exact revision.
            let exact = s
                .list(&ListRequest {
                    limit: None,
                    at: ReadAt::Exact(first.revision),
                    ..req.clone()
                })
                .await
                .unwrap();
            let exact: BTreeMap<String, Value> = exact
                .items
                .iter()
                .map(|o| (o.key.name.clone(), o.json().unwrap()))
                .collect();
            assert_eq!(exact, before);
        }
        // After compaction past page 1's revision, continuing answers Gone.
        let req = ListRequest {
            resource: R.into(),
            limit: Some(10),
            ..Default::default()
        };
        let first = s.list(&req).await.unwrap();
        s.create(
            &key("ns", "after-first-page"),
            obj("ns", "after-first-page", json!({}), 1),
        )
        .await
        .unwrap();
        let now = s.current_revision().await.unwrap();
        if b.compact(now).await {
            let next = s
                .list(&ListRequest {
                    continue_token: first.continue_token,
                    ..req
                })
                .await;
            assert!(
                matches!(next, Err(StoreError::Gone { .. })),
                "{}: {next:?}",
                b.name
            );
        }
    }
}

async fn watch_replays_then_follows_in_order_with_selector_transitions(h: &dyn Harness) {
    {
        let b = Case::open(h, Options::default()).await;
        let s = b.store.clone();
        let start = s.current_revision().await.unwrap();
        let a = s
            .create(&key("ns", "a"), obj("ns", "a", json!({"team": "x"}), 1))
            .await
            .unwrap();
        let mut w = s
            .watch(&WatchRequest {
                resource: R.into(),
                namespace: Some("ns".into()),
                labels: LabelSelector::parse("team=x").unwrap(),
                from: start,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut v = a.json().unwrap();
        v["metadata"]["labels"]["team"] = json!("y");
        let m1 = s
            .update(&key("ns", "a"), v.clone(), &Preconditions::default())
            .await
            .unwrap();
        v["metadata"]["labels"]["team"] = json!("x");
        let m2 = s
            .update(&key("ns", "a"), v, &Preconditions::default())
            .await
            .unwrap();
        s.create(
            &key("other", "b"),
            obj("other", "b", json!({"team": "x"}), 2),
        )
        .await
        .unwrap();
        let d = s
            .delete(&key("ns", "a"), &Preconditions::default())
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 4 {
            if let WatchItem::Event {
                kind,
                revision,
                object,
            } = next_event(&mut w).await
            {
                let v: Value = serde_json::from_slice(&object).unwrap();
                assert_eq!(
                    v["metadata"]["resourceVersion"],
                    revision.to_string(),
                    "{}",
                    b.name
                );
                got.push((kind.as_str(), revision));
            }
        }
        assert_eq!(
            got,
            vec![
                ("ADDED", a.revision),
                ("DELETED", m1.revision),
                ("ADDED", m2.revision),
                ("DELETED", d.revision)
            ],
            "{}",
            b.name
        );
    }
}

async fn watch_from_beyond_the_ring_replays_from_the_database_and_compacted_is_gone(
    h: &dyn Harness,
) {
    {
        let b = Case::open(
            h,
            Options {
                ring_capacity: Some(5),
            },
        )
        .await;
        let s = b.store.clone();
        let start = s.current_revision().await.unwrap();
        let mut revs = Vec::new();
        for i in 0..40u64 {
            revs.push(
                s.create(
                    &key("ns", &format!("o{i:02}")),
                    obj("ns", &format!("o{i:02}"), json!({}), i),
                )
                .await
                .unwrap()
                .revision,
            );
        }
        let mut w = s
            .watch(&WatchRequest {
                resource: R.into(),
                from: start,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 40 {
            if let WatchItem::Event { revision, .. } = next_event(&mut w).await {
                got.push(revision);
            }
        }
        assert_eq!(got, revs, "{}: every event exactly once, in order", b.name);
        if b.compact(revs[20]).await {
            let mut old = s
                .watch(&WatchRequest {
                    resource: R.into(),
                    from: revs[5],
                    ..Default::default()
                })
                .await
                .unwrap();
            match next_event(&mut old).await {
                WatchItem::Error(StoreError::Gone { requested, .. }) => {
                    assert_eq!(requested, revs[5])
                }
                other => panic!("{}: expected Gone, got {other:?}", b.name),
            }
        }
    }
}

async fn a_database_that_is_gone_is_unavailable_not_a_panic(h: &dyn Harness) {
    {
        let b = Case::open(h, Options::default()).await;
        let s = b.store.clone();
        s.close().await;
        let e = s.get(&key("ns", "a")).await.unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{}: {e:?}", b.name);
        assert!(matches!(s.ping().await, Err(StoreError::Unavailable(_))));
    }
}

/// KFP-style queries: sort by a column with uid tie-breaks, filters in SQL, keyset pages and the
/// total count.
async fn sorted_filtered_queries_page_by_keyset_with_totals(h: &dyn Harness) {
    use crate::query::{Column, Op, Predicate, QueryRequest, Value as Q};
    {
        let b = Case::open(h, Options::default()).await;
        let s = b.store.clone();
        for i in 0..25u64 {
            let mut v = obj("ns", &format!("o{i:02}"), json!({}), i);
            // Five creation times, five objects each: ties exercise the uid tie-break.
            v["metadata"]["creationTimestamp"] = json!(format!("2026-01-0{}T00:00:00Z", 1 + i % 5));
            v["spec"]["displayName"] = json!(if i % 2 == 0 {
                format!("Even_{i}%")
            } else {
                format!("odd {i}")
            });
            s.create(&key("ns", &format!("o{i:02}")), v).await.unwrap();
        }
        for descending in [false, true] {
            let mut req = QueryRequest {
                resource: R.into(),
                terms: Vec::new(),
                namespace: Some("ns".into()),
                predicates: vec![],
                sort: Column::CreatedAt,
                descending,
                after: None,
                limit: 4,
            };
            let mut rows = Vec::new();
            loop {
                let page = s.query(&req).await.unwrap();
                assert_eq!(page.total, 25, "{}", b.name);
                rows.extend(page.items.iter().map(|o| {
                    let v = o.json().unwrap();
                    (
                        v["metadata"]["creationTimestamp"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                        o.uid.clone(),
                    )
                }));
                match page.next {
                    Some(c) => req.after = Some(c),
                    None => break,
                }
            }
            let mut expected = rows.clone();
            expected.sort();
            if descending {
                expected.reverse();
            }
            assert_eq!(rows.len(), 25, "{}", b.name);
            assert_eq!(rows, expected, "{} descending={descending}", b.name);
        }
        let q = |predicates: Vec<Predicate>| QueryRequest {
            resource: R.into(),
            terms: Vec::new(),
            namespace: None,
            predicates,
            sort: Column::Name,
            descending: false,
            after: None,
            limit: 100,
        };
        let total = |p| {
            let s = s.clone();
            async move { s.query(&q(p)).await.unwrap().total }
        };
        assert_eq!(
            total(vec![Predicate {
                column: Column::Indexed(IndexColumn::Title),
                op: Op::Substring("even_".into())
            }])
            .await,
            13,
            "{}: case-insensitive, _ literal",
            b.name
        );
        assert_eq!(
            total(vec![Predicate {
                column: Column::Indexed(IndexColumn::Title),
                op: Op::Substring("%".into())
            }])
            .await,
            13,
            "{}: % literal",
            b.name
        );
        assert_eq!(
            total(vec![Predicate {
                column: Column::Name,
                op: Op::In(vec![Q::Text("o01".into()), Q::Text("o02".into())])
            }])
            .await,
            2
        );
        assert_eq!(
            total(vec![Predicate {
                column: Column::CreatedAt,
                op: Op::Ge(Q::Int(1_767_484_800))
            }])
            .await,
            10,
            "{}: Jan 4 and 5",
            b.name
        );
        assert_eq!(
            total(vec![
                Predicate {
                    column: Column::Name,
                    op: Op::Ne(Q::Text("o01".into()))
                },
                Predicate {
                    column: Column::CreatedAt,
                    op: Op::Lt(Q::Int(1_767_312_000))
                }
            ])
            .await,
            5,
            "{}: Jan 1 only",
            b.name
        );
        assert_eq!(
            total(vec![Predicate {
                column: Column::Name,
                op: Op::In(vec![])
            }])
            .await,
            0
        );
        assert_eq!(
            total(vec![Predicate {
                column: Column::Name,
                op: Op::Contains("o1".into())
            }])
            .await,
            10,
            "{}: o10 to o19",
            b.name
        );
        assert_eq!(
            total(vec![Predicate {
                column: Column::Indexed(IndexColumn::Title),
                op: Op::Contains("even_".into())
            }])
            .await,
            0,
            "{}: Contains is case-sensitive (the titles say Even_)",
            b.name
        );
        assert_eq!(
            total(vec![Predicate {
                column: Column::Indexed(IndexColumn::Title),
                op: Op::Contains("Even_1".into())
            }])
            .await,
            5,
            "{}: Even_10% to Even_18%",
            b.name
        );
    }
}

async fn queries_filter_on_alias_detail_and_terms(h: &dyn Harness) {
    use crate::query::{Column, Op, Predicate, QueryRequest};
    {
        let b = Case::open(h, Options::default()).await;
        let s = b.store.clone();
        for i in 0..6u64 {
            let mut v = obj("ns", &format!("t{i}"), json!({}), i);
            v["spec"]["versionName"] = json!(format!("alias-{}", 5 - i));
            v["spec"]["description"] =
                json!(format!("about {}", if i < 2 { "cats" } else { "dogs" }));
            v["spec"]["tags"] = json!({"team": if i % 2 == 0 { "ml" } else { "data" }, "tier": format!("t{}", i % 3)});
            s.create(&key("ns", &format!("t{i}")), v).await.unwrap();
        }
        let q = |predicates: Vec<Predicate>, terms: Vec<(&str, &str)>, sort| QueryRequest {
            resource: R.into(),
            namespace: Some("ns".into()),
            predicates,
            terms: terms
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            sort,
            descending: false,
            after: None,
            limit: 100,
        };
        let page = s
            .query(&q(vec![], vec![], Column::Indexed(IndexColumn::Alias)))
            .await
            .unwrap();
        assert_eq!(
            names(&page.items),
            ["ns/t5", "ns/t4", "ns/t3", "ns/t2", "ns/t1", "ns/t0"],
            "{}: sorted by the alias column",
            b.name
        );
        let page = s
            .query(&q(
                vec![Predicate {
                    column: Column::Indexed(IndexColumn::Detail),
                    op: Op::Substring("CATS".into()),
                }],
                vec![],
                Column::Name,
            ))
            .await
            .unwrap();
        assert_eq!(names(&page.items), ["ns/t0", "ns/t1"], "{}", b.name);
        let page = s
            .query(&q(vec![], vec![("team", "ml")], Column::Name))
            .await
            .unwrap();
        assert_eq!(
            (page.total, names(&page.items)),
            (3, vec!["ns/t0".to_owned(), "ns/t2".into(), "ns/t4".into()]),
            "{}: one term",
            b.name
        );
        let page = s
            .query(&q(
                vec![],
                vec![("team", "ml"), ("tier", "t1")],
                Column::Name,
            ))
            .await
            .unwrap();
        assert_eq!(
            names(&page.items),
            ["ns/t4"],
            "{}: terms are AND-ed",
            b.name
        );
        // Terms follow updates and deletes.
        let t4 = s.get(&key("ns", "t4")).await.unwrap();
        let mut v = t4.json().unwrap();
        v["spec"]["tags"] = json!({"team": "data"});
        s.update(&key("ns", "t4"), v, &Preconditions::default())
            .await
            .unwrap();
        s.delete(&key("ns", "t0"), &Preconditions::default())
            .await
            .unwrap();
        let page = s
            .query(&q(vec![], vec![("team", "ml")], Column::Name))
            .await
            .unwrap();
        assert_eq!(names(&page.items), ["ns/t2"], "{}", b.name);
        let page = s
            .query(&q(vec![], vec![("tier", "t1")], Column::Name))
            .await
            .unwrap();
        assert_eq!(
            names(&page.items),
            ["ns/t1"],
            "{}: replaced, not merged",
            b.name
        );
    }
}

async fn create_all_is_all_or_nothing_in_revision_order(h: &dyn Harness) {
    {
        let b = Case::open(h, Options::default()).await;
        let s = b.store.clone();
        s.create(&key("ns", "taken"), obj("ns", "taken", json!({}), 0))
            .await
            .unwrap();
        let before = s.current_revision().await.unwrap();
        let mut w = s
            .watch(&WatchRequest {
                resource: R.into(),
                from: before,
                ..Default::default()
            })
            .await
            .unwrap();
        let refused = s
            .create_all(vec![
                (key("ns", "first"), obj("ns", "first", json!({}), 1)),
                (key("ns", "taken"), obj("ns", "taken2", json!({}), 2)),
            ])
            .await;
        assert!(
            matches!(refused, Err(StoreError::AlreadyExists(_))),
            "{}: {refused:?}",
            b.name
        );
        assert!(
            matches!(
                s.get(&key("ns", "first")).await,
                Err(StoreError::NotFound(_))
            ),
            "{}: nothing of a failed batch stays",
            b.name
        );
        assert_eq!(s.current_revision().await.unwrap(), before, "{}", b.name);
        let made = s
            .create_all(vec![
                (key("ns", "a"), obj("ns", "a", json!({}), 1)),
                (key("ns", "b"), obj("ns", "b", json!({}), 2)),
            ])
            .await
            .unwrap();
        assert_eq!(
            made.iter().map(|o| o.revision.0).collect::<Vec<_>>(),
            [before.0 + 1, before.0 + 2],
            "{}: consecutive revisions in order",
            b.name
        );
        for (want, rev) in [("a", before.0 + 1), ("b", before.0 + 2)] {
            match next_event(&mut w).await {
                WatchItem::Event {
                    revision, object, ..
                } => {
                    let v: Value = serde_json::from_slice(&object).unwrap();
                    assert_eq!(
                        (v["metadata"]["name"].as_str(), revision.0),
                        (Some(want), rev),
                        "{}: the batch is watched in order, nothing of the failed one",
                        b.name
                    );
                }
                other => panic!("{}: {other:?}", b.name),
            }
        }
    }
}

async fn age_based_compaction_target(h: &dyn Harness) {
    {
        let b = Case::open(h, Options::default()).await;
        let s = b.store.clone();
        let Some(m) = b.maintenance.clone() else {
            return;
        };
        assert_eq!(
            m.revision_older_than(Duration::from_secs(3600))
                .await
                .unwrap(),
            None,
            "{}",
            b.name
        );
        let o = s
            .create(&key("ns", "a"), obj("ns", "a", json!({}), 1))
            .await
            .unwrap();
        assert_eq!(
            m.revision_older_than(Duration::from_secs(3600))
                .await
                .unwrap(),
            None,
            "{}: written just now",
            b.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            m.revision_older_than(Duration::from_millis(5))
                .await
                .unwrap(),
            Some(o.revision),
            "{}",
            b.name
        );
        assert_eq!(m.compact(o.revision).await.unwrap(), o.revision);
        // History before the compacted revision is gone from the database.
        let old = ListRequest {
            resource: R.into(),
            at: ReadAt::Exact(Revision(o.revision.0 - 1)),
            ..Default::default()
        };
        let got = s.list(&old).await;
        assert!(
            matches!(got, Err(StoreError::Gone { .. })),
            "{}: {:?}",
            b.name,
            got.map(|p| p.revision)
        );
    }
}

async fn compaction_keeps_the_horizon_of_revisions_and_age(h: &dyn Harness) {
    use crate::compactor::{CompactionPolicy, compact_once};
    {
        let b = Case::open(h, Options::default()).await;
        let s = b.store.clone();
        let Some(m) = b.maintenance.clone() else {
            return;
        };
        let mut revs = Vec::new();
        for i in 0..20u64 {
            revs.push(
                s.create(
                    &key("ns", &format!("o{i}")),
                    obj("ns", &format!("o{i}"), json!({}), i),
                )
                .await
                .unwrap()
                .revision,
            );
        }
        let young = CompactionPolicy {
            keep_revisions: 5,
            keep_age: Duration::from_secs(3600),
            ..Default::default()
        };
        assert_eq!(
            compact_once(s.as_ref(), m.as_ref(), &young).await.unwrap(),
            None,
            "{}: everything is younger than an hour",
            b.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let by_count = CompactionPolicy {
            keep_revisions: 5,
            keep_age: Duration::from_millis(1),
            ..Default::default()
        };
        assert_eq!(
            compact_once(s.as_ref(), m.as_ref(), &by_count)
                .await
                .unwrap(),
            Some(revs[14]),
            "{}: the last 5 revisions stay",
            b.name
        );
        let pinned = ListRequest {
            resource: R.into(),
            at: ReadAt::Exact(revs[14]),
            ..Default::default()
        };
        assert_eq!(s.list(&pinned).await.unwrap().items.len(), 15, "{}", b.name);
        let too_old = ListRequest {
            resource: R.into(),
            at: ReadAt::Exact(revs[13]),
            ..Default::default()
        };
        assert!(matches!(
            s.list(&too_old).await,
            Err(StoreError::Gone { .. })
        ));
    }
}

/// A watch with a field selector on an indexed column sees only the objects it names, and an
/// update that moves an object out of it as DELETED.
async fn watches_filter_by_indexed_columns(h: &dyn Harness) {
    let b = Case::open(h, Options::default()).await;
    let s = b.store.clone();
    let start = s.current_revision().await.unwrap();
    let mut w = s
        .watch(&WatchRequest {
            resource: R.into(),
            fields: FieldSelector::parse(
                "spec.pipelineName=p1",
                &[("spec.pipelineName", Field::Indexed(IndexColumn::ParentName))],
            )
            .unwrap(),
            from: start,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut revs = Vec::new();
    for i in 0..6u64 {
        let o = s
            .create(
                &key("ns", &format!("o{i}")),
                obj("ns", &format!("o{i}"), json!({}), i),
            )
            .await
            .unwrap();
        revs.push(o.revision);
    }
    let mut moved = s.get(&key("ns", "o1")).await.unwrap().json().unwrap();
    moved["spec"]["pipelineName"] = json!("elsewhere");
    let m = s
        .update(&key("ns", "o1"), moved, &Preconditions::default())
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        if let WatchItem::Event { kind, revision, .. } = next_event(&mut w).await {
            got.push((kind.as_str(), revision));
        }
    }
    assert_eq!(
        got,
        vec![
            ("ADDED", revs[1]),
            ("ADDED", revs[4]),
            ("DELETED", m.revision)
        ],
        "{}",
        b.name
    );
    let by_parent = crate::query::QueryRequest {
        resource: R.into(),
        terms: Vec::new(),
        namespace: None,
        predicates: vec![crate::query::Predicate {
            column: crate::query::Column::Indexed(IndexColumn::ParentUid),
            op: crate::query::Op::Eq(crate::query::Value::Text("owner-2".into())),
        }],
        sort: crate::query::Column::Name,
        descending: false,
        after: None,
        limit: 10,
    };
    let page = s.query(&by_parent).await.unwrap();
    assert_eq!(names(&page.items), vec!["ns/o2", "ns/o5"], "{}", b.name);
}

/// A selective watch's bookmark carries the newest revision the watch has passed, even when
/// nothing it selects changed (what lets a filtered informer move forward).
async fn a_filtered_watch_bookmarks_at_the_revision_it_has_passed(h: &dyn Harness) {
    let b = Case::open(h, Options::default()).await;
    let s = b.store.clone();
    let picked = s
        .create(
            &key("ns", "picked"),
            obj("ns", "picked", json!({"bm": "yes"}), 1),
        )
        .await
        .unwrap();
    let other = s
        .create(
            &key("ns", "other"),
            obj("ns", "other", json!({"bm": "no"}), 2),
        )
        .await
        .unwrap();
    let mut w = s
        .watch(&WatchRequest {
            resource: R.into(),
            labels: LabelSelector::parse("bm=yes").unwrap(),
            from: picked.revision,
            bookmarks: true,
            bookmark_after: Some(Duration::from_millis(50)),
            ..Default::default()
        })
        .await
        .unwrap();
    match next_event(&mut w).await {
        WatchItem::Bookmark(rev) => assert_eq!(rev, other.revision, "{}", b.name),
        item => panic!("{}: expected a bookmark, got {item:?}", b.name),
    }
}

/// The orphan collector's question: which owner uids, named in a label of the dependents, match
/// no owner. Distinct, bytewise ascending, paged by `after`; any namespace; the empty value too.
/// (Owners and dependents are both of the suite's one resource: the store knows no kinds.)
async fn dangling_label_values_name_the_owners_that_are_gone(h: &dyn Harness) {
    let b = Case::open(h, Options::default()).await;
    let s = b.store.clone();
    let mut uid = BTreeMap::new();
    for (n, (ns, name)) in [
        ("a", "live"),
        ("b", "live2"),
        ("a", "gone1"),
        ("b", "gone2"),
    ]
    .into_iter()
    .enumerate()
    {
        let o = s
            .create(&key(ns, name), obj(ns, name, json!({}), n as u64))
            .await
            .unwrap();
        uid.insert(name, o.uid);
    }
    for (ns, name) in [("a", "gone1"), ("b", "gone2")] {
        s.delete(&key(ns, name), &Preconditions::default())
            .await
            .unwrap();
    }
    for (n, (ns, name, owner)) in [
        ("a", "v1", Some("live")),
        ("a", "v2", Some("gone1")),
        ("a", "v3", Some("gone1")),
        ("b", "v4", Some("gone2")),
        ("b", "v5", Some("live2")),
        ("a", "v6", None),
        ("c", "v7", Some("")),
    ]
    .into_iter()
    .enumerate()
    {
        let labels = match owner {
            Some("") => json!({"owner": ""}),
            Some(o) => json!({"owner": uid[o]}),
            None => json!({"team": "t"}),
        };
        s.create(&key(ns, name), obj(ns, name, labels, n as u64))
            .await
            .unwrap();
    }
    let ask = |after: Option<String>, limit: usize| {
        let s = s.clone();
        async move {
            s.dangling_label_values(R, "owner", R, after.as_deref(), limit)
                .await
                .unwrap()
        }
    };
    let mut gone = [uid["gone1"].clone(), uid["gone2"].clone()];
    gone.sort();
    let mut all = vec![String::new()];
    all.extend(gone.iter().cloned());
    assert_eq!(ask(None, 10).await, all, "{}", b.name);
    assert_eq!(ask(None, 1).await, vec![String::new()], "{}", b.name);
    assert_eq!(ask(Some(String::new()), 1).await, gone[..1], "{}", b.name);
    assert_eq!(ask(Some(gone[0].clone()), 5).await, gone[1..], "{}", b.name);
    assert!(ask(Some(gone[1].clone()), 5).await.is_empty(), "{}", b.name);
    // A label no object has: nothing is dangling.
    assert!(
        s.dangling_label_values(R, "absent", R, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "{}",
        b.name
    );
    // Once an owner goes, its uid is dangling.
    s.delete(&key("a", "live"), &Preconditions::default())
        .await
        .unwrap();
    let mut now = all.clone();
    now.push(uid["live"].clone());
    now.sort();
    assert_eq!(ask(None, 10).await, now, "{}", b.name);
}

//! `kfp-apiserver migrate`: moves pipelines and versions from KFP's own storage into a store of
//! ours keeping their ids (`metadata.uid` = the KFP UUID) and creation times, so runs,
//! experiments and dashboard links that name them keep working.
//!
//! A source ([`kfp_db`]: KFP's MySQL tables; [`kube`]: KFP 2.17's custom resources) streams
//! [`Candidate`]s, pipelines first, into a [`Migrator`], and reports the rows it cannot take
//! ([`Skip`]). The migrator validates each with the server's own rules, then writes it in one
//! store transaction through [`Registry::create_preserving`]: an object is there whole or
//! not at all. It keeps no bodies, so memory is bounded by a page of the source. An object already there with the same uid is left alone, so a second run writes
//! nothing and an interrupted run continues where it stopped. Nothing here reads a request.

pub mod kfp_db;
pub mod kube;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use k8s_openapi::jiff::Timestamp;
use kfp_apiservice::decode::FieldValidation;
use kfp_apiservice::resource::{ParentState, Resource};
use kfp_apiservice::strategy::CreateContext;
use kfp_apiservice::{Pipeline, PipelineVersion, names};
use kfp_storage::{Key, Store, StoreError};
use serde_json::Value;

use crate::registry::{Registry, RegistryError, WriteOptions};

/// The annotation that keeps a name that had to change to be a Kubernetes name.
pub const ORIGINAL_NAME_ANNOTATION: &str = "pipelines.kubeflow.org/original-name";
/// The field manager of migrated objects.
pub const MANAGER: &str = "kfp-apiserver-migrate";

/// One object to migrate: its body (without uid or timestamps), the identity to keep, and
/// where it came from (for the report).
#[derive(Clone, Debug)]
pub struct Candidate {
    /// `Pipeline` or `PipelineVersion`.
    pub kind: Kind,
    /// The target namespace.
    pub namespace: String,
    /// The object's name in the target.
    pub name: String,
    /// The uid to keep.
    pub uid: String,
    /// The creation time to keep.
    pub created: Timestamp,
    /// The body, as a client would send it.
    pub body: Value,
    /// For a version: its pipeline's uid in the source.
    pub parent_uid: Option<String>,
    /// The source's own description of the row (`pipeline "My Pipeline" (uuid)`).
    pub source: String,
    /// The name was changed to be a Kubernetes name: the original.
    pub renamed_from: Option<String>,
    /// The source's `managedFields`, kept as they were (a Kubernetes source); `None` records
    /// the migration as an Update by [`MANAGER`].
    pub managed_fields: Option<Value>,
}

/// A candidate as the report keeps it: everything but its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `Pipeline` or `PipelineVersion`.
    pub kind: Kind,
    /// The target namespace.
    pub namespace: String,
    /// The object's name in the target.
    pub name: String,
    /// The uid kept.
    pub uid: String,
    /// The source's description of the row.
    pub source: String,
    /// The original name, when it was changed.
    pub renamed_from: Option<String>,
}

impl Entry {
    fn of(c: Candidate) -> Entry {
        Entry {
            kind: c.kind,
            namespace: c.namespace,
            name: c.name,
            uid: c.uid,
            source: c.source,
            renamed_from: c.renamed_from,
        }
    }
}

/// The two kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A Pipeline.
    Pipeline,
    /// A PipelineVersion.
    Version,
}

impl Kind {
    fn resource(self) -> &'static Resource {
        match self {
            Kind::Pipeline => Resource::by_plural(Pipeline::PLURAL),
            Kind::Version => Resource::by_plural(PipelineVersion::PLURAL),
        }
        .expect("both kinds are in the resource table")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Pipeline => "Pipeline",
            Kind::Version => "PipelineVersion",
        })
    }
}

/// A source row that is not migrated, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    /// The source's description of the row.
    pub source: String,
    /// Why.
    pub reason: String,
}

/// Namespace rules of a migration.
#[derive(Clone, Debug)]
pub struct Namespaces {
    /// Where a pipeline without a namespace (KFP's shared pipelines) goes.
    pub default: String,
    /// Source namespace -> target namespace.
    pub map: BTreeMap<String, String>,
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            default: "kubeflow".into(),
            map: BTreeMap::new(),
        }
    }
}

impl Namespaces {
    /// The target namespace of a source namespace.
    pub fn target(&self, source: &str) -> String {
        let ns = if source.is_empty() {
            self.default.as_str()
        } else {
            source
        };
        self.map.get(ns).cloned().unwrap_or_else(|| ns.to_owned())
    }
}

/// What happened to each candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Written now (or, in a dry run, would be).
    Created,
    /// Already in the target with the same uid: left alone.
    AlreadyThere,
    /// Not written: the target has something else there, or it is invalid, or its pipeline was
    /// not migrated.
    NotMigrated(String),
}

/// The report of a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Each candidate with its outcome, in the order handled.
    pub objects: Vec<(Entry, Outcome)>,
    /// Source rows not taken.
    pub skipped: Vec<Skip>,
    /// A dry run: nothing was written and the target was not read.
    pub dry_run: bool,
    /// The run stopped after `--max-writes` writes; run again to continue.
    pub stopped_early: bool,
}

impl Report {
    fn count(&self, kind: Kind, pred: impl Fn(&Outcome) -> bool) -> usize {
        self.objects
            .iter()
            .filter(|(c, o)| c.kind == kind && pred(o))
            .count()
    }

    /// Objects written by this run.
    pub fn written(&self) -> usize {
        if self.dry_run {
            0
        } else {
            self.objects
                .iter()
                .filter(|(_, o)| *o == Outcome::Created)
                .count()
        }
    }

    /// Candidates that could not be migrated (conflicts, invalid objects).
    pub fn failed(&self) -> usize {
        self.objects
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::NotMigrated(_)))
            .count()
    }

    /// The report as lines a person reads: each object ([`Report::object_lines`]), then
    /// [`Report::tail_lines`].
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .objects
            .iter()
            .flat_map(|(c, o)| Self::object_lines(c, o, self.dry_run))
            .collect();
        out.extend(self.tail_lines());
        out
    }

    /// What happened to one object, and its rename.
    pub fn object_lines(c: &Entry, o: &Outcome, dry_run: bool) -> Vec<String> {
        let created = if dry_run { "would create" } else { "created" };
        let target = format!("{} {}/{}", c.kind, c.namespace, c.name);
        let mut out = vec![match o {
            Outcome::Created => format!("{created} {target} (uid {})", c.uid),
            Outcome::AlreadyThere => format!("unchanged {target} (uid {})", c.uid),
            Outcome::NotMigrated(why) => format!("NOT MIGRATED {}: {why}", c.source),
        }];
        if let Some(original) = &c.renamed_from {
            out.push(format!(
                "renamed {}: {original:?} -> {:?} (kept in spec.displayName and annotation {ORIGINAL_NAME_ANNOTATION})",
                c.source, c.name
            ));
        }
        out
    }

    /// The source rows skipped and the summary.
    pub fn tail_lines(&self) -> Vec<String> {
        let created = if self.dry_run {
            "would create"
        } else {
            "created"
        };
        let mut out: Vec<String> = self
            .skipped
            .iter()
            .map(|s| format!("skipped {}: {}", s.source, s.reason))
            .collect();
        let sum = |kind| {
            format!(
                "{} {created}, {} unchanged, {} not migrated",
                self.count(kind, |o| *o == Outcome::Created),
                self.count(kind, |o| *o == Outcome::AlreadyThere),
                self.count(kind, |o| matches!(o, Outcome::NotMigrated(_))),
            )
        };
        out.push(format!(
            "summary: pipelines {}; versions {}; {} source rows skipped; {} renamed{}{}",
            sum(Kind::Pipeline),
            sum(Kind::Version),
            self.skipped.len(),
            self.objects
                .iter()
                .filter(|(c, _)| c.renamed_from.is_some())
                .count(),
            if self.dry_run {
                "; dry run: nothing written"
            } else {
                ""
            },
            if self.stopped_early {
                "; stopped at --max-writes: run again to continue"
            } else {
                ""
            },
        ));
        out
    }
}

/// A name as a Kubernetes object name: `original` when it already is one (and fits `max`),
/// else lower-cased, every other character replaced by `-`, trimmed to alphanumerics at both
/// ends, shortened, and made unique with the first 8 alphanumerics of `uid`. Deterministic, so a
/// second run maps a row to the same name.
pub fn kubernetes_name(original: &str, uid: &str, max: usize) -> (String, bool) {
    if names::dns1123_subdomain(original).is_empty() && original.len() <= max {
        return (original.to_owned(), false);
    }
    let mut s = String::with_capacity(original.len());
    for c in original.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' {
            c
        } else {
            '-'
        };
        if c == '-' && s.ends_with('-') {
            continue;
        }
        s.push(c);
    }
    let suffix: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .flat_map(char::to_lowercase)
        .take(8)
        .collect();
    let room = max.saturating_sub(suffix.len() + 1);
    s.truncate(room);
    let base = s.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let name = match (base.is_empty(), suffix.is_empty()) {
        (true, true) => "migrated".to_owned(),
        (true, false) => format!("p-{suffix}"),
        (false, true) => base.to_owned(),
        (false, false) => format!("{base}-{suffix}"),
    };
    (name, true)
}

/// The longest object name (a DNS-1123 subdomain).
pub const MAX_NAME: usize = 253;

/// Takes candidates one at a time: validates each with the server's rules (a version against
/// its pipeline as it will be stored), then writes it unless this is a dry run. It holds only
/// the prepared pipelines (no specs) and the report (no bodies), so a source can stream its
/// versions and memory stays bounded by the largest single object.
pub struct Migrator {
    target: Option<(std::sync::Arc<dyn Store>, Registry)>,
    opts: WriteOptions,
    max_writes: Option<usize>,
    /// Pipeline uid -> the pipeline as it will be stored (for validating its versions).
    prepared: HashMap<String, Value>,
    /// Pipelines in the target with the uid they had: their versions may follow.
    migrated: HashSet<String>,
    writes: usize,
    report: Report,
}

impl Migrator {
    /// Validates and reports; writes nothing, reads no target.
    pub fn dry_run() -> Self {
        Self::with(None, None)
    }

    /// Validates and writes into `store`, at most `max_writes` objects when given.
    pub fn new(store: std::sync::Arc<dyn Store>, max_writes: Option<usize>) -> Self {
        let registry = Registry::new(store.clone());
        Self::with(Some((store, registry)), max_writes)
    }

    fn with(
        target: Option<(std::sync::Arc<dyn Store>, Registry)>,
        max_writes: Option<usize>,
    ) -> Self {
        Migrator {
            report: Report {
                dry_run: target.is_none(),
                ..Default::default()
            },
            target,
            opts: WriteOptions {
                dry_run: false,
                manager: MANAGER.to_owned(),
                field_validation: FieldValidation::Strict,
                force: false,
            },
            max_writes,
            prepared: HashMap::new(),
            migrated: HashSet::new(),
            writes: 0,
        }
    }

    /// A source row not taken.
    pub fn skip(&mut self, skip: Skip) {
        self.report.skipped.push(skip);
    }

    /// Whether `--max-writes` stopped the run (the source may stop reading).
    pub fn stopped(&self) -> bool {
        self.report.stopped_early
    }

    /// The report so far.
    pub fn finish(self) -> Report {
        self.report
    }

    /// Validates `c` against its pipeline as it will be stored; the reason when it fails.
    fn validate(&mut self, c: &Candidate) -> Option<String> {
        let ctx = CreateContext {
            uid: c.uid.clone(),
            now: c.created,
        };
        let parent = match (c.kind, &c.parent_uid) {
            (Kind::Version, Some(p)) => match self.prepared.get(p) {
                Some(v) => ParentState::Found(v),
                None => return Some("its pipeline is not migrated".to_owned()),
            },
            _ => ParentState::Unknown,
        };
        match c.kind.resource().strategy.prepare_create(
            c.body.clone(),
            &c.namespace,
            &ctx,
            parent,
            FieldValidation::Strict,
        ) {
            Ok(p) => {
                if c.kind == Kind::Pipeline {
                    self.prepared.insert(c.uid.clone(), p.object);
                }
                None
            }
            Err(e) => Some(format!("invalid: {e}")),
        }
    }

    /// Handles one candidate (pipelines before their versions); `progress` hears of it.
    /// Errors are the target's (unavailable, internal): what was written stays.
    pub async fn handle(
        &mut self,
        c: Candidate,
        progress: &mut dyn FnMut(&Entry, &Outcome),
    ) -> Result<(), StoreError> {
        if self.report.stopped_early {
            return Ok(());
        }
        let outcome = match self.validate(&c) {
            Some(why) => Outcome::NotMigrated(why),
            None => match &self.target {
                None => Outcome::Created,
                Some(_)
                    if c.parent_uid
                        .as_ref()
                        .is_some_and(|p| !self.migrated.contains(p)) =>
                {
                    Outcome::NotMigrated("its pipeline is not migrated".into())
                }
                Some((store, registry)) => {
                    match Self::put(
                        store,
                        registry,
                        &self.opts,
                        &c,
                        self.writes,
                        self.max_writes,
                    )
                    .await?
                    {
                        Some(o) => o,
                        None => {
                            self.report.stopped_early = true;
                            return Ok(());
                        }
                    }
                }
            },
        };
        if outcome == Outcome::Created && self.target.is_some() {
            self.writes += 1;
        }
        if c.kind == Kind::Pipeline && matches!(outcome, Outcome::Created | Outcome::AlreadyThere) {
            self.migrated.insert(c.uid.clone());
        }
        let entry = Entry::of(c);
        progress(&entry, &outcome);
        self.report.objects.push((entry, outcome));
        Ok(())
    }

    /// Writes one valid candidate unless it is there; `None` when `max_writes` is reached.
    async fn put(
        store: &std::sync::Arc<dyn Store>,
        registry: &Registry,
        opts: &WriteOptions,
        c: &Candidate,
        writes: usize,
        max_writes: Option<usize>,
    ) -> Result<Option<Outcome>, StoreError> {
        let res = c.kind.resource();
        let key = Key::new(res.plural, &c.namespace, &c.name);
        let outcome = match store.get(&key).await {
            Ok(o) if o.uid == c.uid => Outcome::AlreadyThere,
            Ok(o) => Outcome::NotMigrated(format!(
                "{} {}/{} already exists with another uid ({})",
                c.kind, c.namespace, c.name, o.uid
            )),
            Err(StoreError::NotFound(_)) => match store.get_by_uid(res.plural, &c.uid).await {
                Ok(o) => Outcome::NotMigrated(format!(
                    "its uid is already used by {} {}/{}",
                    c.kind, o.key.namespace, o.key.name
                )),
                Err(StoreError::NotFound(_)) => {
                    if max_writes.is_some_and(|m| writes >= m) {
                        return Ok(None);
                    }
                    let ctx = CreateContext {
                        uid: c.uid.clone(),
                        now: c.created,
                    };
                    match registry
                        .create_preserving(
                            res,
                            &c.namespace,
                            c.body.clone(),
                            &ctx,
                            opts,
                            c.managed_fields.as_ref(),
                        )
                        .await
                    {
                        Ok(_) => Outcome::Created,
                        Err(RegistryError::Store { source, .. })
                            if matches!(
                                *source,
                                StoreError::Unavailable(_) | StoreError::Internal(_)
                            ) =>
                        {
                            return Err(*source);
                        }
                        Err(e) => Outcome::NotMigrated(e.to_string()),
                    }
                }
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        };
        Ok(Some(outcome))
    }
}

/// Exit codes of [`run`].
pub mod exit {
    /// Everything that could be migrated is in the target (skipped rows are reported).
    pub const DONE: i32 = 0;
    /// Some candidates were not migrated (a conflict in the target, or invalid).
    pub const NOT_MIGRATED: i32 = 1;
    /// The source or the target could not be read or written.
    pub const ERROR: i32 = 2;
    /// Stopped at `--max-writes`; run again to continue.
    pub const STOPPED: i32 = 3;
}

/// Runs the subcommand: reads the source, validates, writes (unless a dry run), prints the
/// report; returns the exit code.
pub async fn run(opts: &crate::options::MigrateOptions, out: &mut dyn std::io::Write) -> i32 {
    let namespaces = Namespaces {
        default: opts.default_namespace.clone(),
        map: opts.namespace_map.iter().cloned().collect(),
    };
    let from_kube = opts.from.starts_with("kube://");
    let from_db = opts.from.starts_with("mysql://") || opts.from.starts_with("mariadb://");
    if !from_kube && !from_db {
        let _ = writeln!(
            out,
            "error: unsupported source {:?}: use mysql://USER:PASS@HOST/DB (KFP's database) or kube://[?kubeconfig=PATH] (KFP's custom resources)",
            opts.from
        );
        return exit::ERROR;
    }
    let mut backend = None;
    let mut migrator = if opts.dry_run {
        Migrator::dry_run()
    } else {
        let Some(to) = &opts.to else {
            let _ = writeln!(out, "error: --to is required");
            return exit::ERROR;
        };
        // Nobody watches this process's store: a small change-feed ring, so the objects just
        // written are not kept in memory for replay.
        let mut config = crate::store::config(to);
        config.feed.ring_capacity = 16;
        config.feed.channel_capacity = 16;
        match kfp_storage::open(config).await {
            Ok(b) => {
                let m = Migrator::new(b.store.clone(), opts.max_writes);
                backend = Some(b);
                m
            }
            Err(e) => {
                let _ = writeln!(out, "error: opening the target store: {e}");
                return exit::ERROR;
            }
        }
    };
    // Each object's line as it is handled, so an interrupted run shows how far it got.
    let dry_run = opts.dry_run;
    let mut progress = |c: &Entry, o: &Outcome| {
        for line in Report::object_lines(c, o, dry_run) {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    };
    let result: anyhow::Result<()> = if from_db {
        let url = opts.from.replacen("mariadb:", "mysql:", 1);
        kfp_db::migrate(&url, &namespaces, &mut migrator, &mut progress)
            .await
            .map_err(anyhow::Error::from)
    } else {
        async {
            let path = kube::kubeconfig_of(&opts.from).map_err(anyhow::Error::msg)?;
            let client = kube::client(path.as_deref()).await?;
            kube::migrate(&client, &namespaces, &mut migrator, &mut progress).await
        }
        .await
    };
    if let Some(b) = backend {
        b.store.close().await;
    }
    let report = migrator.finish();
    if let Err(e) = result {
        let written = if report.written() > 0 {
            "; what was written stays: run again to continue"
        } else {
            ""
        };
        let _ = writeln!(out, "error: {e:#}{written}");
        return exit::ERROR;
    }
    for line in report.tail_lines() {
        let _ = writeln!(out, "{line}");
    }
    if from_kube {
        let _ = writeln!(out, "{}", kube::SWITCH_OVER);
    }
    if report.stopped_early {
        exit::STOPPED
    } else if report.failed() > 0 {
        exit::NOT_MIGRATED
    } else {
        exit::DONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_deterministically_and_only_when_needed() {
        let uid = "3F2504E0-4F89-11D3-9A0C-0305E82C3301";
        assert_eq!(
            kubernetes_name("hello-world", uid, MAX_NAME),
            ("hello-world".into(), false)
        );
        let (n, renamed) = kubernetes_name("My Pipeline (v2)!", uid, MAX_NAME);
        assert!(renamed);
        assert_eq!(n, "my-pipeline-v2-3f2504e0");
        assert_eq!(kubernetes_name("My Pipeline (v2)!", uid, MAX_NAME).0, n);
        assert_eq!(kubernetes_name("日本語", uid, MAX_NAME).0, "p-3f2504e0");
        let long = "a".repeat(300);
        let (n, renamed) = kubernetes_name(&long, uid, 100);
        assert!(renamed && n.len() <= 100 && n.ends_with("-3f2504e0"), "{n}");
        for original in ["..x..", "-", "A.B", "x_y", "ÄÖ Ü", "a--b  c"] {
            let (n, _) = kubernetes_name(original, uid, MAX_NAME);
            assert!(names::dns1123_subdomain(&n).is_empty(), "{original} -> {n}");
        }
    }

    #[test]
    fn namespaces_default_then_map() {
        let mut ns = Namespaces::default();
        ns.map.insert("kubeflow".into(), "shared".into());
        ns.map.insert("alice".into(), "team-a".into());
        assert_eq!(ns.target(""), "shared");
        assert_eq!(ns.target("alice"), "team-a");
        assert_eq!(ns.target("bob"), "bob");
    }
}

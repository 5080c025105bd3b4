//! Periodic compaction of the change feed past a configurable horizon: keep at least the last
//! `keep_revisions` revisions and at least `keep_age` of history, whichever keeps more (as
//! kine keeps a minimum number of revisions and kube-apiserver compacts every 5 minutes).

use std::sync::Arc;
use std::time::Duration;

use crate::{Maintenance, Result, Revision, Store};

/// How much history to keep.
#[derive(Clone, Debug)]
pub struct CompactionPolicy {
    /// Revisions always kept.
    pub keep_revisions: u64,
    /// History younger than this is always kept.
    pub keep_age: Duration,
    /// How often to compact.
    pub interval: Duration,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            keep_revisions: 10_000,
            keep_age: Duration::from_secs(300),
            interval: Duration::from_secs(60),
        }
    }
}

/// The revision to compact to under `policy`, or `None` when nothing may go.
pub async fn target(
    store: &dyn Store,
    history: &dyn Maintenance,
    policy: &CompactionPolicy,
) -> Result<Option<Revision>> {
    let current = store.current_revision().await?;
    let by_count = current.0.saturating_sub(policy.keep_revisions);
    let Some(by_age) = history.revision_older_than(policy.keep_age).await? else {
        return Ok(None);
    };
    let target = by_count.min(by_age.0);
    Ok((target > 0).then_some(Revision(target)))
}

/// Compacts once under `policy`; returns the new compacted revision when it moved.
pub async fn compact_once(
    store: &dyn Store,
    history: &dyn Maintenance,
    policy: &CompactionPolicy,
) -> Result<Option<Revision>> {
    match target(store, history, policy).await? {
        Some(rev) => history.compact(rev).await.map(Some),
        None => Ok(None),
    }
}

/// Runs [`compact_once`] every `policy.interval` until the task is dropped or aborted.
pub fn spawn(
    store: Arc<dyn Store>,
    history: Arc<dyn Maintenance>,
    policy: CompactionPolicy,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tracing::info!(
            interval_s = policy.interval.as_secs_f64(),
            keep_revisions = policy.keep_revisions,
            keep_age_s = policy.keep_age.as_secs_f64(),
            "change-feed compaction scheduled"
        );
        let mut tick = tokio::time::interval(policy.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match compact_once(store.as_ref(), history.as_ref(), &policy).await {
                Ok(Some(rev)) => tracing::debug!(revision = rev.0, "compacted the change feed"),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "compaction failed; will retry"),
            }
        }
    })
}

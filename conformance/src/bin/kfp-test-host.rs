//! `kfp-test-host`: the stand-in host cluster of the `kube://` store as its own process, for the
//! conformance suites (CI has no kube-apiserver). It serves `kfp_storage::testing::host` over a
//! SQLite database in `--data-dir` (so a restarted host keeps its records and revisions), runs
//! the compactor on it as etcd's compaction would, writes a kubeconfig naming itself to
//! `--kubeconfig` once it listens, and serves until it is killed.
//!
//! Test tooling only: plain HTTP on 127.0.0.1, no authentication.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kfp_storage::compactor::{self, CompactionPolicy};

#[derive(Parser)]
#[command(
    name = "kfp-test-host",
    about = "A stand-in kube-apiserver for the kube:// store's custom resources (tests only)"
)]
struct Cli {
    /// Where the host keeps its records (`host.db`).
    #[arg(long)]
    data_dir: PathBuf,
    /// Where to write the kubeconfig naming this host (written once it listens).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Change events the host's watch ring keeps (older resumes are read from its database).
    #[arg(long, default_value_t = 4096)]
    watch_ring_capacity: usize,
    /// Revisions the host's compaction always keeps.
    #[arg(long, default_value_t = 10_000)]
    compaction_keep_revisions: u64,
    /// History younger than this many seconds is always kept.
    #[arg(long, default_value_t = 300)]
    compaction_keep_seconds: u64,
    /// How often the host compacts, in seconds.
    #[arg(long, default_value_t = 60)]
    compaction_interval_seconds: u64,
    /// Only `default`, `kube-system` and namespaces made with `POST /api/v1/namespaces` exist,
    /// as on a real cluster (by default every namespace does).
    #[arg(long)]
    require_namespaces: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("creating {}", cli.data_dir.display()))?;
    let mut config = kfp_storage::StoreConfig::new(format!(
        "sqlite://{}",
        cli.data_dir.join("host.db").display()
    ));
    config.feed.ring_capacity = cli.watch_ring_capacity;
    let backend = kfp_storage::open(config)
        .await
        .context("opening the host's store")?;
    let compaction = backend.maintenance.clone().map(|history| {
        compactor::spawn(
            backend.store.clone(),
            history,
            CompactionPolicy {
                keep_revisions: cli.compaction_keep_revisions,
                keep_age: Duration::from_secs(cli.compaction_keep_seconds),
                interval: Duration::from_secs(cli.compaction_interval_seconds.max(1)),
            },
        )
    });
    let store = Arc::clone(&backend.store);
    let host = if cli.require_namespaces {
        kfp_storage::testing::host::Host::start_with_namespaces(
            store,
            &[],
            &["default", "kube-system"],
        )
        .await
    } else {
        kfp_storage::testing::host::Host::start(store, &[]).await
    };
    // Written whole, then renamed: a reader never sees half a kubeconfig.
    let partial = cli.kubeconfig.with_extension("partial");
    host.write_kubeconfig(&partial);
    std::fs::rename(&partial, &cli.kubeconfig)
        .with_context(|| format!("writing {}", cli.kubeconfig.display()))?;
    eprintln!("kfp-test-host: serving http://{}", host.addr);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    if let Some(c) = compaction {
        c.abort();
    }
    drop(host);
    backend.store.close().await;
    Ok(())
}

//! `kfp-apiserver serve`: turns options into a running server (Options -> settings -> run).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kfp_storage::compactor::{self, CompactionPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::{App, Limits};
use crate::auth::{Authenticator, TokenAuthenticator, Union};
use crate::options::ServeOptions;

/// Runs the server until a signal; returns the process exit code.
pub async fn run(opts: ServeOptions) -> anyhow::Result<()> {
    // `--token-auth-file` counts in both modes: with `--dev` its tokens are accepted beside the
    // generated admin token (never silently ignored).
    let file_tokens = match &opts.token_auth_file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            Some(TokenAuthenticator::from_csv(&text).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let (store_url, cert, key, mut authenticators) = if opts.dev {
        let dev = crate::dev::prepare(&opts.data_dir, &opts.listen)?;
        println!(
            "kfp-apiserver (dev): https://{} ; kubeconfig: {}",
            opts.listen,
            dev.kubeconfig.display()
        );
        println!(
            "try: KUBECONFIG={} kubectl api-resources --api-group=pipelines.kubeflow.org",
            dev.kubeconfig.display()
        );
        let store = opts.store.clone().unwrap_or(dev.store_url);
        let admin: Arc<dyn Authenticator> = Arc::new(TokenAuthenticator::single(
            &dev.token,
            "kfp-admin",
            &["system:masters"],
        ));
        (store, dev.cert, dev.key, vec![admin])
    } else {
        let store = opts.store.clone().context(
            "--store is required without --dev (sqlite://PATH, postgres://..., mysql://...)",
        )?;
        let cert = opts
            .tls_cert_file
            .clone()
            .context("--tls-cert-file is required without --dev")?;
        let key = opts
            .tls_private_key_file
            .clone()
            .context("--tls-private-key-file is required without --dev")?;
        if file_tokens.is_none() {
            anyhow::bail!(
                "--token-auth-file is required without --dev until delegated authentication (front proxy, TokenReview) lands"
            );
        }
        (store, cert, key, Vec::new())
    };
    if let Some(tokens) = file_tokens {
        authenticators.push(Arc::new(tokens));
    }
    let authn = Union(authenticators);
    let resolver = Arc::new(kfp_certs::ReloadingResolver::new(&cert, &key)?);
    let tls = kfp_certs::server_config(resolver)?;
    let listener = TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let mut config = crate::store::config(&store_url);
    config.feed.ring_capacity = opts.watch_ring_capacity;
    config.feed.channel_capacity = opts.watch_channel_capacity.max(1);
    config.feed.bookmark_interval =
        Duration::from_secs(opts.watch_bookmark_interval_seconds.max(1));
    let backend = kfp_storage::open(config)
        .await
        .context("opening the store")?;
    let store = backend.store.clone();
    // History upkeep only for backends that keep their own change feed.
    let compaction = backend.maintenance.clone().map(|history| {
        compactor::spawn(
            store.clone(),
            history,
            CompactionPolicy {
                keep_revisions: opts.compaction_keep_revisions,
                keep_age: Duration::from_secs(opts.compaction_keep_seconds),
                interval: Duration::from_secs(opts.compaction_interval_seconds.max(1)),
            },
        )
    });
    let (tx, rx) = watch::channel(false);
    let limits = Limits {
        timeout: Duration::from_secs(opts.request_timeout_seconds.max(1)),
        header_read_timeout: Duration::from_secs(opts.header_read_timeout_seconds.max(1)),
        idle_timeout: Duration::from_secs(opts.idle_timeout_seconds.max(1)),
        ..Limits::default()
    };
    let kfp = crate::kfp::KfpConfig {
        multi_user: opts.kfp_multi_user,
        default_namespace: opts.kfp_default_namespace.clone(),
        shared_namespace: opts.kfp_shared_namespace.clone(),
        url_policy: crate::kfp::fetch::UrlPolicy {
            allow_http: opts.kfp_pipeline_url_allow_http,
            allowed_domains: opts.kfp_pipeline_url_allowed_domains.clone(),
            allow_private_addresses: opts.kfp_pipeline_url_allow_private_addresses,
            allow_any_port: opts.kfp_pipeline_url_allow_any_port,
            timeout: Duration::from_secs(opts.kfp_pipeline_url_timeout_seconds.max(1)),
        },
    };
    let app = App::build(
        store.clone(),
        Arc::new(authn),
        Arc::new(crate::auth::AllowAuthenticated),
        rx.clone(),
        limits,
        kfp,
    );
    let collector = app
        .registry
        .spawn_collector(Duration::from_secs(opts.gc_interval_seconds.max(1)));
    let plain = match &opts.kfp_http_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} (--kfp-http-listen)"))?;
            tracing::warn!(
                listen = %addr,
                "serving the KFP REST view over plain HTTP: only behind a trusted proxy"
            );
            Some(tokio::spawn(crate::server::run_kfp_plain(
                l,
                app.clone(),
                rx.clone(),
            )))
        }
        None => None,
    };
    tracing::info!(listen = %opts.listen, store = %redact(&store_url), "serving");
    let server = tokio::spawn(crate::server::run(listener, tls, app, rx));
    crate::server::signal().await;
    let _ = tx.send(true);
    let _ = server.await;
    if let Some(p) = plain {
        let _ = p.await;
    }
    if let Some(c) = compaction {
        c.abort();
    }
    collector.abort();
    store.close().await;
    Ok(())
}

/// A store URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

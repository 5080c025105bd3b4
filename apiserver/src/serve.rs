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
        (store, cert, key, Vec::new())
    };
    if let Some(tokens) = file_tokens {
        authenticators.push(Arc::new(tokens));
    }
    let delegation = Delegation::from_options(&opts).await?;
    let lookup = lookup_extension_auth(&opts, delegation.authentication.as_ref()).await?;
    let text_bundle = |pem: &str, key: &str| {
        kfp_certs::ReloadingCaBundle::from_pem(pem).with_context(|| {
            format!(
                "{}/{}: {key}",
                crate::extension_auth::NAMESPACE,
                crate::extension_auth::NAME
            )
        })
    };
    let file_bundle = |path: &Option<std::path::PathBuf>, flag: &str| {
        path.as_deref()
            .map(kfp_certs::ReloadingCaBundle::new)
            .transpose()
            .with_context(|| flag.to_owned())
    };
    // A flag wins; else the ConfigMap (when it was looked up), whose bundles may start empty.
    let cas = Arc::new(kfp_certs::ClientCas {
        client: match (
            file_bundle(&opts.client_ca_file, "--client-ca-file")?,
            &lookup,
        ) {
            (Some(b), _) => Some(b),
            (None, Some(l)) => Some(text_bundle(&l.client_ca, "client-ca-file")?),
            (None, None) => None,
        },
        request_header: match (
            file_bundle(
                &opts.requestheader_client_ca_file,
                "--requestheader-client-ca-file",
            )?,
            &lookup,
        ) {
            (Some(b), _) => Some(b),
            (None, Some(l)) => Some(text_bundle(
                &l.request_header_ca,
                "requestheader-client-ca-file",
            )?),
            (None, None) => None,
        },
    });
    let front = cas.request_header.as_ref().map(|_| {
        let config = match (&opts.requestheader_client_ca_file, &lookup) {
            (None, Some(l)) => l.request_header.clone(),
            _ => crate::front_proxy::RequestHeaderConfig {
                allowed_names: opts.requestheader_allowed_names.clone(),
                username_headers: opts.requestheader_username_headers.clone(),
                group_headers: opts.requestheader_group_headers.clone(),
                extra_prefixes: opts.requestheader_extra_headers_prefix.clone(),
                uid_headers: opts.requestheader_uid_headers.clone(),
            },
        };
        Arc::new(crate::front_proxy::RequestHeaderAuthenticator::new(config))
    });
    // kube-apiserver's order: the front proxy, then x509 certificates, then tokens. KFP's user
    // header sits right after the front proxy (whose `X-Remote-User` wins).
    let mut first: Vec<Arc<dyn Authenticator>> = Vec::new();
    if let Some(f) = &front {
        first.push(f.clone());
    }
    if let Some(header) = &opts.kfp_user_header {
        first.push(Arc::new(crate::front_proxy::KfpUserHeaderAuthenticator {
            header: http::HeaderName::try_from(header.as_str())
                .context("--kfp-user-header is not a header name")?,
            prefix: opts.kfp_user_prefix.clone(),
            front_proxy: front.clone(),
        }));
    }
    if cas.client.is_some() {
        first.push(Arc::new(crate::front_proxy::X509Authenticator));
    }
    authenticators.splice(0..0, first);
    let configmap_refresh = match (&delegation.authentication, &lookup) {
        (Some(client), Some(_)) => Some(crate::extension_auth::spawn_refresh(
            client.clone(),
            opts.authentication_configmap_refresh_interval
                .max(Duration::from_secs(1)),
            crate::extension_auth::Targets {
                cas: cas.clone(),
                client_ca: opts.client_ca_file.is_none(),
                request_header: front
                    .clone()
                    .filter(|_| opts.requestheader_client_ca_file.is_none()),
            },
        )),
        _ => None,
    };
    if let Some(client) = &delegation.authentication {
        if opts.service_account_issuer_discovery {
            let local = crate::service_account::ServiceAccountTokenAuthenticator::discover(
                client.clone(),
                opts.api_audiences.clone(),
            )
            .await
            .map_err(anyhow::Error::msg)
            .context("--service-account-issuer-discovery")?;
            authenticators.push(Arc::new(local));
        }
        authenticators.push(Arc::new(crate::delegated::TokenReviewAuthenticator::new(
            client.clone(),
            opts.api_audiences.clone(),
            opts.authentication_token_webhook_cache_ttl,
            opts.authentication_token_webhook_cache_ttl,
        )));
    } else if opts.service_account_issuer_discovery {
        anyhow::bail!(
            "--service-account-issuer-discovery needs the host cluster (--authentication-kubeconfig, --kubeconfig, or in-cluster)"
        );
    }
    if authenticators.is_empty() {
        anyhow::bail!(
            "no authentication configured: without --dev, give --token-auth-file or a kubeconfig for delegated authentication (--authentication-kubeconfig / --kubeconfig, or run in a cluster)"
        );
    }
    let authz: Arc<dyn crate::auth::Authorizer> = match &delegation.authorization {
        Some(client) => Arc::new(crate::delegated::DelegatingAuthorizer {
            always_allow_paths: opts.authorization_always_allow_paths.clone(),
            inner: crate::delegated::SubjectAccessReviewAuthorizer::new(
                client.clone(),
                opts.authorization_webhook_cache_authorized_ttl,
                opts.authorization_webhook_cache_unauthorized_ttl,
            ),
        }),
        None => Arc::new(crate::auth::AllowAuthenticated),
    };
    let authn = Union(authenticators);
    let resolver = Arc::new(kfp_certs::ReloadingResolver::new(&cert, &key)?);
    let tls = kfp_certs::server_config_with_client_cas(resolver, cas.clone())?;
    let listener = TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let mut config = crate::store::config(&store_url);
    config.feed.ring_capacity = opts.watch_ring_capacity;
    config.feed.ring_max_bytes = opts.watch_ring_bytes;
    config.feed.channel_capacity = opts.watch_channel_capacity.max(1);
    config.feed.bookmark_interval =
        Duration::from_secs(opts.watch_bookmark_interval_seconds.max(1));
    if opts.install_crds {
        let loc = kfp_storage::crd::Location::parse(&store_url)
            .context("--install-crds needs a kube:// store")?;
        let client = kfp_storage::crd::client(&loc).await?;
        kfp_storage::crd::CrdStore::install_definitions(&client, &config.kinds)
            .await
            .context("installing the kube:// store's CustomResourceDefinitions")?;
    }
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
        authz,
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
    let server = tokio::spawn(crate::server::run(listener, tls, Some(cas), app, rx));
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
    if let Some(r) = configmap_refresh {
        r.abort();
    }
    store.close().await;
    Ok(())
}

/// The `extension-apiserver-authentication` ConfigMap at start, as kube-apiserver's
/// `lookupMissingConfigInCluster` does it: only when a flag left a CA to find and a host cluster
/// is configured; not found is an empty configuration (the refresh may fill it later);
/// unreadable refuses to start unless `--authentication-tolerate-lookup-failure`.
async fn lookup_extension_auth(
    opts: &ServeOptions,
    host: Option<&kube::Client>,
) -> anyhow::Result<Option<crate::extension_auth::ExtensionAuth>> {
    let missing = opts.client_ca_file.is_none() || opts.requestheader_client_ca_file.is_none();
    let Some(client) = host.filter(|_| missing && !opts.authentication_skip_lookup) else {
        return Ok(None);
    };
    match crate::extension_auth::fetch(client).await {
        Ok(Some(found)) => Ok(Some(found)),
        Ok(None) => {
            tracing::info!(
                "{}/{} not found: no client CA or front proxy from it until it appears",
                crate::extension_auth::NAMESPACE,
                crate::extension_auth::NAME
            );
            Ok(Some(Default::default()))
        }
        Err(e) if opts.authentication_tolerate_lookup_failure => {
            tracing::warn!(error = %e, "starting without the authentication ConfigMap");
            Ok(Some(Default::default()))
        }
        Err(e) => Err(anyhow::anyhow!(
            "{e} (--authentication-tolerate-lookup-failure starts anyway; --authentication-skip-lookup does not read it)"
        )),
    }
}

/// The configuration a kubeconfig file's current context gives.
pub(crate) async fn kubeconfig_file(p: &std::path::Path) -> anyhow::Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(p)
        .with_context(|| format!("reading the kubeconfig {}", p.display()))?;
    kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading the kubeconfig {}", p.display()))
}

/// A client for the host cluster from a kubeconfig, or the in-cluster configuration.
async fn host_client(path: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match path {
        Some(p) => kubeconfig_file(p).await?,
        None => kube::Config::incluster().context("the in-cluster configuration")?,
    };
    kube::Client::try_from(config).context("a client for the host cluster")
}

/// The host-cluster clients for delegated authentication and authorization.
struct Delegation {
    authentication: Option<kube::Client>,
    authorization: Option<kube::Client>,
}

impl Delegation {
    /// `--authentication-kubeconfig` / `--authorization-kubeconfig`, else `--kubeconfig`, else
    /// (without `--dev`, or with `--token-auth-file` only) the in-cluster configuration when
    /// the process runs in a pod. `--dev` alone uses none: its static token and allow-all.
    async fn from_options(opts: &ServeOptions) -> anyhow::Result<Delegation> {
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() && !opts.dev;
        let pick = |specific: &Option<std::path::PathBuf>| {
            specific.clone().or_else(|| opts.kubeconfig.clone())
        };
        let authn_path = pick(&opts.authentication_kubeconfig);
        let authz_path = pick(&opts.authorization_kubeconfig);
        let authentication = match (&authn_path, in_cluster) {
            (Some(p), _) => Some(host_client(Some(p)).await?),
            (None, true) => Some(host_client(None).await?),
            (None, false) => None,
        };
        let authorization = match (&authz_path, in_cluster) {
            (Some(p), _) => Some(host_client(Some(p)).await?),
            (None, true) => Some(host_client(None).await?),
            (None, false) => None,
        };
        if !opts.dev && authorization.is_none() {
            tracing::warn!(
                "no kubeconfig for delegated authorization: every authenticated user may do everything"
            );
        }
        Ok(Delegation {
            authentication,
            authorization,
        })
    }
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

//! The command line, parsed once into typed options. Nothing else in the crate reads arguments
//! or the environment.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Aggregated Kubernetes API server and KFP v2beta1 REST API for Kubeflow Pipelines.
#[derive(Debug, Parser)]
#[command(name = "kfp-apiserver", version, about)]
pub struct Options {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeOptions>),
    /// Check compiled pipelines (KFP IR, YAML or JSON) and Pipeline/PipelineVersion manifests
    /// without a server. Prints `FILE: ok` or every problem with its document and field path;
    /// exits 0 only if every file is valid.
    Validate(ValidateOptions),
    /// Turn a compiled pipeline (KFP IR, with its platform spec document when it has one) into
    /// a Pipeline and a PipelineVersion manifest that apply with kubectl unchanged: multi-document
    /// YAML on stdout, or with `--split DIR` one file per object.
    Manifest(ManifestOptions),
    /// Copy pipelines and versions from KFP's database or KFP's custom resources into a store,
    /// keeping their ids (`metadata.uid` = the KFP UUID) and creation times. Idempotent and
    /// resumable.
    Migrate(MigrateOptions),
}

/// `serve` options.
#[derive(Debug, clap::Args)]
pub struct ServeOptions {
    /// Development mode: SQLite in the data directory, a self-signed certificate, an admin token
    /// and a kubeconfig, no cluster needed.
    #[arg(long)]
    pub dev: bool,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
    /// Where `--dev` keeps its database, certificates and kubeconfig.
    #[arg(long, default_value = ".kfp-apiserver")]
    pub data_dir: PathBuf,
    /// The store: `sqlite://PATH`, `postgres://...`, `mysql://...`, or `kube://[?kubeconfig=PATH&
    /// namespace-prefix=P]` for custom resources in the host cluster (with `--dev`: SQLite in
    /// the data directory unless given).
    #[arg(long, env = "KFP_APISERVER_STORE")]
    pub store: Option<String>,
    /// With a `kube://` store: create or update its CustomResourceDefinitions
    /// (`storage.pipelines.kubeflow.org`) by server-side apply before starting.
    #[arg(long)]
    pub install_crds: bool,
    /// Serving certificate (PEM); reloaded when the file changes.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// Static bearer tokens, kube-apiserver's format: `token,user,uid,"group1,group2"`.
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// Client certificates signed by these CAs authenticate as their CN, with their O as groups.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// The front proxy's CA (the aggregator's `--proxy-client-cert-file` issuer): a client
    /// certificate it signed, with an allowed CN, makes the request-header user the user.
    #[arg(long)]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// CNs the front-proxy certificate may have (empty: any from that CA).
    #[arg(long, value_delimiter = ',')]
    pub requestheader_allowed_names: Vec<String>,
    /// Headers holding the user name on front-proxy requests.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-User")]
    pub requestheader_username_headers: Vec<String>,
    /// Headers holding the groups on front-proxy requests (every line of each).
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Group")]
    pub requestheader_group_headers: Vec<String>,
    /// Prefixes of the extra headers on front-proxy requests.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Extra-")]
    pub requestheader_extra_headers_prefix: Vec<String>,
    /// Headers holding the uid on front-proxy requests (none by default).
    #[arg(long, value_delimiter = ',')]
    pub requestheader_uid_headers: Vec<String>,
    /// A kubeconfig for the host cluster, used for TokenReview and SubjectAccessReview unless the
    /// two flags below name others. Without `--dev` and without any of them, the in-cluster
    /// configuration is used.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig TokenReviews are sent with (delegated authentication of bearer tokens).
    #[arg(long)]
    pub authentication_kubeconfig: Option<PathBuf>,
    /// The kubeconfig SubjectAccessReviews are sent with (delegated authorization).
    #[arg(long)]
    pub authorization_kubeconfig: Option<PathBuf>,
    /// How long TokenReview answers are cached (kube-apiserver: 10s).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub authentication_token_webhook_cache_ttl: std::time::Duration,
    /// How long an allowed SubjectAccessReview is cached (kube-apiserver: 10s).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub authorization_webhook_cache_authorized_ttl: std::time::Duration,
    /// How long a denied SubjectAccessReview is cached (kube-apiserver: 10s).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub authorization_webhook_cache_unauthorized_ttl: std::time::Duration,
    /// Non-resource paths anyone may get without authorization (a trailing `*` matches a prefix).
    #[arg(long, value_delimiter = ',', default_value = "/healthz,/readyz,/livez")]
    pub authorization_always_allow_paths: Vec<String>,
    /// Do not read `kube-system/extension-apiserver-authentication` for the client CA and the
    /// front-proxy settings that flags do not give.
    #[arg(long)]
    pub authentication_skip_lookup: bool,
    /// Start even if that ConfigMap cannot be read (not found is never an error).
    #[arg(long)]
    pub authentication_tolerate_lookup_failure: bool,
    /// How often that ConfigMap is read again, so rotated CAs and changed names apply without a
    /// restart.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub authentication_configmap_refresh_interval: std::time::Duration,
    /// Verify the host cluster's ServiceAccount tokens locally, with the keys its OIDC
    /// discovery publishes (`/.well-known/openid-configuration`, `/openid/v1/jwks`), instead of
    /// a TokenReview per new token; other tokens still go to TokenReview.
    #[arg(long)]
    pub service_account_issuer_discovery: bool,
    /// Audiences a token must be for (kube-apiserver's `--api-audiences`); sent with
    /// TokenReviews and checked by local verification (empty: the issuer).
    #[arg(long, value_delimiter = ',')]
    pub api_audiences: Vec<String>,
    /// The KFP view: the header a trusted proxy names the user in (KFP's multi-user
    /// `kubeflow-userid`); honoured only on front-proxy connections and the plain KFP listener.
    #[arg(long)]
    pub kfp_user_header: Option<String>,
    /// The KFP view: a prefix stripped from the user header's value (KFP's
    /// `KUBEFLOW_USERID_PREFIX`, e.g. `accounts.google.com:`).
    #[arg(long, default_value = "")]
    pub kfp_user_prefix: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Change-feed events kept in memory for watch replay (older ones replay from the
    /// database's change table).
    #[arg(long, default_value_t = 1024)]
    pub watch_ring_capacity: usize,
    /// Bytes of objects those events may hold (16 MiB); older events leave first and watches
    /// from before them replay from the database.
    #[arg(long, default_value_t = 16 << 20)]
    pub watch_ring_bytes: usize,
    /// How many events a watcher may fall behind before it gets 410 Gone.
    #[arg(long, default_value_t = 4096)]
    pub watch_channel_capacity: usize,
    /// Seconds between bookmarks on an idle watch.
    #[arg(long, default_value_t = 60)]
    pub watch_bookmark_interval_seconds: u64,
    /// Timeout of every request but watch, body read included (kube-apiserver: 60).
    #[arg(long, default_value_t = 60)]
    pub request_timeout_seconds: u64,
    /// A connection must send each request's headers within this; HTTP/1.1 connections idle
    /// between requests are closed after it too (kube-apiserver: 32).
    #[arg(long, default_value_t = 32)]
    pub header_read_timeout_seconds: u64,
    /// Connections with no request in flight for this long are closed.
    #[arg(long, default_value_t = 90)]
    pub idle_timeout_seconds: u64,
    /// Change-feed revisions always kept (list continuation and watch resumption).
    #[arg(long, default_value_t = 10_000)]
    pub compaction_keep_revisions: u64,
    /// Change-feed history younger than this many seconds is always kept.
    #[arg(long, default_value_t = 300)]
    pub compaction_keep_seconds: u64,
    /// Seconds between compactions.
    #[arg(long, default_value_t = 60)]
    pub compaction_interval_seconds: u64,
    /// Seconds between sweeps that delete dependents whose owner is gone (one runs at start).
    #[arg(long, default_value_t = 60)]
    pub gc_interval_seconds: u64,
    /// Also serve the KFP REST view (only it) over plain HTTP on this address, for in-mesh
    /// clients behind a trusted proxy that terminates TLS (off by default).
    #[arg(long)]
    pub kfp_http_listen: Option<String>,
    /// The KFP view: KFP's multi-user mode (namespaces from requests; an empty one is shared).
    #[arg(long)]
    pub kfp_multi_user: bool,
    /// The KFP view, single-user mode: the namespace every pipeline lives in.
    #[arg(long, default_value = "default")]
    pub kfp_default_namespace: String,
    /// The KFP view, multi-user mode: the namespace shared pipelines live in (KFP's
    /// `POD_NAMESPACE`).
    #[arg(long, default_value = "kubeflow")]
    pub kfp_shared_namespace: String,
    /// `package_url` downloads: allow http (KFP's `PIPELINE_URL_ALLOW_HTTP`).
    #[arg(long)]
    pub kfp_pipeline_url_allow_http: bool,
    /// `package_url` downloads: allowed hosts, comma-separated; `*.example.com` matches
    /// subdomains, `*` every host (KFP's default list and `PIPELINE_URL_ALLOWED_DOMAINS`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "storage.googleapis.com,s3.amazonaws.com,github.com,raw.githubusercontent.com"
    )]
    pub kfp_pipeline_url_allowed_domains: Vec<String>,
    /// `package_url` downloads: allow loopback, private and link-local addresses (an internal
    /// mirror; off by default against SSRF).
    #[arg(long)]
    pub kfp_pipeline_url_allow_private_addresses: bool,
    /// `package_url` downloads: allow ports other than 443 and 80.
    #[arg(long)]
    pub kfp_pipeline_url_allow_any_port: bool,
    /// `package_url` downloads: seconds a download may take (KFP's `PIPELINE_URL_TIMEOUT`).
    #[arg(long, default_value_t = 30)]
    pub kfp_pipeline_url_timeout_seconds: u64,
}

/// Parses a Go-style duration: `10s`, `1m`, `500ms`, `1.5s`, `2h` (or plain seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (10s, 1m, 500ms)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How `validate` reads a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum FileKind {
    /// Kubernetes manifests if any document has `apiVersion` and `kind`, else compiled IR.
    #[default]
    Auto,
    /// A compiled pipeline (KFP IR), as uploaded to the KFP REST API.
    Ir,
    /// Pipeline/PipelineVersion manifests, as applied with kubectl or GitOps.
    Manifest,
}

/// `validate` options.
#[derive(Debug, clap::Args)]
pub struct ValidateOptions {
    /// How to read the files.
    #[arg(long, value_enum, default_value_t = FileKind::Auto)]
    pub kind: FileKind,
    /// Files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// `manifest` options.
#[derive(Debug, clap::Args)]
pub struct ManifestOptions {
    /// The Pipeline's name (default: the pipeline's `pipelineInfo.name`).
    #[arg(long)]
    pub name: Option<String>,
    /// The namespace of both objects (default: none, so kubectl uses its context's).
    #[arg(long)]
    pub namespace: Option<String>,
    /// The version's name (default: the Pipeline's name). The object is named
    /// `<pipeline>-<version>` as the KFP REST API names it, or just the Pipeline's name when
    /// the two are equal; `spec.versionName` holds the version's name.
    #[arg(long)]
    pub version_name: Option<String>,
    /// Write one file per object into this directory (`<name>.pipeline.yaml`,
    /// `<name>.pipelineversion.yaml`), for a kustomize directory; a `kustomization.yaml` listing
    /// them is written when the directory has none.
    #[arg(long)]
    pub split: Option<PathBuf>,
    /// The compiled pipeline (YAML or JSON).
    pub file: PathBuf,
}

/// `migrate` options.
#[derive(Debug, clap::Args)]
pub struct MigrateOptions {
    /// The source: KFP's database, `mysql://USER:PASS@HOST/DB` (KFP 2.17's tables), or KFP
    /// 2.17's custom resources in a cluster, `kube://` (in-cluster configuration, else the
    /// default kubeconfig) or `kube://?kubeconfig=PATH`.
    #[arg(long)]
    pub from: String,
    /// The target store URL (`sqlite://PATH`, `postgres://...`, `mysql://...`); not read or
    /// written with `--dry-run`.
    #[arg(long, required_unless_present = "dry_run")]
    pub to: Option<String>,
    /// Validate every row and print the report; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Move a namespace: `OLD=NEW` (repeatable; applied after `--default-namespace`).
    #[arg(long = "namespace-map", value_parser = parse_namespace_map)]
    pub namespace_map: Vec<(String, String)>,
    /// Where KFP's shared pipelines (no namespace) go.
    #[arg(long, default_value = "kubeflow")]
    pub default_namespace: String,
    /// Stop after this many writes (migrate in batches; run again to continue).
    #[arg(long)]
    pub max_writes: Option<usize>,
}

fn parse_namespace_map(s: &str) -> Result<(String, String), String> {
    let (old, new) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected OLD=NEW"))?;
    let errs = kfp_apiservice::names::dns1123_label(new);
    if new.is_empty() || !errs.is_empty() {
        return Err(format!(
            "{new:?} is not a namespace name: {}",
            errs.join("; ")
        ));
    }
    Ok((old.to_owned(), new.to_owned()))
}

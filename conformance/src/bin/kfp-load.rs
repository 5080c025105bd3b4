//! `kfp-load`: runs a load scenario against one server (or two, `--compare`) and prints what it
//! measured, as a table or as JSON lines. See `docs/performance.md` for the commands behind
//! every published figure.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use kfp_conformance::load::scenario::{Common, Spec};
use kfp_conformance::load::{Budget, Proto, Scenario, Target, run, table};

#[derive(Parser)]
#[command(
    name = "kfp-load",
    about = "Load scenarios for servers of pipelines.kubeflow.org/v2beta1 (kfp-apiserver or a kube-apiserver with KFP's CRDs)"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    scenario: Cmd,
}

#[derive(Args)]
struct Global {
    /// The server's kubeconfig (its current context is used).
    #[arg(long, env = "KUBECONFIG", global = true)]
    kubeconfig: Option<PathBuf>,
    /// A context of that kubeconfig instead of the current one.
    #[arg(long, global = true)]
    context: Option<String>,
    /// The server's process id on this machine (or ids, comma-separated, summed): adds its CPU
    /// time per operation and memory.
    #[arg(long, global = true, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// A second server: the same scenario runs against it after the first, and the ratios are
    /// printed.
    #[arg(long, global = true)]
    compare: Option<PathBuf>,
    /// The second server's context.
    #[arg(long, global = true)]
    compare_context: Option<String>,
    /// The second server's process id (or ids, comma-separated, summed: kube-apiserver,etcd).
    #[arg(long, global = true, value_delimiter = ',')]
    compare_pid: Vec<u32>,
    /// Namespace of every object the scenarios make and read.
    #[arg(long, short = 'N', default_value = "kfp-load", global = true)]
    namespace: String,
    /// Prefix of object names (`PREFIX-i`, `PREFIX-i-vj`).
    #[arg(long, default_value = "load", global = true)]
    prefix: String,
    /// Concurrent clients.
    #[arg(long, short = 'c', default_value_t = 16, global = true)]
    concurrency: usize,
    /// Run for this many seconds (default 10 where no --count is given).
    #[arg(long, short = 'd', global = true, conflicts_with = "count")]
    duration: Option<f64>,
    /// Run this many operations in all instead.
    #[arg(long, short = 'n', global = true)]
    count: Option<u64>,
    /// HTTP/2 instead of HTTP/1.1.
    #[arg(long, global = true)]
    http2: bool,
    /// Compiled pipelines (IR YAML) new versions carry, round-robin (default: the corpus's
    /// hello_world.yaml).
    #[arg(long = "spec", global = true)]
    specs: Vec<PathBuf>,
    /// Limit for one request, seconds.
    #[arg(long, default_value_t = 30.0, global = true)]
    request_timeout: f64,
    /// One JSON object per run instead of the table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create P Pipelines and P x V PipelineVersions (existing ones are kept).
    Seed {
        #[arg(long, default_value_t = 100)]
        pipelines: u64,
        #[arg(long, default_value_t = 100)]
        versions: u64,
    },
    /// Create versions with unique names under PREFIX-0.
    Create,
    /// GET one version by name.
    Get {
        /// Default: PREFIX-0-v0.
        #[arg(long)]
        name: Option<String>,
    },
    /// LIST versions: the first page, or (--full) every page following continue.
    List {
        #[arg(long, default_value_t = 500)]
        limit: u64,
        /// A label selector, e.g. team=t3.
        #[arg(long, short = 'l')]
        selector: Option<String>,
        #[arg(long)]
        full: bool,
    },
    /// W watchers of the namespace's Pipelines while one writer patches a label at a rate.
    WatchFanout {
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        #[arg(long, default_value_t = 100)]
        writes: u64,
        /// Writes per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Watch streams per HTTP/2 connection.
        #[arg(long, default_value_t = 200)]
        streams_per_conn: usize,
        /// Seconds to wait for deliveries after the last write.
        #[arg(long, default_value_t = 10.0)]
        settle: f64,
    },
    /// 90% GET, 9% LIST of 50 by label, 1% create, over a seeded P x V.
    Mixed {
        #[arg(long, default_value_t = 100)]
        pipelines: u64,
        #[arg(long, default_value_t = 100)]
        versions: u64,
    },
    /// The KFP REST list of pipelines, sorted and filtered, following next_page_token.
    KfpList {
        #[arg(long, default_value_t = 10)]
        page_size: u64,
        /// Pages per walk.
        #[arg(long, default_value_t = 10)]
        pages: u64,
        #[arg(long, default_value = "created_at desc")]
        sort_by: String,
        /// A display_name substring filter (IS_SUBSTRING).
        #[arg(long)]
        substring: Option<String>,
    },
}

fn scenario(cmd: Cmd, prefix: &str) -> Scenario {
    match cmd {
        Cmd::Seed {
            pipelines,
            versions,
        } => Scenario::Seed {
            pipelines,
            versions,
        },
        Cmd::Create => Scenario::Create,
        Cmd::Get { name } => Scenario::Get {
            name: name.unwrap_or_else(|| format!("{prefix}-0-v0")),
        },
        Cmd::List {
            limit,
            selector,
            full,
        } => Scenario::List {
            limit,
            selector,
            full,
        },
        Cmd::WatchFanout {
            watchers,
            writes,
            rate,
            streams_per_conn,
            settle,
        } => Scenario::WatchFanout {
            watchers,
            writes,
            rate,
            streams_per_conn,
            settle: Duration::from_secs_f64(settle.max(0.0)),
        },
        Cmd::Mixed {
            pipelines,
            versions,
        } => Scenario::Mixed {
            pipelines,
            versions,
        },
        Cmd::KfpList {
            page_size,
            pages,
            sort_by,
            substring,
        } => Scenario::KfpList {
            page_size,
            pages,
            sort_by,
            substring,
        },
    }
}

fn target(path: Option<&PathBuf>, context: Option<&str>) -> Result<Target, String> {
    let path = path.ok_or("no kubeconfig: give --kubeconfig or set KUBECONFIG")?;
    Target::from_kubeconfig(path, context)
}

async fn main_inner(cli: Cli) -> Result<(), String> {
    let g = cli.global;
    let scenario = scenario(cli.scenario, &g.prefix);
    let budget = match (g.count, g.duration) {
        (Some(n), _) => Budget::Count(n),
        (None, Some(d)) => Budget::Duration(Duration::from_secs_f64(d.max(0.0))),
        (None, None) => Budget::Duration(Duration::from_secs(10)),
    };
    let spec_files = if g.specs.is_empty() {
        vec![kfp_conformance::corpus().join("hello_world.yaml")]
    } else {
        g.specs.clone()
    };
    let specs = spec_files
        .iter()
        .map(|p| Spec::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let common = Common {
        namespace: g.namespace.clone(),
        prefix: g.prefix.clone(),
        concurrency: g.concurrency.max(1),
        proto: if g.http2 { Proto::Http2 } else { Proto::Http1 },
        budget,
        specs,
        request_timeout: Duration::from_secs_f64(g.request_timeout.max(0.1)),
    };
    let mut first = target(g.kubeconfig.as_ref(), g.context.as_deref())?;
    first.pids = g.server_pid.clone();
    let mut targets = vec![first];
    if let Some(p) = &g.compare {
        let mut second = target(Some(p), g.compare_context.as_deref())?;
        second.pids = g.compare_pid.clone();
        targets.push(second);
    }
    let mut reports = Vec::new();
    for t in &targets {
        let r = run(t, &common, &scenario).await?;
        if g.json {
            println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
        }
        reports.push(r);
    }
    if !g.json {
        print!("{}", table(&reports, targets.len() == 2));
    }
    if reports.iter().any(|r| r.ok == 0 && r.ops > 0) {
        return Err("no operation succeeded".into());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(main_inner(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kfp-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

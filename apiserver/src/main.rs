//! The `kfp-apiserver` binary: parses the command line and hands over to the library.

use clap::Parser;
use kfp_apiserver::options::{Command, LogFormat, Options};

/// jemalloc instead of glibc's malloc: measured in docs/performance.md (glibc's malloc and free
/// were about 13% of the server's CPU on the GET path; jemalloc cut a GET's and a list page's
/// CPU by 25-30%; mimalloc was similar in CPU and kept 20 MiB more resident at rest).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let opts = Options::parse();
    let code = match opts.command {
        Command::Validate(v) => kfp_apiserver::validate::run(&v, &mut std::io::stdout().lock()),
        Command::Manifest(m) => kfp_apiserver::manifest::run(
            &m,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ),
        Command::Migrate(m) => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(kfp_apiserver::migrate::run(&m, &mut std::io::stdout())),
            Err(e) => {
                eprintln!("kfp-apiserver: cannot start the runtime: {e}");
                2
            }
        },
        Command::Serve(s) => {
            let filter = tracing_subscriber::EnvFilter::try_from_env("KFP_APISERVER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            // Colours only on a terminal: a log file or collector gets plain `key=value` text.
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr);
            match s.log_format {
                LogFormat::Json => builder.json().init(),
                LogFormat::Text => builder.init(),
            }
            // jemalloc purges freed pages on its decay clock only when some thread allocates;
            // its background thread purges them on time, so a server that goes quiet after a
            // burst of list pages or large creates gives the memory back (docs/performance.md).
            if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
                tracing::warn!(error = %e, "jemalloc background purging is off");
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("kfp-apiserver: cannot start the runtime: {e}");
                    std::process::exit(1);
                }
            };
            match runtime.block_on(kfp_apiserver::serve::run(*s)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("kfp-apiserver: {e:#}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}

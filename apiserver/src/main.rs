//! The `kfp-apiserver` binary: parses the command line and hands over to the library.

use clap::Parser;
use kfp_apiserver::options::{Command, LogFormat, Options};

/// mimalloc instead of glibc's malloc: measured in docs/performance.md (allocation was about 13%
/// of the server's CPU on the GET path with glibc, and glibc kept the memory of a burst of list
/// pages resident; mimalloc returns freed pages to the system after a short delay).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let opts = Options::parse();
    let code = match opts.command {
        Command::Validate(v) => kfp_apiserver::validate::run(&v, &mut std::io::stdout().lock()),
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

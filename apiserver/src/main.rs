//! The `kfp-apiserver` binary: parses the command line and hands over to the library.

use clap::Parser;
use kfp_apiserver::options::{Command, LogFormat, Options};

/// jemalloc instead of glibc's malloc: measured in docs/performance.md (glibc's malloc and free
/// were about 13% of the server's CPU on the GET path; jemalloc cut a GET's and a list page's
/// CPU by 25-30%; mimalloc was similar in CPU and kept 20 MiB more resident at rest).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long jemalloc keeps freed pages before its background thread gives them back. Its
/// default, 10 s, kept a list burst's 1.3 MB pages resident for 10 s after the server went
/// quiet; under steady load freed pages are reused long before either clock runs out
/// (docs/performance.md, Memory).
const DIRTY_DECAY_MS: isize = 1_000;

/// Sets jemalloc's dirty-page decay for the arenas made from now on and for those that exist.
fn set_dirty_decay(ms: isize) -> tikv_jemalloc_ctl::Result<()> {
    use tikv_jemalloc_ctl::{Access, AsName};
    b"arenas.dirty_decay_ms\0".name().write(ms)?;
    for i in 0..tikv_jemalloc_ctl::arenas::narenas::read()? {
        // An arena not made yet fails here and takes the default written above when it is.
        let _ = format!("arena.{i}.dirty_decay_ms\0").name().write(ms);
    }
    Ok(())
}

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
            if let Err(e) = set_dirty_decay(DIRTY_DECAY_MS) {
                tracing::warn!(error = %e, "jemalloc keeps freed pages for its default 10 s");
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

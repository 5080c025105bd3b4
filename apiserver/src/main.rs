//! The `kfp-apiserver` binary: parses the command line and hands over to the library.

use clap::Parser;
use kfp_apiserver::options::{Command, Options};

fn main() {
    let opts = Options::parse();
    let code = match opts.command {
        Command::Validate(v) => kfp_apiserver::validate::run(&v, &mut std::io::stdout().lock()),
        Command::Serve(_) => {
            eprintln!("kfp-apiserver serve: not implemented yet");
            2
        }
    };
    std::process::exit(code);
}

//! The `smsgate-ca` binary: parse the command line, set up logging, run, map the result to an
//! exit code (DESIGN §6).

use std::process::ExitCode;

use clap::Parser;
use smsgate_ca::cli::{self, Cli};
use smsgate_ca::error::{status_of, ExitStatus};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbosity = if cli.global.quiet {
        -1
    } else {
        cli.global.verbose as i8
    };
    smsgate_ca::logging::init(cli.global.log_format.unwrap_or_default(), verbosity);
    match cli::run(cli) {
        Ok(status) => status.into(),
        Err(err) => {
            eprintln!("error: {err:#}");
            let status = status_of(&err);
            if status == ExitStatus::Success {
                ExitStatus::Failure.into()
            } else {
                status.into()
            }
        }
    }
}

//! The `smsgate-ca` binary: parse the command line, set up logging, run, map the result to an
//! exit code (DESIGN §6).

use std::process::ExitCode;

use clap::Parser;
use smsgate_ca::cli::{self, Cli};
use smsgate_ca::error::{status_of, ExitStatus};

fn main() -> ExitCode {
    quiet_on_closed_stdout();
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

/// `smsgate-ca list | head` closes stdout early: stop quietly, as a program killed by SIGPIPE
/// would, instead of panicking with a backtrace (the Rust runtime ignores SIGPIPE, so writes
/// fail with EPIPE and `println!` panics).
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.starts_with("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

//! drctl's entry point: parse, set up logging, run, and turn any error into one paragraph and a
//! documented exit code.

use clap::Parser;
use std::io::IsTerminal;

use drctl::cli::{self, Cli, LogFormat};
use drctl::error;

fn main() -> std::process::ExitCode {
    // Like any Unix filter: a closed pipe on stdout (`drctl snapshots | head`) ends the process
    // quietly instead of panicking on the failed write.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    init_tracing(&cli.global);
    let failure_override = cli.command.failure_override();
    match cli::run(cli) {
        Ok(status) => std::process::ExitCode::from(status),
        Err(err) => {
            let (code, hint) = error::classify(&err);
            // A cause may quote a URL or DSN the user gave, with its password.
            eprintln!("error: {}\nhint: {hint}", drctl::redact::credentials(&format!("{err:#}")));
            std::process::ExitCode::from(failure_override.unwrap_or(code as u8))
        }
    }
}

fn init_tracing(global: &cli::GlobalArgs) {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("drctl={level}")));
    let json = match global.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

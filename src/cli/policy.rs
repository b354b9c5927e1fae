use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

use crate::error::ExitCode;
use crate::policy;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check policy files: every key known, every value well formed, and the rules across
    /// sections (a PITR window needs base backups, the RPO must be one the schedules can meet…).
    /// Prints `FILE: valid` for each good file and every problem of the others as
    /// `FILE:LINE:COLUMN: message` with a hint; exits 2 if any file is invalid.
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The policy files (YAML).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(command: PolicyCommand) -> anyhow::Result<u8> {
    let PolicyCommand::Validate(args) = command;
    Ok(validate_each(&args.files, "policy", |file| policy::load(file).map(drop)))
}

/// The policy in `path`; when it is not valid, every problem is printed with the fix, and the
/// caller exits 2.
pub fn load_or_explain(path: &Path) -> Option<policy::Policy> {
    match policy::load(path) {
        Ok(policy) => Some(policy),
        Err(invalid) => {
            eprintln!(
                "{invalid}\nhint: fix the policy (`drctl policy validate {}` lists every problem)",
                path.display()
            );
            None
        }
    }
}

/// Checks each file with `load`: `FILE: valid`, or every problem; exit 2 if any is invalid.
pub fn validate_each(files: &[PathBuf], kind: &str, load: impl Fn(&Path) -> Result<(), policy::Invalid>) -> u8 {
    let mut invalid = 0;
    for file in files {
        match load(file) {
            Ok(()) => println!("{}: valid", file.display()),
            Err(problems) => {
                eprintln!("{problems}");
                invalid += 1;
            }
        }
    }
    if invalid == 0 {
        return ExitCode::Ok as u8;
    }
    eprintln!("{invalid} of {} {kind} files invalid", files.len());
    ExitCode::Usage as u8
}

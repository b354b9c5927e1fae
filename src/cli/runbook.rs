//! `drctl runbook list | show | validate`: the recovery procedures in `runbooks/`.

use clap::{Args, Subcommand};
use std::path::PathBuf;

use crate::error::ExitCode;
use crate::runbook::{self, Runbook, Step};

#[derive(Debug, Subcommand)]
pub enum RunbookCommand {
    /// List the runbooks of the directory, with what each is for.
    List(DirArgs),
    /// Show a runbook: its parameters (type, default or required) and every step.
    Show(ShowArgs),
    /// Check runbook files: every key known, every action and its inputs, every `${parameter}`
    /// defined. Prints `FILE: valid` or every problem as `FILE:LINE:COLUMN: message` with a hint;
    /// exits 2 if any file is invalid.
    Validate(ValidateArgs),
    /// Run a runbook: each step in order (preconditions, confirmation, action with retries),
    /// stopping at the first failed step after its on_failure steps; recorded in the audit log.
    Run(Box<super::runbook_run::RunArgs>),
    /// List the audit log's records; with --verify, prove none was altered or removed.
    Audit(super::runbook_run::AuditArgs),
}

#[derive(Debug, Args)]
pub struct DirArgs {
    /// Where the runbooks are.
    #[arg(long, env = "DRCTL_RUNBOOKS", value_name = "DIR", default_value = "runbooks")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// The runbook's name (its file name without .yaml).
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The runbook files (YAML).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(command: RunbookCommand) -> anyhow::Result<u8> {
    match command {
        RunbookCommand::List(args) => list(&args),
        RunbookCommand::Show(args) => show(&args),
        RunbookCommand::Validate(args) => validate(&args),
        RunbookCommand::Run(args) => super::runbook_run::run(&args),
        RunbookCommand::Audit(args) => super::runbook_run::audit(&args),
    }
}

/// A runbook of `dir` by name; `None` after printing its problems when it is invalid.
pub(super) fn load(dir: &std::path::Path, name: &str) -> anyhow::Result<Option<Runbook>> {
    let Some(file) = runbook::find(dir, name).map_err(|e| unreadable(dir, e))? else {
        let names: Vec<String> = files(dir)?.iter().map(|f| stem(f)).collect();
        return Err(crate::ops::Error::Usage(format!(
            "no runbook `{name}` in {} (there: {})",
            dir.display(),
            names.join(", ")
        ))
        .into());
    };
    match runbook::load(&file) {
        Ok(r) => Ok(Some(r)),
        Err(invalid) => {
            eprintln!("{invalid}");
            Ok(None)
        }
    }
}

fn list(args: &DirArgs) -> anyhow::Result<u8> {
    let files = files(&args.dir)?;
    let mut invalid = 0;
    for file in &files {
        match runbook::load(file) {
            Ok(r) => println!("{:<28} {}", r.name, r.description),
            Err(_) => {
                println!("{:<28} INVALID: see `drctl runbook validate {}`", stem(file), file.display());
                invalid += 1;
            }
        }
    }
    Ok(if invalid == 0 { ExitCode::Ok as u8 } else { ExitCode::Usage as u8 })
}

fn show(args: &ShowArgs) -> anyhow::Result<u8> {
    let Some(r) = load(&args.dir.dir, &args.name)? else { return Ok(ExitCode::Usage as u8) };
    println!("{}: {}\n\nparameters:", r.name, r.description);
    for p in &r.parameters {
        let default = match (&p.default, p.secret) {
            (None, _) => "required".to_string(),
            (Some(_), true) => "default: (secret)".to_string(),
            (Some(d), false) => format!("default: {d}"),
        };
        println!("  {:<20} {:<9} {default:<24} {}", p.name, format!("{:?}", p.kind).to_lowercase(), p.description);
    }
    println!("\nsteps:");
    for (i, step) in r.steps.iter().enumerate() {
        print_step(&format!("{}.", i + 1), step, 2);
    }
    Ok(ExitCode::Ok as u8)
}

fn print_step(number: &str, step: &Step, indent: usize) {
    let pad = " ".repeat(indent);
    let mut flags = vec![format!("timeout {}", humantime::format_duration(step.timeout.to_std().unwrap_or_default()))];
    if step.retries > 0 {
        flags.push(format!("{} retries", step.retries));
    }
    if step.confirm {
        flags.push("asks for confirmation".into());
    }
    println!("{pad}{number} {} [{}] ({})", step.name, step.action.name(), flags.join(", "));
    for (key, value) in &step.with {
        println!("{pad}     {key}: {value}");
    }
    for check in &step.preconditions {
        print_step("before:", check, indent + 5);
    }
    for fallback in &step.on_failure {
        print_step("on failure:", fallback, indent + 5);
    }
}

fn validate(args: &ValidateArgs) -> anyhow::Result<u8> {
    Ok(super::policy::validate_each(&args.files, "runbook", |file| runbook::load(file).map(drop)))
}

fn files(dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    Ok(runbook::files_in(dir).map_err(|e| unreadable(dir, e))?)
}

fn unreadable(dir: &std::path::Path, e: std::io::Error) -> crate::ops::Error {
    crate::ops::Error::Usage(format!(
        "cannot read the runbook directory {}: {e} (give --dir or DRCTL_RUNBOOKS)",
        dir.display()
    ))
}

fn stem(file: &std::path::Path) -> String {
    file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

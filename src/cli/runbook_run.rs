//! `drctl runbook run` and `drctl runbook audit`: a runbook run step by step at the terminal, and
//! its audit log.

use clap::Args;
use std::path::PathBuf;

use crate::error::ExitCode;
use crate::runbook;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub dir: super::runbook::DirArgs,
    /// The runbook's name (its file name without .yaml).
    pub name: String,
    /// A parameter's value (repeatable): `--param standby_dsn="host=… port=…"`.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Take up run RUN (from `drctl runbook audit`) that stopped: its steps that succeeded are not
    /// run again, and a step it stopped in is checked first for having happened already.
    /// Parameters come from that run; give again the secret ones (recorded as ***).
    #[arg(long, value_name = "RUN", conflicts_with = "dry_run")]
    pub resume: Option<String>,
    /// Resolve every parameter, evaluate every precondition and gate, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Answer yes to every confirmation and approval (for automation; a person should read the
    /// dry run first).
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub audit: AuditLogArgs,
    /// How to open the repositories steps name (their location comes from the runbook).
    #[command(flatten)]
    pub access: super::AccessArgs,
}

#[derive(Debug, Args)]
pub struct AuditLogArgs {
    /// The audit log (JSON lines, hash-chained; created 0600).
    #[arg(long = "audit-log", env = "DRCTL_AUDIT_LOG", value_name = "FILE", default_value_os_t = default_audit_log())]
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub audit: AuditLogArgs,
    /// Prove the chain: exit 3 at the first record altered, removed or inserted.
    #[arg(long)]
    pub verify: bool,
}

pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let Some(r) = super::runbook::load(&args.dir.dir, &args.name)? else { return Ok(ExitCode::Usage as u8) };
    let access = |location: &str| args.access.access(location);
    let options = runbook::RunOptions {
        params: args.params.clone(),
        dry_run: args.dry_run,
        yes: args.yes,
        audit_log: args.audit.path.clone(),
        resume: args.resume.clone(),
        access: &access,
    };
    println!(
        "runbook {}{}: {}",
        r.name,
        if args.dry_run { " (dry run: nothing is changed)" } else { "" },
        r.description
    );
    runbook::run(&r, &options, &mut Terminal)?;
    println!("runbook {}: {}", r.name, if args.dry_run { "every step can be tried" } else { "every step succeeded" });
    Ok(ExitCode::Ok as u8)
}

pub fn audit(args: &AuditArgs) -> anyhow::Result<u8> {
    match runbook::audit::verify(&args.audit.path) {
        Ok(records) => {
            for r in &records {
                let field = |k: &str| {
                    r.get(k).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).unwrap_or_default()
                };
                println!(
                    "{} {} {} {} {} {}",
                    field("time"),
                    field("run"),
                    field("runbook"),
                    field("event"),
                    field("step"),
                    field("result")
                );
            }
            if args.verify {
                println!("{}: {} records, the chain is whole", args.audit.path.display(), records.len());
            }
            Ok(ExitCode::Ok as u8)
        }
        Err(why) if args.verify => {
            eprintln!(
                "error: the audit log {} is not whole: {why}\nhint: restore it from a copy; records after the break cannot be trusted",
                args.audit.path.display()
            );
            Ok(ExitCode::Damaged as u8)
        }
        Err(why) => Err(crate::ops::Error::Usage(format!("cannot list the audit log: {why}")).into()),
    }
}

/// The terminal as a run's [`runbook::Ui`]: lines on stdout, questions answered on stdin.
struct Terminal;

impl runbook::Ui for Terminal {
    fn say(&mut self, line: &str) {
        println!("{line}");
    }

    fn confirm(&mut self, question: &str) -> bool {
        use std::io::{IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            println!("{question} (no terminal to answer: give --yes)");
            return false;
        }
        print!("{question} [y/N] ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "yes")
    }
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))
}

fn default_audit_log() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    state.join("drctl/runbook-audit.jsonl")
}

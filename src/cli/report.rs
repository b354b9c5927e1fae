//! `drctl report`: a compliance report of a policy over a period, built from the repositories'
//! evidence (Markdown, one self-contained HTML file, or JSON), sealed; `drctl report verify`
//! proves a report file unedited.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;

use super::{AccessArgs, GlobalArgs};
use crate::error::ExitCode;
use crate::ops::policy_repos;
use crate::report::{self, Format, Period, Status, seal};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: Option<ReportCommand>,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Check a report's seal with the key of the policy's primary repository: exit 0 when the
    /// file is exactly as drctl wrote it, 3 when it was edited.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The policy to report on: its repositories hold the evidence, its schedules, retention and
    /// targets are what the evidence is judged against.
    #[arg(long, value_name = "FILE", required = true)]
    pub policy: Option<PathBuf>,
    /// The period: a quarter (2026-Q3), a month (2026-11), a day (2026-11-20), a year (2026),
    /// or FROM..TO (dates, TO included, or times).
    #[arg(long, value_name = "PERIOD", required = true, value_parser = Period::parse)]
    pub period: Option<Period>,
    /// md (for git), html (one self-contained file with charts) or json
    /// (docs/report.schema.json).
    #[arg(long, value_enum, default_value_t = Format::Md)]
    pub format: Format,
    /// Write the report to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub access: AccessArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The report file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The policy whose primary repository sealed it.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    #[command(flatten)]
    pub access: AccessArgs,
}

pub fn run(args: ReportArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    match args.command {
        Some(ReportCommand::Verify(v)) => verify(v, global),
        None => build(args.build, global),
    }
}

fn build(args: BuildArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let path = args.policy.as_deref().expect("clap requires --policy");
    let period = args.period.as_ref().expect("clap requires --period");
    let Some(policy) = super::policy::load_or_explain(path) else { return Ok(ExitCode::Usage as u8) };
    let built = report::build(&policy, period, &args.access.reach(), chrono::Utc::now())?;
    let text = built.render(args.format);
    match &args.out {
        Some(out) => {
            std::fs::write(out, &text).with_context(|| format!("cannot write the report to {}", out.display()))?;
            if !global.quiet {
                let s = &built.report.summary;
                println!(
                    "report of {} for {} written to {}: {} PASS, {} FAIL, {} NO-EVIDENCE",
                    policy.name,
                    period.label,
                    out.display(),
                    s.pass,
                    s.fail,
                    s.no_evidence
                );
            }
        }
        None => print!("{text}"),
    }
    let failed: Vec<&report::Control> = built.report.controls.iter().filter(|c| c.status == Status::Fail).collect();
    for c in &failed {
        eprintln!("FAIL {}: {}", c.id, c.finding);
    }
    Ok(if failed.is_empty() { ExitCode::Ok as u8 } else { ExitCode::Check as u8 })
}

fn verify(args: VerifyArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read the report {}", args.file.display()))?;
    let Some(policy) = super::policy::load_or_explain(&args.policy) else { return Ok(ExitCode::Usage as u8) };
    let repo = policy_repos::open(&policy.repositories.primary, &args.access.reach())?;
    let sealed_by = seal::repository_of(&text);
    if sealed_by.as_deref().is_some_and(|id| id != repo.config().id) {
        eprintln!(
            "error: {} was sealed by repository {}, not by {} (policy {}): verify it with the policy whose primary \
             repository made it",
            args.file.display(),
            &sealed_by.unwrap_or_default()[..16],
            &repo.config().id[..16],
            policy.name
        );
        return Ok(ExitCode::Damaged as u8);
    }
    match seal::verify(&text, |d| repo.report_mac(d)) {
        Ok(()) => {
            if !global.quiet {
                println!("{}: the seal matches: the report is as drctl wrote it", args.file.display());
            }
            Ok(ExitCode::Ok as u8)
        }
        Err(why) => {
            eprintln!("error: {}: {why}", args.file.display());
            Ok(ExitCode::Damaged as u8)
        }
    }
}

//! `drctl heartbeat --policy FILE [--every DURATION]`: heartbeat rows in the policy's database,
//! which drills measure their RPO with.

use clap::Args;
use std::path::PathBuf;

use super::GlobalArgs;
use crate::error::ExitCode;
use crate::ops;

#[derive(Debug, Args)]
pub struct HeartbeatArgs {
    /// The policy whose database gets the row (its `database` connection; the table
    /// drctl.heartbeat is created there if missing).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Keep writing one row every DURATION until stopped; a failed write is logged and the next
    /// one tried, so a restart of the database does not end the heartbeat. Without it: one row,
    /// and the exit code says whether it was written.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    pub every: Option<chrono::Duration>,
}

pub fn run(args: HeartbeatArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let Some(policy) = super::policy::load_or_explain(&args.policy) else { return Ok(ExitCode::Usage as u8) };
    let Some(every) = args.every.and_then(|d| d.to_std().ok()) else {
        let at = ops::heartbeat::beat(&policy)?;
        if !global.quiet {
            println!("heartbeat written into {}'s database at {}", policy.name, at.to_rfc3339());
        }
        return Ok(ExitCode::Ok as u8);
    };
    loop {
        let next = std::time::Instant::now() + every;
        match ops::heartbeat::beat(&policy) {
            Ok(at) => tracing::info!(policy = %policy.name, at = %at.to_rfc3339(), "heartbeat written"),
            Err(e) => tracing::error!(policy = %policy.name, error = %ops::with_causes(&e), "heartbeat not written"),
        }
        std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
    }
}

use clap::Args;
use std::path::PathBuf;

use super::job::MetricsArgs;
use super::{GlobalArgs, LogFormat};
use crate::error::ExitCode;
use crate::schedule::{self, ScheduleOptions};

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// The directory of policy files (*.yaml, *.yml), read at start; restart to pick up changes.
    #[arg(long, value_name = "DIR")]
    pub policies: PathBuf,
    /// Serve /metrics (Prometheus) and /healthz on this address, e.g. 0.0.0.0:9187.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Also run each policy's job when this long has passed since its previous one started
    /// (`0s`: only at fire times), so the copies receive new WAL and the metrics stay fresh
    /// between a policy's scheduled runs.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = super::parse_duration)]
    pub every: chrono::Duration,
    /// Stop a job that runs longer than this (SIGTERM, SIGKILL a minute later); its policy's
    /// next fire time runs it again.
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = super::parse_duration)]
    pub job_timeout: chrono::Duration,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

pub fn run(args: ScheduleArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let mut job_args = Vec::new();
    let format = match global.log_format {
        LogFormat::Auto => "auto",
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    job_args.extend(["--log-format".to_string(), format.to_string()]);
    if global.verbose > 0 {
        job_args.push(format!("-{}", "v".repeat(global.verbose.into())));
    }
    let options = ScheduleOptions {
        policies_dir: args.policies,
        listen: args.listen,
        program: std::env::current_exe()?,
        job_args,
        pushgateway: args.metrics.pushgateway,
        metrics_file: args.metrics.metrics_file,
        every: args.every.to_std().ok().filter(|every| !every.is_zero()),
        job_timeout: args.job_timeout.to_std().unwrap_or(std::time::Duration::MAX),
    };
    match schedule::run(options) {
        Ok(()) => Ok(ExitCode::Ok as u8),
        Err(schedule::Error::Invalid(invalid)) => {
            eprintln!(
                "{invalid}\nhint: fix the policy (`drctl policy validate` lists every problem), then start again"
            );
            Ok(ExitCode::Usage as u8)
        }
        Err(e @ schedule::Error::Clash { .. }) => {
            eprintln!("error: {e}\nhint: give each policy its own name and primary repository location");
            Ok(ExitCode::Usage as u8)
        }
        Err(e @ (schedule::Error::Dir { .. } | schedule::Error::NoPolicies(_))) => {
            eprintln!("error: {e}\nhint: give --policies the directory holding the policy files (a mounted ConfigMap)");
            Ok(ExitCode::Usage as u8)
        }
        Err(e @ schedule::Error::Listen { .. }) => {
            eprintln!("error: {e}\nhint: give --listen a free HOST:PORT (e.g. 0.0.0.0:9187), or leave it out");
            Ok(ExitCode::Usage as u8)
        }
        Err(e) => Err(e.into()),
    }
}

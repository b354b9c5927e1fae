use clap::Args;
use std::path::PathBuf;

use super::{GlobalArgs, LogFormat, MetricsArgs};
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
    if let Some(gateway) = &args.metrics.pushgateway {
        job_args.extend(["--pushgateway".to_string(), gateway.clone()]);
    }
    let options = ScheduleOptions {
        policies_dir: args.policies,
        listen: args.listen,
        program: std::env::current_exe()?,
        job_args,
        metrics_file: args.metrics.metrics_file,
    };
    match schedule::run(options) {
        Ok(()) => Ok(ExitCode::Ok as u8),
        Err(schedule::Error::Invalid(invalid)) => {
            eprintln!(
                "{invalid}\nhint: fix the policy (`drctl policy validate` lists every problem), then start again"
            );
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

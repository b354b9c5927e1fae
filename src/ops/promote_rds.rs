//! Promoting an RDS read replica behind gates of the same kind as a self-managed standby's: it
//! must be a read replica, available, its source no longer writable (two writable instances split
//! the data), and its replica lag (CloudWatch's, in seconds) within bounds. Then
//! `PromoteReadReplica`, a wait until RDS reports a standalone available instance, and, where
//! its endpoint can be reached, a SQL check that it takes writes.

use std::time::{Duration, Instant};

use super::promote::{Gate, Lag, gate, lag_seconds, verdict};
use super::{Error, Result};
use crate::aws::rds_instance::{Instance, Instances, arn_region};
use crate::pg::Conn;
use crate::pg::sql::Session;

/// Which replica to promote and how careful to be.
#[derive(Debug, Clone)]
pub struct RdsPromoteOptions {
    pub instance: String,
    pub region: String,
    /// Take the source instance as fenced without looking (clients were cut off from it).
    pub assume_fenced: bool,
    /// The most replica lag accepted.
    pub max_lag_seconds: f64,
    /// Promote though CloudWatch has no current lag figure (the source region is down).
    pub accept_unknown_lag: bool,
    /// The promoted instance's endpoint, checked to take writes.
    pub verify: Option<Conn>,
    pub dry_run: bool,
    /// How long RDS may take to promote, and the endpoint to answer.
    pub wait: Duration,
}

/// What promotion found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RdsPromotion {
    pub gates: Vec<Gate>,
    pub dry_run: bool,
    pub promoted: bool,
    pub instance: String,
    pub region: String,
    /// The instance it replicated.
    pub replica_of: Option<String>,
    /// CloudWatch's newest `ReplicaLag` when the gates were evaluated.
    pub replica_lag_seconds: Option<f64>,
    /// `PromoteReadReplica` to RDS reporting a standalone available instance.
    pub promote_seconds: Option<f64>,
    pub endpoint: Option<String>,
    /// What the SQL check of `--verify-dsn` saw.
    pub verified: Option<String>,
    pub total_seconds: f64,
}

impl RdsPromotion {
    pub fn refusals(&self) -> Vec<&Gate> {
        self.gates.iter().filter(|g| !g.passed).collect()
    }
}

/// The lag bound of an RDS promotion among `lags` (30 s when none is given): RDS reports a
/// replica's lag in seconds only, so a size is refused.
pub fn max_lag_seconds(lags: &[Lag]) -> std::result::Result<f64, String> {
    if lags.iter().any(|l| matches!(l, Lag::Bytes(_))) {
        return Err("RDS reports a read replica's lag in seconds only: give the bound as a duration (30s)".into());
    }
    Ok(lag_seconds(lags).unwrap_or(30.0))
}

/// Evaluates the gates and, unless one refuses or this is a dry run, promotes. A refusal is
/// [`Error::Refused`] after `report` has seen the gates; no mutating call was made then.
pub fn promote(options: &RdsPromoteOptions, report: &mut dyn FnMut(&RdsPromotion)) -> Result<RdsPromotion> {
    let started = Instant::now();
    let rds = Instances::connect(&options.region)?;
    let Some(replica) = rds.describe(&options.instance)? else {
        return Err(Error::Usage(format!(
            "there is no DB instance {} in {}: give --rds-instance the read replica's identifier and --region its \
             region",
            options.instance, options.region
        )));
    };
    let lag = match replica.replica_of {
        Some(_) => rds.replica_lag(&options.instance)?,
        None => None,
    };
    let mut promotion = RdsPromotion {
        dry_run: options.dry_run,
        instance: options.instance.clone(),
        region: options.region.clone(),
        replica_of: replica.replica_of.clone(),
        replica_lag_seconds: lag,
        endpoint: replica.endpoint.clone(),
        ..Default::default()
    };
    promotion.gates = vec![
        gate(
            "a read replica",
            replica.replica_of.is_some(),
            match &replica.replica_of {
                Some(source) => format!("it replicates {source}"),
                None => "it replicates nothing: it is a standalone instance".into(),
            },
            "give --rds-instance the read replica; this instance is no replica (promoted already?)",
        ),
        gate(
            "available",
            replica.available(),
            format!("status {}", replica.status),
            "wait until the replica is available (see its events: `aws rds describe-events`), then promote again",
        ),
        fence_gate(&rds, options, &replica),
        lag_gate(options, lag),
    ];
    if !promotion.refusals().is_empty() || options.dry_run {
        promotion.total_seconds = started.elapsed().as_secs_f64();
        report(&promotion);
        return verdict(&promotion.gates).map(|()| promotion);
    }

    let asked = Instant::now();
    let answer = rds.promote(&options.instance)?;
    promotion.promoted = true;
    // RDS answers `modifying` and lists no source once done. A compatible service that promotes
    // at once answers `available` and may keep listing the source; the SQL check below is then
    // the proof.
    let at_once = answer.is_some_and(|i| i.available());
    let promoted = rds.wait(&options.instance, options.wait, |i| i.replica_of.is_none() || at_once)?;
    promotion.promote_seconds = Some(asked.elapsed().as_secs_f64());
    promotion.endpoint = promoted.endpoint.clone();
    if let Some(conn) = &options.verify {
        promotion.verified = Some(verify(conn, options.wait)?);
    }
    promotion.total_seconds = started.elapsed().as_secs_f64();
    report(&promotion);
    Ok(promotion)
}

/// The replica's source takes no writes: stopped, gone, or the operator says so. A source whose
/// region does not answer cannot be told apart from one that still takes writes there.
fn fence_gate(rds: &Instances, options: &RdsPromoteOptions, replica: &Instance) -> Gate {
    let fix = "stop writes to the source (`aws rds stop-db-instance`, or cut its clients off), or give \
               --assume-fenced if it is lost or shut off by other means; two writable instances split the data";
    if options.assume_fenced {
        return gate("old primary fenced", true, "assumed (--assume-fenced)".into(), fix);
    }
    let Some(source) = &replica.replica_of else {
        return gate("old primary fenced", true, "no source: nothing to fence".into(), fix);
    };
    let region = arn_region(source).unwrap_or(rds.region());
    let seen = match region == rds.region() {
        true => rds.describe(source),
        false => Instances::connect(region).and_then(|other| other.describe(source)),
    };
    let (passed, measured) = match seen {
        Ok(None) => (true, format!("{source} is gone")),
        Ok(Some(s)) if matches!(s.status.as_str(), "stopped" | "stopping" | "deleting") => {
            (true, format!("{source} is {}", s.status))
        }
        Ok(Some(s)) => (false, format!("{source} is {} and may take writes", s.status)),
        Err(e) => (false, format!("cannot tell: {e}")),
    };
    gate("old primary fenced", passed, measured, fix)
}

fn lag_gate(options: &RdsPromoteOptions, lag: Option<f64>) -> Gate {
    let max = options.max_lag_seconds;
    let (passed, measured) = match lag {
        Some(lag) => (lag <= max, format!("ReplicaLag {lag:.0} s (at most {max:.0} s allowed)")),
        None if options.accept_unknown_lag => {
            (true, "unknown: CloudWatch has no current ReplicaLag (accepted by --accept-unknown-lag)".into())
        }
        None => {
            (false, "unknown: CloudWatch has no ReplicaLag of the last 5 minutes, or replication is not running".into())
        }
    };
    gate(
        "replica lag",
        passed,
        measured,
        "wait for the replica to catch up (CloudWatch ReplicaLag), raise --max-lag if losing that much is \
         acceptable, or give --accept-unknown-lag when the source is lost and its lag can no longer be known",
    )
}

/// Connects to the promoted instance until it is out of recovery and takes writes (its DNS and
/// its last replay may take a moment), for at most `wait`.
fn verify(conn: &Conn, wait: Duration) -> Result<String> {
    let started = Instant::now();
    loop {
        let seen = Session::connect(conn, Duration::from_secs(10)).and_then(|mut session| {
            let recovering: bool = session.value("SELECT pg_is_in_recovery()")?;
            let read_only: String = session.value("SELECT current_setting('transaction_read_only')")?;
            Ok((recovering, read_only))
        });
        match seen {
            Ok((false, read_only)) if read_only == "off" => {
                return Ok(format!("answers SQL and takes writes after {:.1} s", started.elapsed().as_secs_f64()));
            }
            _ if started.elapsed() < wait => std::thread::sleep(Duration::from_secs(2)),
            Ok((recovering, read_only)) => {
                return Err(Error::Promotion(format!(
                    "RDS reports the instance promoted, but its endpoint still answers pg_is_in_recovery() = \
                     {recovering}, transaction_read_only = {read_only} after {}: check that --verify-dsn names the \
                     promoted instance",
                    humantime::format_duration(Duration::from_secs(wait.as_secs()))
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

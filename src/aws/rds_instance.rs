//! RDS DB instances in recovery: a read replica promoted, a new instance restored to a point in
//! time or from a snapshot (the DR-region copy), each waited on until RDS says it is done.
//!
//! - A new instance is never placed with RDS's defaults: without a subnet group it lands in the
//!   default VPC, without security groups in the VPC's default group (open to everything in it),
//!   and with a `default.*` parameter group it loses the service's settings. [`Placement`]
//!   refuses all three before any call.
//! - Replica lag is CloudWatch's `ReplicaLag` (seconds) of the replica: RDS publishes no byte
//!   figure for a PostgreSQL read replica.
//! - `AWS_ENDPOINT_URL_RDS` and `AWS_ENDPOINT_URL_CLOUDWATCH` (the SDK's own settings) point the
//!   clients at compatible services.

use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_rds::types::DbInstance;
use chrono::{DateTime, Utc};

use super::rds::RdsError;

/// How often an instance RDS is still working on is looked at again.
const POLL: Duration = Duration::from_secs(10);
/// How far back a `ReplicaLag` datapoint counts as current (RDS publishes one a minute).
const LAG_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// An instance as recovery needs to know it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Instance {
    pub id: String,
    pub arn: Option<String>,
    pub status: String,
    /// The instance it replicates (an identifier, or an ARN across regions), while a read replica.
    pub replica_of: Option<String>,
    /// `host:port`, once RDS has given it one.
    pub endpoint: Option<String>,
    pub engine: Option<String>,
    pub subnet_group: Option<String>,
    pub security_groups: Vec<String>,
    pub parameter_groups: Vec<String>,
    /// The newest moment RDS can restore it to (its automated backups and transaction logs).
    pub latest_restorable: Option<DateTime<Utc>>,
}

impl Instance {
    pub fn available(&self) -> bool {
        self.status == "available"
    }
}

/// Where a new instance goes and what it runs with: all three set, none of them RDS's default.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub subnet_group: String,
    pub security_groups: Vec<String>,
    pub parameter_group: String,
    /// The instance class; `None`: the source's.
    pub instance_class: Option<String>,
}

impl Placement {
    /// Refuses a placement that would fall back to RDS's defaults, naming what to set.
    pub fn check(&self) -> Result<(), String> {
        let mut missing = Vec::new();
        if self.subnet_group.trim().is_empty() {
            missing.push("a DB subnet group (else RDS uses the default VPC)");
        }
        if self.security_groups.iter().all(|g| g.trim().is_empty()) {
            missing.push("security groups (else RDS uses the VPC's default group, open to all of the VPC)");
        }
        if self.parameter_group.trim().is_empty() {
            missing.push("a parameter group (else RDS uses its default one, without the service's settings)");
        }
        if !missing.is_empty() {
            return Err(format!(
                "the new instance's placement is not complete: set {}; a restored instance must land where the \
                 service's network and settings are",
                missing.join(", ")
            ));
        }
        if self.parameter_group.starts_with("default.") {
            return Err(format!(
                "parameter group {} is RDS's default: name the service's own parameter group",
                self.parameter_group
            ));
        }
        if self.security_groups.iter().any(|g| g == "default") {
            return Err("security group `default` is the VPC's default group: name the service's own groups".into());
        }
        Ok(())
    }
}

/// RDS (and CloudWatch for replica lag) in one region.
pub struct Instances {
    region: String,
    rds: aws_sdk_rds::Client,
    metrics: aws_sdk_cloudwatch::Client,
    runtime: tokio::runtime::Runtime,
}

impl Instances {
    /// Clients for `region`. Makes no call.
    pub fn connect(region: &str) -> Result<Instances, RdsError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| RdsError {
            region: region.to_string(),
            what: "setup".into(),
            detail: format!("cannot start the I/O runtime: {e}"),
        })?;
        let shared = super::sdk::load(&runtime, Some(region));
        Ok(Instances {
            region: region.to_string(),
            rds: aws_sdk_rds::Client::new(&shared),
            metrics: aws_sdk_cloudwatch::Client::new(&shared),
            runtime,
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The instance `id` (an identifier, or an ARN), or `None` when there is none.
    pub fn describe(&self, id: &str) -> Result<Option<Instance>, RdsError> {
        let what = format!("DescribeDBInstances of {id}");
        let request = self.rds.describe_db_instances().db_instance_identifier(id);
        match self.runtime.block_on(request.send()) {
            Ok(out) => Ok(out.db_instances().first().map(instance)),
            Err(e) if e.code() == Some("DBInstanceNotFound") => Ok(None),
            Err(e) => Err(self.explain(&what, "rds:DescribeDBInstances", e)),
        }
    }

    /// The replica's newest `ReplicaLag` in seconds within the last few minutes; `None` when
    /// CloudWatch has none, or says replication is not running (RDS reports -1 then).
    pub fn replica_lag(&self, id: &str) -> Result<Option<f64>, RdsError> {
        let now = Utc::now();
        let request = self
            .metrics
            .get_metric_statistics()
            .namespace("AWS/RDS")
            .metric_name("ReplicaLag")
            .dimensions(Dimension::builder().name("DBInstanceIdentifier").value(id).build())
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs((now - LAG_WINDOW).timestamp()))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(now.timestamp() + 60))
            .period(60)
            .statistics(Statistic::Maximum);
        let out = self.runtime.block_on(request.send()).map_err(|e| {
            let detail = super::explain(
                &e,
                "CloudWatch",
                "AWS_ENDPOINT_URL_CLOUDWATCH",
                "cloudwatch:GetMetricStatistics",
                |_, _| None,
            )
            .unwrap_or_else(|| format!("GetMetricStatistics refused ({})", super::cause(&e)));
            self.fail(&format!("ReplicaLag of {id}"), &detail)
        })?;
        let newest =
            out.datapoints().iter().filter(|d| d.timestamp().is_some()).max_by_key(|d| d.timestamp().map(|t| t.secs()));
        Ok(newest.and_then(|d| d.maximum()).filter(|lag| *lag >= 0.0))
    }

    /// Asks RDS to promote the read replica `id`; returns the instance as RDS answered (RDS says
    /// `modifying` while it promotes); [`Instances::wait`] sees it done.
    pub fn promote(&self, id: &str) -> Result<Option<Instance>, RdsError> {
        let request = self.rds.promote_read_replica().db_instance_identifier(id);
        let out = self
            .runtime
            .block_on(request.send())
            .map_err(|e| self.explain(&format!("PromoteReadReplica of {id}"), "rds:PromoteReadReplica", e))?;
        Ok(out.db_instance().map(instance))
    }

    /// Asks RDS for a new instance `target`, `source` restored to `at` (`None`: its latest
    /// restorable time), placed as `placement` says (checked first), carrying `tags`.
    pub fn restore_to_point_in_time(
        &self,
        source: &str,
        target: &str,
        at: Option<DateTime<Utc>>,
        placement: &Placement,
        tags: &[(&str, &str)],
    ) -> Result<(), RdsError> {
        let what = format!("RestoreDBInstanceToPointInTime of {source} into {target}");
        placement.check().map_err(|detail| self.fail(&what, &detail))?;
        let request = self
            .rds
            .restore_db_instance_to_point_in_time()
            .source_db_instance_identifier(source)
            .target_db_instance_identifier(target)
            .set_restore_time(at.map(|t| aws_sdk_rds::primitives::DateTime::from_secs(t.timestamp())))
            .use_latest_restorable_time(at.is_none())
            .db_subnet_group_name(&placement.subnet_group)
            .set_vpc_security_group_ids(Some(placement.security_groups.clone()))
            .db_parameter_group_name(&placement.parameter_group)
            .set_db_instance_class(placement.instance_class.clone())
            .set_tags((!tags.is_empty()).then(|| {
                tags.iter().map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(*k).value(*v).build()).collect()
            }));
        self.runtime
            .block_on(request.send())
            .map_err(|e| self.explain(&what, "rds:RestoreDBInstanceToPointInTime (and rds:AddTagsToResource)", e))?;
        Ok(())
    }

    /// Asks RDS for a new instance `target` from `snapshot` (an identifier or ARN in this
    /// region), placed as `placement` says (checked first).
    pub fn restore_from_snapshot(&self, snapshot: &str, target: &str, placement: &Placement) -> Result<(), RdsError> {
        let what = format!("RestoreDBInstanceFromDBSnapshot of {snapshot} into {target}");
        placement.check().map_err(|detail| self.fail(&what, &detail))?;
        let request = self
            .rds
            .restore_db_instance_from_db_snapshot()
            .db_snapshot_identifier(snapshot)
            .db_instance_identifier(target)
            .db_subnet_group_name(&placement.subnet_group)
            .set_vpc_security_group_ids(Some(placement.security_groups.clone()))
            .db_parameter_group_name(&placement.parameter_group)
            .set_db_instance_class(placement.instance_class.clone());
        self.runtime
            .block_on(request.send())
            .map_err(|e| self.explain(&what, "rds:RestoreDBInstanceFromDBSnapshot", e))?;
        Ok(())
    }

    /// Polls `id` until it is available and `done` says the change went through (RDS may still
    /// say `available` for a moment after it was asked), for at most `limit`.
    pub fn wait(&self, id: &str, limit: Duration, done: impl Fn(&Instance) -> bool) -> Result<Instance, RdsError> {
        self.wait_unless(id, limit, done, &|| false)
    }

    /// [`Instances::wait`] that gives up, within a second, once `stop` says so (a signal).
    pub fn wait_unless(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&Instance) -> bool,
        stop: &dyn Fn() -> bool,
    ) -> Result<Instance, RdsError> {
        let started = Instant::now();
        let what = format!("instance {id}");
        loop {
            if stop() {
                return Err(self.fail(&what, "the wait was interrupted"));
            }
            let seen = self.describe(id)?;
            match &seen {
                Some(i) if i.available() && done(i) => return Ok(i.clone()),
                Some(i)
                    if matches!(
                        i.status.as_str(),
                        "failed" | "deleting" | "incompatible-restore" | "incompatible-parameters"
                    ) =>
                {
                    return Err(self.fail(
                        &what,
                        &format!("RDS reports it {}: see its events (aws rds describe-events) for why", i.status),
                    ));
                }
                _ => {}
            }
            if started.elapsed() >= limit {
                let status = seen.map_or("not there".to_string(), |i| i.status);
                return Err(self.fail(
                    &what,
                    &format!(
                        "still {status} after {}: RDS may yet finish; look at it in the console, then run again (a \
                         runbook run resumes with --resume)",
                        humantime::format_duration(Duration::from_secs(limit.as_secs()))
                    ),
                ));
            }
            let next = Instant::now() + POLL.min(limit.saturating_sub(started.elapsed()));
            while Instant::now() < next && !stop() {
                std::thread::sleep(Duration::from_secs(1).min(next.saturating_duration_since(Instant::now())));
            }
        }
    }

    /// Asks RDS to delete `id` for good: no final snapshot, its automated backups deleted with it
    /// (for scratch instances, which hold nothing worth keeping). [`Instances::wait_gone`] sees
    /// it done.
    pub fn delete(&self, id: &str) -> Result<(), RdsError> {
        let request = self
            .rds
            .delete_db_instance()
            .db_instance_identifier(id)
            .skip_final_snapshot(true)
            .delete_automated_backups(true);
        self.runtime
            .block_on(request.send())
            .map_err(|e| self.explain(&format!("DeleteDBInstance of {id}"), "rds:DeleteDBInstance", e))?;
        Ok(())
    }

    /// Polls `id` until RDS no longer lists it, for at most `limit`.
    pub fn wait_gone(&self, id: &str, limit: Duration) -> Result<(), RdsError> {
        let started = Instant::now();
        loop {
            let Some(seen) = self.describe(id)? else { return Ok(()) };
            if started.elapsed() >= limit {
                return Err(self.fail(
                    &format!("instance {id}"),
                    &format!(
                        "still {} after {}: RDS may yet delete it; look at it in the console",
                        seen.status,
                        humantime::format_duration(Duration::from_secs(limit.as_secs()))
                    ),
                ));
            }
            std::thread::sleep(POLL.min(limit.saturating_sub(started.elapsed())));
        }
    }

    /// The newest available manual snapshot drctl made for `policy` in this region (the DR
    /// copy there), by its tag.
    pub fn newest_drctl_snapshot(&self, policy: &str) -> Result<Option<String>, RdsError> {
        let what = format!("DescribeDBSnapshots (drctl's snapshots of policy {policy})");
        let mut pages = self.rds.describe_db_snapshots().snapshot_type("manual").into_paginator().items().send();
        let mut newest: Option<(i64, String)> = None;
        while let Some(item) = self.runtime.block_on(pages.next()) {
            let s = item.map_err(|e| self.explain(&what, "rds:DescribeDBSnapshots", e))?;
            let ours =
                s.tag_list().iter().any(|t| t.key() == Some(super::rds::POLICY_TAG) && t.value() == Some(policy));
            let created = s.original_snapshot_create_time().or(s.snapshot_create_time()).map(|t| t.secs());
            if let (true, Some("available"), Some(created), Some(id)) =
                (ours, s.status(), created, s.db_snapshot_identifier())
                && newest.as_ref().is_none_or(|(t, _)| created > *t)
            {
                newest = Some((created, id.to_string()));
            }
        }
        Ok(newest.map(|(_, id)| id))
    }

    fn fail(&self, what: &str, detail: &str) -> RdsError {
        RdsError { region: self.region.clone(), what: what.to_string(), detail: detail.to_string() }
    }

    fn explain<E, R>(&self, what: &str, permission: &str, err: SdkError<E, R>) -> RdsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        let permissions = format!("{permission}; allow it in the role's IAM policy");
        let detail = super::explain(&err, "RDS", "AWS_ENDPOINT_URL_RDS", &permissions, |code, cause| match code {
            "DBInstanceNotFound" => {
                Some(format!("no such DB instance in {} ({cause}): check the identifier and the region", self.region))
            }
            "DBInstanceAlreadyExists" => Some(format!(
                "an instance of that name exists already ({cause}): pick another name, or delete it if it is a \
                 leftover of an earlier attempt"
            )),
            "DBSnapshotNotFound" => Some(format!(
                "no such snapshot in {} ({cause}): list them with `aws rds describe-db-snapshots`",
                self.region
            )),
            "InvalidDBInstanceState" => {
                Some(format!("the instance cannot do that now ({cause}): it must be available; wait and run again"))
            }
            "DBSubnetGroupNotFoundFault" | "DBSubnetGroupNotFound" => {
                Some(format!("no such DB subnet group ({cause}): create it in this region first"))
            }
            "DBParameterGroupNotFound" => {
                Some(format!("no such parameter group ({cause}): create it in this region first"))
            }
            "PointInTimeRestoreNotEnabled" => Some(format!(
                "the source keeps no automated backups ({cause}): point-in-time restore needs a backup retention \
                 period above 0"
            )),
            _ => None,
        })
        .unwrap_or_else(|| format!("refused ({})", super::cause(&err)));
        self.fail(what, &detail)
    }
}

fn instance(i: &DbInstance) -> Instance {
    Instance {
        id: i.db_instance_identifier().unwrap_or_default().to_string(),
        arn: i.db_instance_arn().map(str::to_string),
        status: i.db_instance_status().unwrap_or("unknown").to_string(),
        replica_of: i.read_replica_source_db_instance_identifier().filter(|s| !s.is_empty()).map(str::to_string),
        endpoint: i.endpoint().and_then(|e| Some(format!("{}:{}", e.address()?, e.port().unwrap_or(5432)))),
        engine: i.engine().map(str::to_string),
        subnet_group: i.db_subnet_group().and_then(|g| g.db_subnet_group_name()).map(str::to_string),
        security_groups: i
            .vpc_security_groups()
            .iter()
            .filter_map(|g| g.vpc_security_group_id())
            .map(str::to_string)
            .collect(),
        parameter_groups: i
            .db_parameter_groups()
            .iter()
            .filter_map(|g| g.db_parameter_group_name())
            .map(str::to_string)
            .collect(),
        latest_restorable: i
            .latest_restorable_time()
            .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
    }
}

/// The region an RDS ARN names (`arn:aws:rds:REGION:ACCOUNT:db:NAME`).
pub fn arn_region(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    (parts.next()? == "arn").then_some(())?;
    parts.nth(2).filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement() -> Placement {
        Placement {
            subnet_group: "api-db-subnets".into(),
            security_groups: vec!["sg-0123".into()],
            parameter_group: "api-pg15".into(),
            instance_class: None,
        }
    }

    #[test]
    fn a_placement_never_falls_back_to_the_defaults() {
        assert_eq!(placement().check(), Ok(()));
        let no_subnets = Placement { subnet_group: String::new(), ..placement() };
        assert!(no_subnets.check().unwrap_err().contains("DB subnet group"));
        let no_groups = Placement { security_groups: vec![String::new()], ..placement() };
        assert!(no_groups.check().unwrap_err().contains("security groups"));
        let default_params = Placement { parameter_group: "default.postgres15".into(), ..placement() };
        assert!(default_params.check().unwrap_err().contains("RDS's default"));
        let default_group = Placement { security_groups: vec!["default".into()], ..placement() };
        assert!(default_group.check().is_err());
    }

    #[test]
    fn arns_name_their_region() {
        assert_eq!(arn_region("arn:aws:rds:us-east-1:123456789012:db:api-db"), Some("us-east-1"));
        assert_eq!(arn_region("api-db"), None);
    }
}

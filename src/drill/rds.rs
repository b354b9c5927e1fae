//! `drill --rds`: besides the dump restored locally, RDS's own point-in-time recovery drilled. A
//! scratch instance is restored from the policy's instance to the simulated failure, placed as
//! `rds.drill` says (never in RDS's defaults), checked with the policy's connection settings at
//! its endpoint, and deleted whatever happened, unless `--keep`.
//!
//! The restore is asked for right after the dumps are selected, so RDS works while the dump is
//! restored locally: the RDS RTO (the drill's start → the instance passing its checks) is then
//! what RDS takes, not RDS plus the local restore. The `rds-restore` phase is what was left of the
//! wait once the local drill was done; the record's `rds.restore_seconds` is the whole of it.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::record::{RdsUsed, Status};
use super::{DATABASES, Drill, Point, dump, names_of, present, run_check};
use crate::aws::rds::{CREATED_BY_TAG, POLICY_TAG, RdsError};
use crate::aws::rds_instance::{Instances, Placement};
use crate::ops::{self, policy_db};
use crate::pg::sql::{self, CONNECT_TIMEOUT, Reach};
use crate::policy::{Kind, Policy};

/// How long RDS may take to restore the instance (typically 10 to 30 minutes, more for large
/// databases).
const RESTORE_LIMIT: Duration = Duration::from_secs(2 * 3600);
/// How long RDS may take to delete it.
const DELETE_LIMIT: Duration = Duration::from_secs(3600);
/// The tag naming the drill that made an instance.
const DRILL_TAG: &str = "drctl-drill";

/// The scratch instance of one drill, from the request to its deletion.
pub(super) struct Scratch {
    rds: Instances,
    source: String,
    placement: Placement,
    /// Set once the restore was asked for (even if the request failed: it may have gone through).
    requested: Option<Instant>,
    used: RdsUsed,
    interrupt: Interrupt,
}

/// SIGINT and SIGTERM while a scratch instance may exist: the first one ends the drill early and
/// the instance is still deleted; a second one exits at once (and leaves it behind).
struct Interrupt {
    flag: Arc<AtomicBool>,
    handlers: Vec<signal_hook::SigId>,
}

impl Interrupt {
    fn install() -> Interrupt {
        let flag = Arc::new(AtomicBool::new(false));
        let mut handlers = Vec::new();
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // The exit first: it acts only once the flag is already set, by an earlier signal.
            let exit = signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag));
            let mark = signal_hook::flag::register(signal, Arc::clone(&flag));
            handlers.extend(exit.into_iter().chain(mark));
        }
        Interrupt { flag, handlers }
    }

    fn raised(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        for handler in self.handlers.drain(..) {
            signal_hook::low_level::unregister(handler);
        }
    }
}

impl Scratch {
    /// Checks that `policy` can drill RDS from `point`, before any call: a `kind: rds` policy
    /// with `rds.drill` placing the instance away from RDS's defaults, and a point in time.
    pub(super) fn prepare(policy: &Policy, drill_id: &str, point: &Point) -> Result<Scratch, ops::Error> {
        let usage = |why: String| ops::Error::Usage(why);
        let rds = match (&policy.kind, &policy.rds) {
            (Kind::Rds, Some(rds)) => rds,
            _ => return Err(usage(format!("policy {} is not `kind: rds`: --rds drills an RDS instance", policy.name))),
        };
        let Some(drill) = &rds.drill else {
            return Err(usage(format!(
                "policy {} has no `rds.drill`: --rds needs to know where the scratch instance goes; add `rds.drill` \
                 with `subnet_group`, `security_groups` and `parameter_group` (policies/README.md)",
                policy.name
            )));
        };
        if let Point::Snapshot(_) = point {
            return Err(usage(
                "--snapshot names a logical dump; --rds restores the instance to a point in time: use --latest, --at \
                 or --random-within"
                    .into(),
            ));
        }
        let placement = Placement {
            subnet_group: drill.subnet_group.clone(),
            security_groups: drill.security_groups.clone(),
            parameter_group: drill.parameter_group.clone(),
            instance_class: drill.instance_class.clone(),
        };
        placement.check().map_err(|e| usage(format!("rds.drill in policy {}: {e}", policy.name)))?;
        let connected = Instances::connect(&rds.region)?;
        let instance = instance_id(&policy.name, drill_id);
        Ok(Scratch {
            rds: connected,
            source: rds.instance.clone(),
            placement,
            requested: None,
            used: RdsUsed {
                instance,
                source: rds.instance.clone(),
                region: rds.region.clone(),
                restore_time: None,
                latest_restorable: None,
                endpoint: None,
                restore_seconds: None,
                rto_seconds: None,
                deleted: false,
                kept: false,
            },
            interrupt: Interrupt::install(),
        })
    }
}

/// `drctl-drill-<policy>-<8 hex>`, within RDS's rules (at most 63 characters, no `--`, no
/// trailing hyphen).
fn instance_id(policy: &str, drill_id: &str) -> String {
    let random = drill_id.rsplit('-').next().unwrap_or_default();
    let mut name: String = policy.chars().take(63 - "drctl-drill-".len() - 1 - random.len()).collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    format!("drctl-drill-{}-{random}", name.trim_end_matches('-'))
}

impl Drill<'_> {
    /// Asks RDS for the scratch instance restored to `failure` (`--latest`: to its latest
    /// restorable time), when this drill has one.
    pub(super) fn rds_request(&mut self, failure: DateTime<Utc>, say: &mut dyn FnMut(&str)) -> Result<(), ops::Error> {
        let Some(scratch) = &mut self.rds else { return Ok(()) };
        let at = match self.record.mode.as_str() {
            "latest" => None,
            _ => Some(failure),
        };
        scratch.used.restore_time = at;
        let Some(source) = scratch.rds.describe(&scratch.source)? else {
            return Err(RdsError {
                region: scratch.used.region.clone(),
                what: format!("instance {}", scratch.source),
                detail: "there is no such instance to restore from: check rds.instance and rds.region in the policy"
                    .into(),
            }
            .into());
        };
        scratch.used.latest_restorable = source.latest_restorable;
        let tags = [
            (POLICY_TAG, self.policy.name.as_str()),
            (DRILL_TAG, self.record.id.as_str()),
            (CREATED_BY_TAG.0, CREATED_BY_TAG.1),
        ];
        scratch.requested = Some(Instant::now());
        scratch.rds.restore_to_point_in_time(&scratch.source, &scratch.used.instance, at, &scratch.placement, &tags)?;
        let when =
            at.map_or("its latest restorable time".to_string(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
        let detail = format!(
            "{} as of {when} into {} in {} (subnet group {}, security groups {}, parameter group {})",
            scratch.source,
            scratch.used.instance,
            scratch.used.region,
            scratch.placement.subnet_group,
            scratch.placement.security_groups.join(","),
            scratch.placement.parameter_group
        );
        self.phase("rds-request", say, &detail);
        Ok(())
    }

    /// After the local drill (`local`, its outcome): the scratch instance waited on and checked
    /// (when the local drill got through), then deleted unless `keep`, whatever happened. A
    /// deletion that fails is a failure of the drill naming the command that deletes it.
    pub(super) fn rds_finish(
        &mut self,
        local: Result<(), ops::Error>,
        keep: bool,
        clock: Instant,
        say: &mut dyn FnMut(&str),
    ) -> Result<(), ops::Error> {
        let Some(mut scratch) = self.rds.take() else { return local };
        // A drill that stopped before the request made no instance: nothing to record or delete.
        let Some(requested) = scratch.requested else { return local };
        let outcome = match &local {
            Ok(()) if scratch.interrupt.raised() => Ok(()),
            Ok(()) => self.rds_wait_and_check(&mut scratch, requested, clock, say),
            Err(_) => Ok(()),
        };
        if scratch.interrupt.raised() {
            self.record.failures.push(format!(
                "the drill was interrupted (SIGINT or SIGTERM) while scratch instance {} existed",
                scratch.used.instance
            ));
            say("  interrupted: deleting the scratch instance (a second signal exits at once and leaves it)");
        }
        match keep {
            true => {
                scratch.used.kept = true;
                say(&format!(
                    "  scratch instance {} kept in {}: delete it with {}",
                    scratch.used.instance,
                    scratch.used.region,
                    delete_command(&scratch.used)
                ));
            }
            false => self.rds_delete(&mut scratch, say),
        }
        self.record.rds = Some(scratch.used);
        local.and(outcome)
    }

    fn rds_wait_and_check(
        &mut self,
        scratch: &mut Scratch,
        requested: Instant,
        clock: Instant,
        say: &mut dyn FnMut(&str),
    ) -> Result<(), ops::Error> {
        let interrupt = &scratch.interrupt;
        let ready =
            match scratch.rds.wait_unless(&scratch.used.instance, RESTORE_LIMIT, |_| true, &|| interrupt.raised()) {
                Ok(ready) => ready,
                // Said once by rds_finish.
                Err(_) if interrupt.raised() => return Ok(()),
                Err(e) => return Err(e.into()),
            };
        scratch.used.restore_seconds = Some(requested.elapsed().as_secs_f64());
        scratch.used.endpoint = ready.endpoint.clone();
        let shown = ready.endpoint.as_deref().unwrap_or("no endpoint");
        self.phase("rds-restore", say, &format!("{} available at {shown}", scratch.used.instance));

        let checks_before = self.record.checks.len();
        self.rds_checks(ready.endpoint.as_deref(), say);
        let passed = self.record.checks[checks_before..].iter().all(|c| c.status != Status::Fail);
        self.phase("rds-checks", say, &format!("{} check(s)", self.record.checks.len() - checks_before));
        if passed {
            scratch.used.rto_seconds = Some(clock.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// The dumped databases present and the policy's checks, at `endpoint` as the policy's
    /// connection says; a connection that fails is a failed check naming the endpoint.
    fn rds_checks(&mut self, endpoint: Option<&str>, say: &mut dyn FnMut(&str)) {
        let policy = self.policy;
        let reached = endpoint
            .ok_or_else(|| "RDS gave the instance no endpoint".to_string())
            .and_then(|e| {
                let (host, port) = e.rsplit_once(':').unwrap_or((e, "5432"));
                let port =
                    port.parse().map_err(|_| format!("RDS gave the endpoint {e}, whose port is not a number"))?;
                Ok((host.to_string(), port))
            })
            .and_then(|(host, port)| {
                let conn = policy_db::conn_at(&policy.database, &host, port, None).map_err(|e| e.to_string())?;
                match sql::reach(&conn, CONNECT_TIMEOUT).map_err(|e| e.to_string())? {
                    Reach::Connected(session) => Ok((host, port, session)),
                    Reach::Unreachable(why) | Reach::Refused(why) => Err(why),
                }
            });
        let shown = endpoint.unwrap_or("(none)");
        let (host, port, mut session) = match reached {
            Ok(reached) => reached,
            Err(why) => {
                let detail = format!("cannot connect to {shown} with the policy's database settings: {why}");
                self.check("rds-connect", Err(detail), say);
                return;
            }
        };
        self.check("rds-connect", Ok(format!("connected to {shown}")), say);
        let dumped = dump::databases(policy);
        let verdict = names_of(&mut session, DATABASES)
            .map_err(|e| e.to_string())
            .and_then(|restored| present("database", &dumped, &restored));
        self.check("rds-databases", verdict, say);
        drop(session);
        for check in &policy.drill.checks {
            let conn = policy_db::conn_at(&policy.database, &host, port, check.database.as_deref());
            let verdict = run_check(conn, check);
            self.check(&format!("rds-{}", check.name), verdict, say);
        }
    }

    fn rds_delete(&mut self, scratch: &mut Scratch, say: &mut dyn FnMut(&str)) {
        let id = scratch.used.instance.clone();
        let deleted =
            delete(&scratch.rds, &id).and_then(|existed| scratch.rds.wait_gone(&id, DELETE_LIMIT).map(|()| existed));
        match deleted {
            Ok(existed) => {
                scratch.used.deleted = true;
                let done = if existed { "deleted" } else { "not there: the request made none" };
                self.phase("rds-delete", say, &format!("{id} {done}"));
            }
            Err(e) => {
                let failure = format!(
                    "the scratch RDS instance {id} in {} may still be running (and costing): {e}; delete it with {}",
                    scratch.used.region,
                    delete_command(&scratch.used)
                );
                self.phase("rds-delete", say, &format!("FAILED: {failure}"));
                self.record.failures.push(failure);
            }
        }
    }
}

/// Deletes `id` if RDS lists it (whether it did); one that is still being created or changed
/// (RDS refuses to delete some of those) is waited on and asked again.
fn delete(rds: &Instances, id: &str) -> Result<bool, RdsError> {
    if rds.describe(id)?.is_none() {
        return Ok(false);
    }
    match rds.delete(id) {
        Ok(()) => Ok(true),
        Err(first) => match rds.describe(id)? {
            None => Ok(true),
            Some(i) if i.status == "deleting" => Ok(true),
            Some(i) if i.available() => Err(first),
            Some(_) => {
                rds.wait(id, RESTORE_LIMIT, |_| true)?;
                rds.delete(id).map(|()| true)
            }
        },
    }
}

/// The AWS CLI command that deletes the scratch instance.
fn delete_command(used: &RdsUsed) -> String {
    format!(
        "`aws rds delete-db-instance --region {} --db-instance-identifier {} --skip-final-snapshot \
         --delete-automated-backups`",
        used.region, used.instance
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_instance_names_follow_rds_rules() {
        assert_eq!(instance_id("rds-orders", "20261205T141500Z-1a2b3c4d"), "drctl-drill-rds-orders-1a2b3c4d");
        let long = instance_id(&format!("a{}", "-b".repeat(40)), "20261205T141500Z-1a2b3c4d");
        assert!(long.len() <= 63 && !long.contains("--"), "{long}");
        assert!(long.ends_with("-1a2b3c4d"), "{long}");
    }
}

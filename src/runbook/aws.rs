//! The actions that drive AWS: an RDS read replica promoted, a new RDS instance restored (to a
//! point in time, or from a snapshot such as the DR-region copy), and a Route 53 record switched.
//! Each can tell, when a killed run is taken up, whether it happened already.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Error;
use super::actions::{Context, Outcome, flag, wait};
use crate::aws::rds_instance::{Instance, Instances, Placement};
use crate::aws::route53::Dns;
use crate::ops::promote;
use crate::ops::promote_rds::{self, RdsPromoteOptions};
use crate::pg::Conn;

type Inputs = BTreeMap<String, String>;

fn instances(inputs: &Inputs) -> Result<Instances, Error> {
    Instances::connect(&inputs["region"]).map_err(Error::action)
}

pub fn promote_replica(inputs: &Inputs, timeout: Duration, cx: &mut Context, dry: bool) -> Outcome {
    let lags = match inputs.get("max_lag") {
        Some(text) => vec![promote::parse_lag(text).map_err(|e| Error::Usage(format!("max_lag: {e}")))?],
        None => Vec::new(),
    };
    let max_lag_seconds = promote_rds::max_lag_seconds(&lags).map_err(|e| Error::Usage(format!("max_lag: {e}")))?;
    let options = RdsPromoteOptions {
        instance: inputs["instance"].clone(),
        region: inputs["region"].clone(),
        assume_fenced: flag(inputs, "assume_fenced"),
        max_lag_seconds,
        accept_unknown_lag: flag(inputs, "accept_unknown_lag"),
        verify: inputs.get("verify_dsn").cloned().map(Conn::new),
        dry_run: dry,
        wait: wait(inputs, timeout)?,
    };
    let ui = &mut *cx.ui;
    let p = promote_rds::promote(&options, &mut |p| super::actions::say_gates(ui, &p.gates)).map_err(Error::action)?;
    Ok(match p.promoted {
        true => format!(
            "promoted: {} is a standalone instance after {:.1} s{}",
            p.instance,
            p.promote_seconds.unwrap_or_default(),
            p.verified.map(|v| format!("; it {v}")).unwrap_or_default()
        ),
        false => "every gate passes".into(),
    })
}

fn placement(inputs: &Inputs) -> Result<Placement, Error> {
    let placement = Placement {
        subnet_group: inputs["subnet_group"].clone(),
        security_groups: inputs["security_groups"]
            .split(',')
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .collect(),
        parameter_group: inputs["parameter_group"].clone(),
        instance_class: inputs.get("instance_class").cloned(),
    };
    placement.check().map_err(Error::Usage)?;
    Ok(placement)
}

/// Which instance a new one is restored from, in words and as a call.
enum Source {
    PointInTime { instance: String, at: Option<chrono::DateTime<chrono::Utc>> },
    Snapshot(String),
}

/// A new instance restored to a point in time of `source_instance` (or its latest restorable
/// time).
pub fn restore_point_in_time(inputs: &Inputs, timeout: Duration, cx: &mut Context, dry: bool) -> Outcome {
    let at = match inputs.get("point_in_time") {
        Some(t) => Some(crate::ops::restore::select::parse_time(t).map_err(|e| Error::Usage(e.to_string()))?),
        None => None,
    };
    let source = Source::PointInTime { instance: inputs["source_instance"].clone(), at };
    restore(inputs, source, timeout, cx, dry)
}

/// A new instance restored from `snapshot`, or from the newest snapshot drctl made for `policy`
/// in the region (the DR copy there).
pub fn restore_snapshot(inputs: &Inputs, timeout: Duration, cx: &mut Context, dry: bool) -> Outcome {
    let rds = instances(inputs)?;
    let snapshot = match (inputs.get("snapshot"), inputs.get("policy")) {
        (Some(id), None) => id.clone(),
        (None, Some(policy)) => rds.newest_drctl_snapshot(policy).map_err(Error::action)?.ok_or_else(|| {
            Error::Check(format!(
                "there is no available snapshot of policy {policy} in {}: check that the policy's DR copies reach \
                 this region (`drctl policy run` makes them)",
                rds.region()
            ))
        })?,
        _ => return Err(Error::Usage("give rds.restore-from-snapshot either `snapshot` or `policy`, not both".into())),
    };
    restore(inputs, Source::Snapshot(snapshot), timeout, cx, dry)
}

fn restore(inputs: &Inputs, source: Source, timeout: Duration, cx: &mut Context, dry: bool) -> Outcome {
    let placement = placement(inputs)?;
    let rds = instances(inputs)?;
    let target = &inputs["instance"];
    let what = match &source {
        Source::PointInTime { instance, at: Some(at) } => format!("{instance} as of {}", at.to_rfc3339()),
        Source::PointInTime { instance, at: None } => format!("{instance} at its latest restorable time"),
        Source::Snapshot(id) => format!("snapshot {id}"),
    };
    let place = format!(
        "subnet group {}, security groups {}, parameter group {}",
        placement.subnet_group,
        placement.security_groups.join(","),
        placement.parameter_group
    );
    if let Some(existing) = rds.describe(target).map_err(Error::action)? {
        return Err(Error::Check(format!(
            "an instance {target} exists already in {} (status {}): pick a new name, or take up the run that made \
             it with --resume",
            rds.region(),
            existing.status
        )));
    }
    if let Source::PointInTime { instance, .. } = &source
        && rds.describe(instance).map_err(Error::action)?.is_none()
    {
        return Err(Error::Check(format!("there is no instance {instance} in {} to restore from", rds.region())));
    }
    if dry {
        return Ok(format!("would restore {what} into a new instance {target} in {} ({place})", rds.region()));
    }
    cx.ui.say(&format!("    restoring {what} into {target} ({place})"));
    match &source {
        Source::PointInTime { instance, at } => rds.restore_to_point_in_time(instance, target, *at, &placement, &[]),
        Source::Snapshot(id) => rds.restore_from_snapshot(id, target, &placement),
    }
    .map_err(Error::action)?;
    let ready = rds.wait(target, wait(inputs, timeout)?, |_| true).map_err(Error::action)?;
    Ok(format!("restored {what} into {}", described(&ready)))
}

fn described(i: &Instance) -> String {
    match &i.endpoint {
        Some(endpoint) => format!("{} (available at {endpoint})", i.id),
        None => format!("{} (available)", i.id),
    }
}

/// What a record is to point at: `value`, or the endpoint host of RDS `instance` in `region`
/// (`None` when that instance has no endpoint yet: a dry run before it is made).
fn dns_value(inputs: &Inputs) -> Result<Option<String>, Error> {
    match (inputs.get("value"), inputs.get("instance"), inputs.get("region")) {
        (Some(value), None, _) => Ok(Some(value.clone())),
        (None, Some(instance), Some(region)) => {
            let rds = Instances::connect(region).map_err(Error::action)?;
            let seen = rds.describe(instance).map_err(Error::action)?;
            Ok(seen.and_then(|i| i.endpoint).map(|e| e.rsplit_once(':').map_or(e.clone(), |(host, _)| host.into())))
        }
        _ => Err(Error::Usage(
            "give dns.switch either `value`, or `instance` and `region` (the record then points at the RDS \
             instance's endpoint)"
                .into(),
        )),
    }
}

/// Points a record at a new value: UPSERT, wait for `INSYNC`, then wait out the old TTL, since
/// resolvers that cached the old answer keep it that long.
pub fn dns_switch(inputs: &Inputs, timeout: Duration, cx: &mut Context, dry: bool) -> Outcome {
    let (zone, name) = (&inputs["zone"], &inputs["name"]);
    let kind = inputs.get("type").map_or("CNAME", String::as_str);
    let ttl: i64 = match inputs.get("ttl") {
        Some(t) => t.parse().map_err(|_| Error::Usage(format!("ttl must be a number of seconds, not {t:?}")))?,
        None => 60,
    };
    let value = dns_value(inputs)?;
    let dns = Dns::connect().map_err(Error::action)?;
    let old = dns.record(zone, name, kind).map_err(Error::action)?;
    let old_ttl = old.as_ref().and_then(|r| r.ttl).unwrap_or(0);
    let now = match &old {
        Some(r) => format!("{name} {kind} -> {} (TTL {old_ttl} s)", r.values.join(", ")),
        None => format!("{name} {kind} does not exist"),
    };
    if dry {
        let to = value.unwrap_or_else(|| format!("the endpoint of instance {} (not there yet)", inputs["instance"]));
        return Ok(format!(
            "now: {now}; would UPSERT it -> {to} (TTL {ttl} s), wait for INSYNC, then wait out the old TTL"
        ));
    }
    let Some(value) = value else {
        return Err(Error::Check(format!(
            "instance {} in {} has no endpoint: it does not exist, or RDS is still creating it",
            inputs["instance"], inputs["region"]
        )));
    };
    let change = dns.upsert(zone, name, kind, &value, ttl).map_err(Error::action)?;
    let synced = dns.wait_insync(&change, wait(inputs, timeout)?).map_err(Error::action)?;
    let changed = old.as_ref().is_some_and(|r| !r.points_at(&value));
    if changed && old_ttl > 0 {
        cx.ui.say(&format!(
            "    INSYNC after {:.1} s; waiting out the old TTL ({old_ttl} s): resolvers may answer the old value until \
             then",
            synced.as_secs_f64()
        ));
        std::thread::sleep(Duration::from_secs(old_ttl as u64));
    }
    Ok(format!(
        "{name} {kind} -> {value} (was: {}); INSYNC after {:.1} s{}",
        old.map_or("none".into(), |r| r.values.join(", ")),
        synced.as_secs_f64(),
        if changed && old_ttl > 0 { format!("; waited out the old TTL of {old_ttl} s") } else { String::new() }
    ))
}

/// Whether an AWS action happened already (a killed run taken up): the replica is promoted, the
/// instance exists (waited on until available), the record points at the value.
pub fn already_done(action: super::Action, inputs: &Inputs, timeout: Duration) -> Result<Option<String>, Error> {
    use super::Action;
    match action {
        Action::RdsPromote => {
            let rds = instances(inputs)?;
            let seen = rds.describe(&inputs["instance"]).map_err(Error::action)?;
            Ok(seen
                .filter(|i| i.replica_of.is_none())
                .map(|i| format!("already promoted: {} is a standalone instance ({})", i.id, i.status)))
        }
        Action::RdsRestorePointInTime | Action::RdsRestoreSnapshot => {
            let rds = instances(inputs)?;
            let target = &inputs["instance"];
            if rds.describe(target).map_err(Error::action)?.is_none() {
                return Ok(None);
            }
            let ready = rds.wait(target, wait(inputs, timeout)?, |_| true).map_err(Error::action)?;
            Ok(Some(format!("already restored: {}", described(&ready))))
        }
        Action::DnsSwitch => {
            let dns = Dns::connect().map_err(Error::action)?;
            let kind = inputs.get("type").map_or("CNAME", String::as_str);
            let Some(value) = dns_value(inputs)? else { return Ok(None) };
            let record = dns.record(&inputs["zone"], &inputs["name"], kind).map_err(Error::action)?;
            Ok(record
                .filter(|r| r.points_at(&value))
                .map(|_| format!("already switched: {} {kind} -> {value}", inputs["name"])))
        }
        _ => Ok(None),
    }
}

//! Rules that relate keys, across sections or across the items of a list: a policy whose every
//! key is well formed can still promise what drctl cannot deliver. Each rule says what would go
//! wrong, and is reported at the key to change.
//!
//! What drctl's own mechanics settle, and so need no rule: `forget` always keeps the newest good
//! snapshot of each source and, for a PITR window, the base backup the window starts from and
//! the WAL after it, whatever the other retention rules say. A drctl base backup cannot exist
//! without a WAL archive (it refuses a server that does not archive), so "a base backup without
//! WAL archiving" cannot happen either.

use chrono::Duration;

use super::schema::*;
use super::yaml::Found;

pub fn check(policy: &Policy, found: &Found) {
    rds_section(policy, found);
    base_backups(policy, found);
    pitr_window(policy, found);
    rpo(policy, found);
    copies(policy, found);
    kms_regions(policy, found);
    drill_names(policy, found);
    heartbeat_within_rpo(policy, found);
    if let Some(rds) = &policy.rds {
        rds_snapshots(rds, found);
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d.to_std().unwrap_or_default()).to_string()
}

/// `kind: rds` needs the instance to act on; a self-managed policy has none.
fn rds_section(policy: &Policy, found: &Found) {
    match (policy.kind, &policy.rds) {
        (Kind::Rds, None) => found.problem(
            found.place("kind"),
            "`kind: rds` without an `rds` section",
            "add `rds:` with `instance`, `region`, `dr_region`, `snapshot_schedule` and `snapshot_retention`",
        ),
        (Kind::SelfManaged, Some(_)) => found.problem(
            found.place("rds"),
            "an `rds` section in a `kind: self-managed` policy",
            "remove it, or write `kind: rds` if the database is an RDS instance",
        ),
        _ => {}
    }
}

/// RDS offers no replication connection and no data directory, so no base backup; and one policy
/// protects one cluster, whose WAL goes to one archive from one line of base backups.
fn base_backups(policy: &Policy, found: &Found) {
    let mut seen = false;
    for source in policy.sources.iter().filter(|s| matches!(s.what, SourceKind::BaseBackup(_))) {
        let at = found.place(&format!("sources.{}.type", source.name));
        if policy.kind == Kind::Rds {
            found.problem(
                at,
                format!("base-backup source `{}` in an RDS policy: RDS allows no replication connection", source.name),
                "use `type: logical-dump` for drctl's repository; the `rds` section covers snapshots, and RDS keeps \
                 its own point-in-time recovery",
            );
        } else if seen {
            found.problem(
                at,
                format!("a second base-backup source, `{}`: a policy protects one cluster", source.name),
                "keep one base-backup source; give another cluster its own policy",
            );
        }
        seen = true;
    }
}

/// A point-in-time window is WAL replayed from a base backup: it needs a base-backup source (and
/// so drctl's WAL archive), which an RDS instance cannot have.
fn pitr_window(policy: &Policy, found: &Found) {
    if policy.retention.pitr_window.is_none() {
        return;
    }
    let at = found.place("retention.pitr_window");
    if policy.kind == Kind::Rds {
        found.problem(
            at,
            "`pitr_window` in an RDS policy: drctl has no WAL archive of an RDS instance",
            "remove it: RDS keeps its own point-in-time recovery (set the instance's backup retention period, up to \
             35 days)",
        );
    } else if !policy.archives_wal() {
        found.problem(
            at,
            "`pitr_window` without a base-backup source: nothing archives WAL to restore to a point in time",
            "add a source with `type: base-backup` (its WAL is archived by `drctl wal-push`), or remove `pitr_window`",
        );
    }
}

/// Without a WAL archive, the newest data drctl holds is as old as the last dump or snapshot: the
/// RPO can be no shorter than the longest wait between runs of the most frequent one. (With a
/// base-backup source, WAL archiving bounds the loss by `archive_timeout`, which drctl does not
/// see.) RDS's own point-in-time recovery is not counted: it stays in the instance's region and
/// outside drctl's repositories.
fn rpo(policy: &Policy, found: &Found) {
    if policy.archives_wal() {
        return;
    }
    let rpo = policy.targets.rpo;
    let mut captures: Vec<(String, &super::Schedule)> = policy
        .sources
        .iter()
        .filter(|s| matches!(s.what, SourceKind::LogicalDump { .. }))
        .map(|s| (format!("logical dump `{}`", s.name), &s.schedule))
        .collect();
    if let Some(rds) = &policy.rds {
        captures.push(("RDS snapshot".to_string(), &rds.snapshot_schedule));
    }
    let at = found.place("targets.rpo");
    let Some((what, schedule, gap)) =
        captures.into_iter().map(|(what, s)| (what, s, s.longest_gap())).min_by_key(|(_, _, gap)| *gap)
    else {
        found.problem(
            at,
            format!("rpo {} cannot be met: no source copies the database's data", human(rpo)),
            "add a base-backup source (self-managed) or a logical-dump source",
        );
        return;
    };
    if rpo < gap {
        let faster = match policy.kind {
            Kind::Rds => "dumps or RDS snapshots",
            Kind::SelfManaged => "dumps (or add a base-backup source: its WAL archive is continuous)",
        };
        found.problem(
            at,
            format!(
                "rpo {} cannot be met: with no WAL archive, the data since the last {what} is lost, and `{}` runs up \
                 to {} apart",
                human(rpo),
                schedule.as_str(),
                human(gap)
            ),
            format!("schedule {faster} at least every {}, or set `rpo: {}`", human(rpo), human(gap)),
        );
    }
}

/// A copy is there to survive the loss of the primary: it must be another place.
fn copies(policy: &Policy, found: &Found) {
    let repos = &policy.repositories;
    for (i, copy) in repos.copies.iter().enumerate() {
        let at = found.place(&format!("repositories.copies[{i}].location"));
        if copy.location == repos.primary.location {
            found.problem(
                at,
                "a copy at the primary repository's location",
                "give the copy its own bucket or directory",
            );
        } else if repos.copies[..i].iter().any(|c| c.location == copy.location) {
            found.problem(at, format!("copy `{}` is listed twice", copy.location), "remove one of them");
        }
    }
}

/// KMS keys are regional: a copy whose key lives in the primary's region cannot be opened when that
/// region is down, which is when the copy is needed.
fn kms_regions(policy: &Policy, found: &Found) {
    let repos = &policy.repositories;
    let all = std::iter::once(("repositories.primary".to_string(), &repos.primary))
        .chain(repos.copies.iter().enumerate().map(|(i, c)| (format!("repositories.copies[{i}]"), c)));
    for (path, repo) in all {
        let (Some(region), KeySlot::Kms(key)) = (&repo.region, &repo.key) else { continue };
        // arn:aws:kms:REGION:ACCOUNT:key/ID (ids and aliases without an ARN carry no region).
        let Some(key_region) = key.strip_prefix("arn:").and_then(|arn| arn.split(':').nth(2)) else { continue };
        if key_region != region {
            found.problem(
                found.place(&format!("{path}.kms_key_id")),
                format!("KMS key in {key_region} for a repository in {region}: KMS keys are regional"),
                format!("use a key in {region} (its own, or a multi-Region replica), so the repository opens while {key_region} is down"),
            );
        }
    }
}

/// A drill measures RPO from the newest heartbeat recovered: heartbeats further apart than the
/// RPO would report a loss the data never had.
fn heartbeat_within_rpo(policy: &Policy, found: &Found) {
    let Some(every) = policy.drill.heartbeat else { return };
    if every > policy.targets.rpo {
        found.problem(
            found.place("drill.heartbeat"),
            format!(
                "a heartbeat every {} cannot show an RPO of {}: a drill would measure up to one interval more loss than there was",
                human(every),
                human(policy.targets.rpo)
            ),
            format!("write heartbeats at most `{}` apart, e.g. `heartbeat: 30s`", human(policy.targets.rpo)),
        );
    }
}

/// Reports name each check; two with one name could not be told apart.
fn drill_names(policy: &Policy, found: &Found) {
    for (i, check) in policy.drill.checks.iter().enumerate() {
        if policy.drill.checks[..i].iter().any(|c| c.name == check.name) {
            found.problem(
                found.place(&format!("drill.checks[{i}].name")),
                format!("drill check `{}` is listed twice", check.name),
                "give each check its own name",
            );
        }
    }
}

/// Snapshots copied to the same region protect against nothing a region can lose; snapshots
/// deleted before the next one is taken leave times with none at all.
fn rds_snapshots(rds: &Rds, found: &Found) {
    if rds.dr_region == rds.region {
        found.problem(
            found.place("rds.dr_region"),
            format!("`rds.dr_region` is the instance's own region, {}", rds.region),
            "copy snapshots to another region, e.g. `us-west-2` for `us-east-1`",
        );
    }
    let gap = rds.snapshot_schedule.longest_gap();
    if rds.snapshot_retention < gap {
        found.problem(
            found.place("rds.snapshot_retention"),
            format!(
                "snapshots are kept {} but taken up to {} apart: at times none would exist",
                human(rds.snapshot_retention),
                human(gap)
            ),
            format!("keep them at least `{}`", human(gap)),
        );
    }
}

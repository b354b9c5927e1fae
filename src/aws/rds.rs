//! RDS snapshots of `kind: rds` policies: a manual snapshot of the instance on the policy's
//! schedule, copied to the DR region, and both expired after `snapshot_retention`.
//!
//! - Manual snapshots, not automated ones: automated backups vanish with the instance and last
//!   at most 35 days; a manual snapshot and its copy outlive the instance and the region.
//! - drctl's snapshots are recognised by their tag `drctl-policy=<policy>` (and carry
//!   `drctl-created-by=drctl`): a snapshot anyone else made, even one named like drctl's, is never
//!   deleted.
//! - The name `drctl-<policy>-<YYYYMMDD-HHMMSS>` (UTC) is the same in both regions, so a copy is
//!   found by the name of its source.
//! - Clients use the default AWS chain for credentials; the region is the policy's.
//!   `AWS_ENDPOINT_URL_RDS` (the SDK's own setting) points them at an RDS-compatible service.
//! - The API is synchronous: each `Rds` owns a current-thread runtime, as KMS key slots do.

use std::time::{Duration as StdDuration, Instant};

use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_rds::types::{DbSnapshot, Tag};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};

/// The tag naming the policy a snapshot was made for; deletion needs it.
pub const POLICY_TAG: &str = "drctl-policy";
/// The tag saying drctl made the snapshot (for people browsing the console).
pub const CREATED_BY_TAG: (&str, &str) = ("drctl-created-by", "drctl");
/// The UTC time in a snapshot's name: sortable, and only letters, digits and hyphens (which is
/// all an RDS identifier may hold).
const NAME_TIME: &str = "%Y%m%d-%H%M%S";
/// How often a snapshot that is not yet available is looked at again: snapshots take minutes.
const POLL: StdDuration = StdDuration::from_secs(20);
/// How long drctl waits for a snapshot or its copy: a large first cross-region copy takes hours.
const WAIT_LIMIT: StdDuration = StdDuration::from_secs(2 * 3600);
/// Encrypting the DR copy: KMS keys are regional, so an encrypted snapshot copied to another
/// region needs a key there; the DR region's AWS-managed RDS key is the console's default.
const DR_KMS_KEY: &str = "alias/aws/rds";
/// What drctl's RDS snapshots need from IAM, for refusals.
const PERMISSIONS: &str = "rds:CreateDBSnapshot, rds:CopyDBSnapshot, rds:DeleteDBSnapshot, rds:DescribeDBSnapshots, \
                           rds:ListTagsForResource and rds:AddTagsToResource";

/// Why an RDS call failed, in one sentence with the cause (error code and message) and the fix;
/// `what` names the operation and the instance or snapshot.
#[derive(Debug, thiserror::Error)]
#[error("RDS {what} in {region}: {detail}")]
pub struct RdsError {
    /// The region the call went to.
    pub region: String,
    /// The operation and what it was about, e.g. `CreateDBSnapshot of instance api-db`.
    pub what: String,
    /// The cause and what to do about it.
    pub detail: String,
}

/// A snapshot taken and copied by [`Rds::snapshot_and_copy`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SnapshotCopy {
    /// The snapshot identifier, the same in both regions.
    pub snapshot_id: String,
    /// The snapshot's ARN in the source region.
    pub source_arn: String,
    /// The copy's ARN in the DR region.
    pub copy_arn: String,
    /// When RDS took the snapshot.
    pub created: DateTime<Utc>,
    pub region: String,
    pub dr_region: String,
    /// From the request to the copy being available.
    pub duration_seconds: f64,
}

/// What [`Rds::expire`] did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Expired {
    /// The snapshots deleted, as `region:snapshot-id`.
    pub deleted: Vec<String>,
    /// drctl's snapshots of the policy left in both regions.
    pub kept: usize,
}

/// RDS in a policy's source and DR regions.
pub struct Rds {
    instance: String,
    source: Site,
    dr: Site,
    runtime: tokio::runtime::Runtime,
}

/// One region's client.
struct Site {
    region: String,
    client: aws_sdk_rds::Client,
}

/// What drctl needs to know of a snapshot it made.
#[derive(Debug, Clone, PartialEq)]
struct Snap {
    id: String,
    status: String,
    /// When the source snapshot was taken, also for a copy: a copy expires with its source.
    created: Option<DateTime<Utc>>,
}

/// The RDS API a call went to: names the IAM permissions a refusal is about.
#[derive(Debug, Clone, Copy)]
enum Api {
    Create,
    Copy,
    Delete,
    Describe,
    ListTags,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Create => "CreateDBSnapshot",
            Api::Copy => "CopyDBSnapshot",
            Api::Delete => "DeleteDBSnapshot",
            Api::Describe => "DescribeDBSnapshots",
            Api::ListTags => "ListTagsForResource",
        }
    }

    /// The IAM actions the call needs: tags given with a new snapshot need AddTagsToResource.
    fn permissions(self) -> &'static str {
        match self {
            Api::Create => "rds:CreateDBSnapshot and rds:AddTagsToResource (for its tags)",
            Api::Copy => {
                "rds:CopyDBSnapshot (on the source snapshot and in the DR region) and rds:AddTagsToResource (for its \
                 tags)"
            }
            Api::Delete => "rds:DeleteDBSnapshot",
            Api::Describe => "rds:DescribeDBSnapshots",
            Api::ListTags => "rds:ListTagsForResource",
        }
    }
}

impl Rds {
    /// Clients for `instance`'s region and the DR region. Makes no call: credentials and the
    /// instance are checked by the first request.
    pub fn connect(instance: &str, region: &str, dr_region: &str) -> Result<Rds, RdsError> {
        let fail = |detail: String| RdsError {
            region: region.to_string(),
            what: format!("setup for instance {instance}"),
            detail,
        };
        if region == dr_region {
            return Err(fail(format!(
                "rds.dr_region is the instance's own region ({region}): a copy there does not survive the loss of the \
                 region; name another region in the policy",
            )));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start the I/O runtime: {e}")))?;
        let source = Site::new(&runtime, region);
        let dr = Site::new(&runtime, dr_region);
        Ok(Rds { instance: instance.to_string(), source, dr, runtime })
    }

    /// When the newest *available* snapshot drctl made for `policy` in the source region was
    /// taken, if there is one.
    pub fn newest_snapshot(&self, policy: &str) -> Result<Option<DateTime<Utc>>, RdsError> {
        let snaps = self.drctl_snapshots(&self.source, policy, Some(&self.instance))?;
        Ok(newest_available(&snaps).and_then(|i| snaps[i].created))
    }

    /// When the source snapshot of the newest *available* copy in the DR region was taken: a
    /// copy that failed leaves this behind [`Rds::newest_snapshot`], so the next job tries again.
    pub fn newest_copy(&self, policy: &str) -> Result<Option<DateTime<Utc>>, RdsError> {
        let snaps = self.drctl_snapshots(&self.dr, policy, None)?;
        Ok(newest_available(&snaps).and_then(|i| snaps[i].created))
    }

    /// Takes a manual snapshot `drctl-<policy>-<YYYYMMDD-HHMMSS>` (the time of `now`) of the
    /// instance, tagged for `policy`, waits until it is available, copies it to the DR region
    /// under the same name and tags, and waits until the copy is available.
    ///
    /// A failed copy leaves the source snapshot: it is drctl's (tagged) and expires as usual.
    pub fn snapshot_and_copy(&self, policy: &str, now: DateTime<Utc>) -> Result<SnapshotCopy, RdsError> {
        let start = Instant::now();
        let id = snapshot_name(policy, now);
        let (source, dr) = (&self.source, &self.dr);
        let what = format!("CreateDBSnapshot of instance {} (snapshot {id})", self.instance);
        let request = source
            .client
            .create_db_snapshot()
            .db_instance_identifier(&self.instance)
            .db_snapshot_identifier(&id)
            .set_tags(Some(drctl_tags(policy)));
        self.runtime.block_on(request.send()).map_err(|e| explain(source, &what, Api::Create, e))?;
        tracing::info!(snapshot = %id, region = %source.region, "RDS snapshot requested");
        let taken = self.wait_available(source, &id)?;
        let source_arn = taken.db_snapshot_arn().ok_or_else(|| source.fail(&what, "RDS returned no ARN for it"))?;
        // A snapshot reported available without a time is taken now (it cannot be older).
        let created = created_at(&taken).unwrap_or(now);

        // The SDK has no `SourceRegion` (it only builds `PreSignedUrl`, which AWS needs in GovCloud
        // alone): the ARN names the source region.
        let what = format!("CopyDBSnapshot of {source_arn} (snapshot {id})");
        let request = dr
            .client
            .copy_db_snapshot()
            .source_db_snapshot_identifier(source_arn)
            .target_db_snapshot_identifier(&id)
            .set_tags(Some(drctl_tags(policy)))
            .set_kms_key_id(taken.encrypted().unwrap_or(false).then(|| DR_KMS_KEY.to_string()));
        let copy = self.runtime.block_on(request.send()).map_err(|e| explain(dr, &what, Api::Copy, e))?;
        tracing::info!(snapshot = %id, region = %dr.region, "RDS snapshot copy requested");
        let copied = self.wait_available(dr, &id)?;
        let copy_arn = copied
            .db_snapshot_arn()
            .or_else(|| copy.db_snapshot().and_then(|s| s.db_snapshot_arn()))
            .ok_or_else(|| dr.fail(&what, "RDS returned no ARN for the copy"))?;
        Ok(SnapshotCopy {
            snapshot_id: id,
            source_arn: source_arn.to_string(),
            copy_arn: copy_arn.to_string(),
            created,
            region: source.region.clone(),
            dr_region: dr.region.clone(),
            duration_seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// In both regions, deletes drctl's snapshots of `policy` (by the tag, never any other
    /// snapshot) taken more than `retention` before `now`, but never the newest available one
    /// of each region (so a stalled schedule never leaves a region without a snapshot).
    pub fn expire(&self, policy: &str, retention: Duration, now: DateTime<Utc>) -> Result<Expired, RdsError> {
        let mut expired = Expired::default();
        for (site, instance) in [(&self.source, Some(self.instance.as_str())), (&self.dr, None)] {
            let snaps = self.drctl_snapshots(site, policy, instance)?;
            let doomed = expiring(&snaps, retention, now);
            for (i, snap) in snaps.iter().enumerate() {
                if !doomed.contains(&i) {
                    expired.kept += usize::from(snap.status != "deleting");
                    continue;
                }
                let what = format!("DeleteDBSnapshot of {} (snapshot of instance {})", snap.id, self.instance);
                let request = site.client.delete_db_snapshot().db_snapshot_identifier(&snap.id);
                match self.runtime.block_on(request.send()) {
                    Ok(_) => {
                        tracing::info!(snapshot = %snap.id, region = %site.region, "expired RDS snapshot deleted");
                        expired.deleted.push(format!("{}:{}", site.region, snap.id));
                    }
                    // Gone already (deleted by hand meanwhile): what expiry wanted.
                    Err(e) if e.code() == Some("DBSnapshotNotFound") => {}
                    Err(e) => return Err(explain(site, &what, Api::Delete, e)),
                }
            }
        }
        Ok(expired)
    }

    /// drctl's snapshots of `policy` in one region: its manual snapshots (of `instance` when
    /// given) that carry the policy tag.
    ///
    /// In the DR region the listing is not narrowed to the instance: a copy need not keep the
    /// source's instance identifier. A snapshot listed without tags but named like drctl's has
    /// its tags read with ListTagsForResource, as an older RDS-compatible service may not
    /// return TagList.
    fn drctl_snapshots(&self, site: &Site, policy: &str, instance: Option<&str>) -> Result<Vec<Snap>, RdsError> {
        let what = match instance {
            Some(instance) => format!("DescribeDBSnapshots of instance {instance}"),
            None => format!("DescribeDBSnapshots (copies for policy {policy})"),
        };
        let mut pages = site
            .client
            .describe_db_snapshots()
            .set_db_instance_identifier(instance.map(str::to_string))
            .snapshot_type("manual")
            .into_paginator()
            .items()
            .send();
        let mut listed = Vec::new();
        while let Some(item) = self.runtime.block_on(pages.next()) {
            listed.push(item.map_err(|e| explain(site, &what, Api::Describe, e))?);
        }
        let mut snaps = Vec::new();
        for s in listed {
            let Some(id) = s.db_snapshot_identifier() else { continue };
            let ours = if !s.tag_list().is_empty() {
                is_drctl(s.tag_list(), policy)
            } else if let (Some(_), Some(arn)) = (taken_at(policy, id), s.db_snapshot_arn()) {
                let what = format!("ListTagsForResource of snapshot {id}");
                let request = site.client.list_tags_for_resource().resource_name(arn);
                let tags = self.runtime.block_on(request.send()).map_err(|e| explain(site, &what, Api::ListTags, e))?;
                is_drctl(tags.tag_list(), policy)
            } else {
                false
            };
            if ours {
                snaps.push(Snap {
                    id: id.to_string(),
                    status: s.status().unwrap_or("unknown").to_string(),
                    created: created_at(&s),
                });
            }
        }
        Ok(snaps)
    }

    /// Polls a snapshot until it is available; a failed or vanished one, or one still not
    /// available after [`WAIT_LIMIT`], is an error.
    fn wait_available(&self, site: &Site, id: &str) -> Result<DbSnapshot, RdsError> {
        let start = Instant::now();
        let what = format!("snapshot {id}");
        loop {
            let request = site.client.describe_db_snapshots().db_snapshot_identifier(id);
            let out = self.runtime.block_on(request.send()).map_err(|e| explain(site, &what, Api::Describe, e))?;
            let Some(snap) = out.db_snapshots().first() else {
                return Err(site.fail(&what, "vanished while drctl waited for it: someone deleted it; run again"));
            };
            let status = snap.status().unwrap_or("unknown");
            if status == "available" {
                return Ok(snap.clone());
            }
            if is_failed(status) {
                return Err(site.fail(
                    &what,
                    &format!(
                        "RDS reports it {status}: see the instance's events (aws rds describe-events) for why, fix \
                         that and run again"
                    ),
                ));
            }
            if start.elapsed() >= WAIT_LIMIT {
                let progress = snap.percent_progress().map(|p| format!(", {p}% done")).unwrap_or_default();
                return Err(site.fail(
                    &what,
                    &format!(
                        "still {status}{progress} after {} minutes: RDS may yet finish it (it is tagged and expires \
                         as usual); look at it in the console, and run again once it is available",
                        WAIT_LIMIT.as_secs() / 60
                    ),
                ));
            }
            tracing::debug!(snapshot = %id, region = %site.region, status, "waiting for the RDS snapshot");
            std::thread::sleep(POLL.min(WAIT_LIMIT.saturating_sub(start.elapsed())));
        }
    }
}

impl Site {
    fn new(runtime: &tokio::runtime::Runtime, region: &str) -> Site {
        let shared = super::sdk::load(runtime, Some(region));
        Site { region: region.to_string(), client: aws_sdk_rds::Client::new(&shared) }
    }

    fn fail(&self, what: &str, detail: &str) -> RdsError {
        RdsError { region: self.region.clone(), what: what.to_string(), detail: detail.to_string() }
    }
}

/// `drctl-<policy>-<YYYYMMDD-HHMMSS>` at `at` (UTC).
fn snapshot_name(policy: &str, at: DateTime<Utc>) -> String {
    format!("drctl-{policy}-{}", at.format(NAME_TIME))
}

/// The time in a name [`snapshot_name`] made for exactly this policy: `drctl-api-` followed by
/// `db-20250101-000000` is policy `api-db`'s, not `api`'s.
fn taken_at(policy: &str, id: &str) -> Option<NaiveDateTime> {
    let rest = id.strip_prefix("drctl-")?.strip_prefix(policy)?.strip_prefix('-')?;
    if rest.len() != 15 {
        return None;
    }
    NaiveDateTime::parse_from_str(rest, NAME_TIME).ok()
}

fn drctl_tags(policy: &str) -> Vec<Tag> {
    vec![
        Tag::builder().key(POLICY_TAG).value(policy).build(),
        Tag::builder().key(CREATED_BY_TAG.0).value(CREATED_BY_TAG.1).build(),
    ]
}

/// Whether the tags mark a snapshot drctl made for `policy`.
fn is_drctl(tags: &[Tag], policy: &str) -> bool {
    tags.iter().any(|t| t.key() == Some(POLICY_TAG) && t.value() == Some(policy))
}

/// When the snapshot was taken: `OriginalSnapshotCreateTime` survives copying (a copy's own
/// `SnapshotCreateTime` is when it was copied), so a copy expires with its source.
fn created_at(s: &DbSnapshot) -> Option<DateTime<Utc>> {
    let t = s.original_snapshot_create_time().or(s.snapshot_create_time())?;
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// States a snapshot does not leave on its way to `available`.
fn is_failed(status: &str) -> bool {
    matches!(status, "failed" | "deleting" | "deleted") || status.starts_with("incompatible")
}

/// The index of the newest available snapshot.
fn newest_available(snaps: &[Snap]) -> Option<usize> {
    snaps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.status == "available" && s.created.is_some())
        .max_by_key(|(_, s)| s.created)
        .map(|(i, _)| i)
}

/// The indexes of the snapshots to delete: available (or failed) ones taken more than
/// `retention` before `now`, except the newest available one. One still being made or copied is
/// left alone: deleting it would break the run that waits for it.
fn expiring(snaps: &[Snap], retention: Duration, now: DateTime<Utc>) -> Vec<usize> {
    let newest = newest_available(snaps);
    snaps
        .iter()
        .enumerate()
        .filter(|&(i, s)| {
            Some(i) != newest
                && matches!(s.status.as_str(), "available" | "failed")
                && s.created.is_some_and(|c| now - c > retention)
        })
        .map(|(i, _)| i)
        .collect()
}

/// An SDK error as the cause and the fix, the call's region and subject named in `what`.
fn explain<E, R>(site: &Site, what: &str, api: Api, err: SdkError<E, R>) -> RdsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let permissions =
        format!("{}; allow it in the role's IAM policy (drctl's RDS snapshots need {PERMISSIONS})", api.permissions());
    let detail = super::explain(&err, "RDS", "AWS_ENDPOINT_URL_RDS", &permissions, |code, cause| match code {
        "DBInstanceNotFound" => Some(format!(
            "no such DB instance in this region ({cause}): check rds.instance and rds.region in the policy"
        )),
        "DBSnapshotNotFound" => Some(format!("the snapshot is gone ({cause}): someone deleted it; run again")),
        "DBSnapshotAlreadyExists" => Some(format!(
            "a snapshot of this name exists already ({cause}): another run took one in the same second; run again"
        )),
        "InvalidDBInstanceState" => Some(format!(
            "the instance cannot be snapshotted now ({cause}): it must be available (not stopped, being modified or \
             snapshotted); run again when it is"
        )),
        "InvalidDBSnapshotState" => Some(format!("the snapshot is busy ({cause}): run again when it is available")),
        "SnapshotQuotaExceeded" => Some(format!(
            "the account's manual snapshot quota in this region is reached ({cause}): shorten \
             rds.snapshot_retention, delete manual snapshots nobody needs, or ask AWS for a higher quota"
        )),
        "KMSKeyNotAccessibleFault" | "KMSKeyNotAccessible" => Some(format!(
            "the snapshot's KMS key cannot be used ({cause}): allow kms:CreateGrant and kms:DescribeKey on the \
             instance's key and on the DR region's aws/rds key"
        )),
        _ => None,
    })
    .unwrap_or_else(|| format!("{} refused ({})", api.name(), super::cause(&err)));
    site.fail(what, &detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn snap(id: &str, status: &str, created: &str) -> Snap {
        Snap { id: id.into(), status: status.into(), created: Some(at(created)) }
    }

    fn ids(snaps: &[Snap], picked: Vec<usize>) -> Vec<&str> {
        picked.into_iter().map(|i| snaps[i].id.as_str()).collect()
    }

    #[test]
    fn names_hold_the_policy_and_the_utc_time() {
        let name = snapshot_name("api-db", at("2025-03-04T05:06:07.89+02:00"));
        assert_eq!(name, "drctl-api-db-20250304-030607");
        assert_eq!(taken_at("api-db", &name), Some(at("2025-03-04T03:06:07Z").naive_utc()));
    }

    #[test]
    fn a_name_belongs_to_exactly_one_policy() {
        let name = snapshot_name("api-db", at("2025-03-04T05:06:07Z"));
        assert_eq!(taken_at("api", &name), None, "policy api does not claim api-db's snapshots");
        assert_eq!(taken_at("api-db", "drctl-api-db-20250304-030607-x"), None);
        assert_eq!(taken_at("api-db", "drctl-api-db-2025030-0306071"), None);
        assert_eq!(taken_at("api-db", "rds:api-db-2025-03-04-03-06"), None);
    }

    #[test]
    fn only_the_policy_tag_marks_a_snapshot_as_drctl_s() {
        let tags = drctl_tags("api-db");
        assert!(is_drctl(&tags, "api-db"));
        assert!(!is_drctl(&tags, "api"));
        assert!(!is_drctl(&[Tag::builder().key(CREATED_BY_TAG.0).value(CREATED_BY_TAG.1).build()], "api-db"));
        assert!(!is_drctl(&[], "api-db"));
    }

    #[test]
    fn snapshots_older_than_the_retention_expire() {
        let snaps = vec![
            snap("a", "available", "2025-01-01T00:00:00Z"),
            snap("b", "available", "2025-01-05T00:00:00Z"),
            snap("c", "available", "2025-01-09T00:00:00Z"),
        ];
        let now = at("2025-01-13T00:00:00Z");
        assert_eq!(ids(&snaps, expiring(&snaps, Duration::days(7), now)), ["a", "b"]);
        // Exactly as old as the retention: still kept.
        assert_eq!(ids(&snaps, expiring(&snaps, Duration::days(8), now)), ["a"]);
        assert_eq!(ids(&snaps, expiring(&snaps, Duration::days(12), now)), Vec::<&str>::new());
        // c is past a 3-day retention too, but it is the newest.
        assert_eq!(ids(&snaps, expiring(&snaps, Duration::days(3), now)), ["a", "b"]);
    }

    #[test]
    fn the_newest_available_snapshot_never_expires() {
        let snaps = vec![
            snap("old", "available", "2025-01-01T00:00:00Z"),
            snap("newest", "available", "2025-01-02T00:00:00Z"),
            snap("failed", "failed", "2025-01-03T00:00:00Z"),
            snap("busy", "creating", "2025-01-04T00:00:00Z"),
        ];
        let now = at("2026-01-01T00:00:00Z");
        assert_eq!(newest_available(&snaps), Some(1), "a failed or unfinished one is not the newest");
        assert_eq!(ids(&snaps, expiring(&snaps, Duration::days(7), now)), ["old", "failed"]);
        let unfinished = vec![Snap { id: "x".into(), status: "creating".into(), created: None }];
        assert!(expiring(&unfinished, Duration::zero(), now).is_empty());
    }

    #[test]
    fn the_creation_time_of_a_copy_is_its_source_s() {
        use aws_sdk_rds::primitives::DateTime as AwsTime;
        let copy = DbSnapshot::builder()
            .snapshot_create_time(AwsTime::from_secs(2_000))
            .original_snapshot_create_time(AwsTime::from_secs(1_000))
            .build();
        assert_eq!(created_at(&copy), DateTime::from_timestamp(1_000, 0));
        let plain = DbSnapshot::builder().snapshot_create_time(AwsTime::from_secs(2_000)).build();
        assert_eq!(created_at(&plain), DateTime::from_timestamp(2_000, 0));
        assert_eq!(created_at(&DbSnapshot::builder().build()), None);
    }
}

//! RDS snapshots of `kind: rds` policies against moto's RDS API, through the library: a snapshot
//! and its copy in the DR region, expiry that spares the newest snapshot of each region and every
//! snapshot drctl did not make, and an unknown instance named with the fix.
//!
//! moto has no lifecycle (everything is `available` at once), so the waits return at once; old
//! snapshots are made "old" by passing a later `now` to `expire`.

use std::sync::{Mutex, Once};

use chrono::{DateTime, Duration, Utc};
use drctl::aws::rds::{Rds, RdsError};
use drctl::policy::{self, Schedule};

use crate::harness::moto::Moto;

static CREDENTIALS: Once = Once::new();
static ENDPOINT: Mutex<()> = Mutex::new(());

/// The library reads the default AWS chain, as in production; the test process gets the same
/// test credentials everywhere, and each server's endpoint only while a client is built (the
/// SDK resolves it then), one at a time: tests share the process under `cargo test`.
fn connect(moto: &Moto, instance: &str) -> Result<Rds, RdsError> {
    CREDENTIALS.call_once(|| {
        // SAFETY: the same values in every test; nothing in this process reads them otherwise.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "test");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        }
    });
    let _one_at_a_time = ENDPOINT.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: set under the lock, read by `Rds::connect` under it.
    unsafe { std::env::set_var("AWS_ENDPOINT_URL_RDS", &moto.endpoint) };
    let config = config(instance);
    Rds::connect(&config.instance, &config.region, &config.dr_region)
}

fn config(instance: &str) -> policy::Rds {
    policy::Rds {
        instance: instance.to_string(),
        region: "us-east-1".into(),
        dr_region: "us-west-2".into(),
        snapshot_schedule: Schedule::parse("0 * * * *").unwrap(),
        snapshot_retention: Duration::days(7),
        drill: None,
    }
}

/// A PostgreSQL instance in us-east-1.
fn instance(moto: &Moto, name: &str) {
    moto.python(
        "client('rds').create_db_instance(DBInstanceIdentifier=args[0], Engine='postgres', \
         DBInstanceClass='db.t3.micro', AllocatedStorage=20, MasterUsername='app', MasterUserPassword='secret-pw-1')",
        &[name],
    );
}

/// The manual snapshots of a region, sorted: `id status tag=value,...`.
fn snapshots(moto: &Moto, region: &str) -> Vec<String> {
    let out = moto.python(
        "rds = client('rds', args[0])\n\
         for page in rds.get_paginator('describe_db_snapshots').paginate(SnapshotType='manual'):\n    \
             for s in page['DBSnapshots']:\n        \
                 tags = rds.list_tags_for_resource(ResourceName=s['DBSnapshotArn'])['TagList']\n        \
                 print(s['DBSnapshotIdentifier'], s['Status'], \
                       ','.join(sorted(t['Key'] + '=' + t['Value'] for t in tags)))",
        &[region],
    );
    let mut list: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
    list.sort();
    list
}

fn ids(moto: &Moto, region: &str) -> Vec<String> {
    snapshots(moto, region).iter().filter_map(|l| l.split(' ').next()).map(str::to_string).collect()
}

/// A manual snapshot someone else made: in us-east-1 of `db`, or a copy of it in us-west-2,
/// with the given tags (`key=value`).
fn foreign_snapshot(moto: &Moto, db: &str, id: &str, tags: &[&str]) {
    moto.python(
        "tags = [dict(zip(('Key', 'Value'), t.split('=', 1))) for t in args[2:]]\n\
         s = client('rds').create_db_snapshot(DBInstanceIdentifier=args[0], DBSnapshotIdentifier=args[1], \
             Tags=tags)['DBSnapshot']\n\
         client('rds', 'us-west-2').copy_db_snapshot(SourceDBSnapshotIdentifier=s['DBSnapshotArn'], \
             TargetDBSnapshotIdentifier=args[1], Tags=tags)",
        &[&[db, id][..], tags].concat(),
    );
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn a_snapshot_is_taken_and_copied_to_the_dr_region() {
    let moto = Moto::empty();
    instance(&moto, "orders-db");
    let rds = connect(&moto, "orders-db").unwrap();
    assert_eq!(rds.newest_snapshot("orders").unwrap(), None, "no snapshot yet");

    let before = Utc::now();
    let copy = rds.snapshot_and_copy("orders", at("2025-06-01T12:34:56Z")).unwrap();
    assert_eq!(copy.snapshot_id, "drctl-orders-20250601-123456");
    assert_eq!(copy.region, "us-east-1");
    assert_eq!(copy.dr_region, "us-west-2");
    assert!(copy.source_arn.starts_with("arn:aws:rds:us-east-1:"), "{}", copy.source_arn);
    assert!(copy.source_arn.ends_with(":snapshot:drctl-orders-20250601-123456"), "{}", copy.source_arn);
    assert!(copy.copy_arn.starts_with("arn:aws:rds:us-west-2:"), "{}", copy.copy_arn);
    assert!(copy.copy_arn.ends_with(":snapshot:drctl-orders-20250601-123456"), "{}", copy.copy_arn);
    let slack = Duration::seconds(5);
    assert!(copy.created >= before - slack && copy.created <= Utc::now() + slack, "RDS's time: {}", copy.created);
    assert!(copy.duration_seconds >= 0.0 && copy.duration_seconds < 60.0, "{}", copy.duration_seconds);

    let expected = "drctl-orders-20250601-123456 available drctl-created-by=drctl,drctl-policy=orders";
    assert_eq!(snapshots(&moto, "us-east-1"), [expected], "the snapshot, tagged");
    assert_eq!(snapshots(&moto, "us-west-2"), [expected], "its copy in the DR region, tagged");
    assert_eq!(rds.newest_snapshot("orders").unwrap(), Some(copy.created));
    assert_eq!(rds.newest_snapshot("other").unwrap(), None, "another policy's snapshots are its own");

    let json = serde_json::to_value(&copy).unwrap();
    assert_eq!(json["snapshot_id"], "drctl-orders-20250601-123456", "{json}");
}

#[test]
fn expiry_deletes_old_drctl_snapshots_in_both_regions_but_the_newest_and_no_one_else_s() {
    let moto = Moto::empty();
    instance(&moto, "billing-db");
    // Someone else's snapshots in both regions: untagged, untagged but named like drctl's, and
    // drctl's for another policy. All older than any of drctl's.
    foreign_snapshot(&moto, "billing-db", "before-migration", &[]);
    foreign_snapshot(&moto, "billing-db", "drctl-billing-20240101-000000", &[]);
    foreign_snapshot(&moto, "billing-db", "drctl-billing-archive-20240101-000000", &["drctl-policy=billing-archive"]);
    let rds = connect(&moto, "billing-db").unwrap();

    let first = rds.snapshot_and_copy("billing", at("2025-06-01T00:00:00Z")).unwrap();
    let second = rds.snapshot_and_copy("billing", at("2025-06-01T01:00:00Z")).unwrap();
    // RDS stamps its own times: the third comes clearly later.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let third = rds.snapshot_and_copy("billing", at("2025-06-01T02:00:00Z")).unwrap();
    assert!(first.created < second.created && second.created < third.created);

    // A week after the third (less half a second): the first two are past the retention.
    let retention = Duration::days(7);
    let now = third.created + retention - Duration::milliseconds(500);
    let expired = rds.expire("billing", retention, now).unwrap();
    let mut deleted = expired.deleted.clone();
    deleted.sort();
    let expected: Vec<String> = ["us-east-1", "us-west-2"]
        .iter()
        .flat_map(|r| [&first, &second].map(|s| format!("{r}:{}", s.snapshot_id)))
        .collect();
    assert_eq!(deleted, expected);
    assert_eq!(expired.kept, 2, "the third in each region");
    let others = ["before-migration", "drctl-billing-20240101-000000", "drctl-billing-archive-20240101-000000"];
    for region in ["us-east-1", "us-west-2"] {
        let mut left: Vec<String> = others.iter().map(|s| s.to_string()).collect();
        left.push(third.snapshot_id.clone());
        left.sort();
        assert_eq!(ids(&moto, region), left, "{region}: the third and everyone else's");
    }

    // Long past the retention, the newest of each region still stays.
    let expired = rds.expire("billing", retention, third.created + Duration::days(60)).unwrap();
    assert!(expired.deleted.is_empty(), "{expired:?}");
    assert_eq!(expired.kept, 2);
    assert_eq!(rds.newest_snapshot("billing").unwrap(), Some(third.created));
    for region in ["us-east-1", "us-west-2"] {
        assert!(ids(&moto, region).contains(&third.snapshot_id), "{region}");
        assert_eq!(ids(&moto, region).len(), 4, "{region}: nobody else's snapshot was touched");
    }
}

#[test]
fn an_unknown_instance_is_named_with_the_fix() {
    let moto = Moto::empty();
    instance(&moto, "real-db");
    let rds = connect(&moto, "no-such-db").unwrap();
    let err = rds.snapshot_and_copy("ghost", at("2025-06-01T00:00:00Z")).unwrap_err();
    let text = err.to_string();
    for part in ["no-such-db", "us-east-1", "DBInstanceNotFound", "check rds.instance and rds.region in the policy"] {
        assert!(text.contains(part), "{part:?} in: {text}");
    }
    assert_eq!(err.region, "us-east-1");
    let (code, _) = drctl::error::classify(&anyhow::Error::new(err));
    assert_eq!(code as i32, 14);
    assert!(snapshots(&moto, "us-east-1").is_empty() && snapshots(&moto, "us-west-2").is_empty(), "nothing made");
}

#[test]
fn the_dr_region_must_be_another_region() {
    let mut same = config("orders-db");
    same.dr_region = same.region.clone();
    let err = Rds::connect(&same.instance, &same.region, &same.dr_region).err().expect("refused");
    assert!(err.to_string().contains("rds.dr_region"), "{err}");
}

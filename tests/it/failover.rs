//! RDS promotion and region failover against moto's RDS, CloudWatch and Route 53 APIs (two
//! regions), with a real PostgreSQL standing in for the endpoints moto cannot serve and the
//! stand-in API service turning ready. Effects are asserted with boto3 describe/list calls, never
//! through drctl's output.
//!
//! moto promotes at once and keeps listing a promoted replica's source, and answers every Route 53
//! change `INSYNC` at once: a proxy in front of it counts the mutating calls that reached it (none
//! in a dry run or after a refusal, one per mutation across a kill and a resume), and whether an
//! instance is still a replica shows in whether moto lets it be stopped (it refuses a replica).

use std::path::Path;
use std::time::Duration;

use crate::harness::faultproxy::FaultProxy;
use crate::harness::moto::Moto;
use crate::harness::pg::Cluster;
use crate::harness::standin::Standin;
use crate::harness::*;

/// `api-db` in us-east-1 and its cross-region replica `api-db-dr` in us-west-2.
fn primary_and_replica(moto: &Moto) {
    moto.python(
        "src = client('rds').create_db_instance(DBInstanceIdentifier='api-db', Engine='postgres', \
         DBInstanceClass='db.t3.micro', AllocatedStorage=20, MasterUsername='app', \
         MasterUserPassword='secret-pw-1')['DBInstance']\n\
         client('rds', 'us-west-2').create_db_instance_read_replica(DBInstanceIdentifier='api-db-dr', \
         SourceDBInstanceIdentifier=src['DBInstanceArn'])",
        &[],
    );
}

/// Publishes a `ReplicaLag` datapoint (seconds) for `instance` in `region`, as RDS does.
fn replica_lag(moto: &Moto, region: &str, instance: &str, seconds: f64) {
    moto.python(
        "client('cloudwatch', args[0]).put_metric_data(Namespace='AWS/RDS', MetricData=[{'MetricName': \
         'ReplicaLag', 'Dimensions': [{'Name': 'DBInstanceIdentifier', 'Value': args[1]}], 'Value': \
         float(args[2]), 'Timestamp': datetime.datetime.now(datetime.timezone.utc)}])",
        &[region, instance, &seconds.to_string()],
    );
}

/// Whether `instance` is still a read replica: moto refuses to stop one. A standalone instance
/// is stopped by the probe, so this is the last look a test takes.
fn still_a_replica(moto: &Moto, region: &str, instance: &str) -> bool {
    let out = moto.python(
        "try:\n    client('rds', args[0]).stop_db_instance(DBInstanceIdentifier=args[1]); print('standalone')\n\
         except Exception as e:\n    print('replica' if 'InvalidDBClusterStateFault' in str(e) else e)",
        &[region, instance],
    );
    match out.as_str() {
        "replica" => true,
        "standalone" => false,
        other => panic!("cannot tell whether {instance} is a replica: {other}"),
    }
}

fn status(moto: &Moto, region: &str, instance: &str) -> String {
    moto.python(
        "print(client('rds', args[0]).describe_db_instances(DBInstanceIdentifier=args[1])['DBInstances'][0]\
         ['DBInstanceStatus'])",
        &[region, instance],
    )
}

/// A hosted zone `example.com` with `db.example.com` CNAME -> `value` (TTL `ttl`); its id.
fn zone(moto: &Moto, value: &str, ttl: u32) -> String {
    moto.python(
        "r53 = client('route53')\n\
         z = r53.create_hosted_zone(Name='example.com', CallerReference='t')['HostedZone']['Id'].split('/')[-1]\n\
         r53.change_resource_record_sets(HostedZoneId=z, ChangeBatch={'Changes': [{'Action': 'UPSERT', \
         'ResourceRecordSet': {'Name': 'db.example.com', 'Type': 'CNAME', 'TTL': int(args[1]), \
         'ResourceRecords': [{'Value': args[0]}]}}]})\n\
         print(z)",
        &[value, &ttl.to_string()],
    )
}

/// What `db.example.com` points at, as `value TTL`.
fn record(moto: &Moto, zone: &str) -> String {
    moto.python(
        "sets = client('route53').list_resource_record_sets(HostedZoneId=args[0])['ResourceRecordSets']\n\
         print(*[s['ResourceRecords'][0]['Value'] + ' ' + str(s['TTL']) for s in sets \
         if s['Name'] == 'db.example.com.'])",
        &[zone],
    )
}

/// How many record changes (`POST …/rrset`) reached Route 53.
fn dns_changes(proxy: &FaultProxy) -> usize {
    proxy.log().iter().filter(|l| l.method == "POST" && l.path.trim_end_matches('/').ends_with("/rrset")).count()
}

fn postgres(ws: &Workspace) -> Cluster {
    let mut db = Cluster::init(&ws.join("db"), &[]);
    db.start();
    db
}

const REPLICA_ENDPOINT: &str = "api-db-dr.aaaaaaaaaa.us-west-2.rds.amazonaws.com";

#[test]
fn rds_promotion_refuses_what_it_must_changes_nothing_dry_and_promotes_once_the_source_is_stopped() {
    let ws = Workspace::new_public();
    let moto = Moto::empty();
    let proxy = FaultProxy::start(&moto.endpoint);
    primary_and_replica(&moto);
    let promote =
        || moto.aws_via("promote", &proxy.endpoint()).args(["--rds-instance", "api-db-dr", "--region", "us-west-2"]);

    // The source still runs, and CloudWatch has no lag figure yet.
    let out = promote().run();
    out.code_is(15)
        .mentions("ok     a read replica: it replicates arn:aws:rds:us-east-1:", "the replica gate")
        .mentions("REFUSE old primary fenced: arn:aws:rds:us-east-1:123456789012:db:api-db is available", "the fence")
        .mentions("REFUSE replica lag: unknown", "the lag gate");
    // Lag above the bound refuses, even when the source is taken as fenced.
    replica_lag(&moto, "us-west-2", "api-db-dr", 95.0);
    promote()
        .args(["--assume-fenced", "--dry-run"])
        .run()
        .code_is(15)
        .mentions("REFUSE replica lag: ReplicaLag 95 s (at most 30 s allowed)", "the lag measured");
    promote().args(["--max-lag", "16MiB"]).run().code_is(2).mentions("seconds only", "why a size is refused");
    let out = promote().args(["--assume-fenced", "--max-lag", "2m", "--dry-run"]).run();
    out.ok().mentions("dry run: every gate passes; nothing was changed", "the dry run");
    assert_eq!(proxy.calls("PromoteReadReplica"), 0, "a refusal or a dry run promoted\n{proxy}");
    assert!(still_a_replica(&moto, "us-west-2", "api-db-dr"));
    assert_eq!(status(&moto, "us-east-1", "api-db"), "available");

    // The source is stopped: promotion goes through and the endpoint (here a real server) is
    // checked to take writes.
    moto.python("client('rds').stop_db_instance(DBInstanceIdentifier='api-db')", &[]);
    let db = postgres(&ws);
    let out = promote().args(["--max-lag", "2m", "--verify-dsn", &db.dsn(), "--json"]).run();
    out.ok();
    let report = out.json();
    assert_eq!(report["promoted"], true, "{report:#}");
    assert_eq!(report["gates"][2]["measured"], "arn:aws:rds:us-east-1:123456789012:db:api-db is stopped");
    assert_eq!(report["endpoint"], format!("{REPLICA_ENDPOINT}:5432"));
    assert!(report["verified"].as_str().unwrap().starts_with("answers SQL and takes writes"), "{report:#}");
    assert_eq!(proxy.calls("PromoteReadReplica"), 1, "{proxy}");
    assert!(!still_a_replica(&moto, "us-west-2", "api-db-dr"), "the replica was not promoted");

    // A standalone instance is no replica: refused, named.
    moto.aws("promote")
        .args(["--rds-instance", "api-db", "--region", "us-east-1", "--assume-fenced"])
        .run()
        .code_is(15)
        .mentions("REFUSE a read replica: it replicates nothing", "the first gate");
    moto.aws("promote")
        .args(["--rds-instance", "nope", "--region", "us-west-2"])
        .run()
        .code_is(2)
        .mentions("there is no DB instance nope in us-west-2", "an unknown instance");
}

fn runbook(moto: &Moto, proxy: &FaultProxy, name: &str, audit: &Path) -> Drctl {
    moto.aws_via("runbook", &proxy.endpoint())
        .args(["run", name, "--dir"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks"))
        .arg("--audit-log")
        .arg(audit)
        .timeout(Duration::from_secs(300))
}

#[test]
fn region_failover_promotes_the_dr_replica_switches_dns_and_the_service_turns_ready() {
    let ws = Workspace::new_public();
    let moto = Moto::empty();
    let proxy = FaultProxy::start(&moto.endpoint);
    primary_and_replica(&moto);
    let zone = zone(&moto, "api-db.aaaaaaaaaa.us-east-1.rds.amazonaws.com", 2);
    // The replica's endpoint is served by a real server in recovery; the stand-in service uses it.
    let mut db = postgres(&ws);
    db.stop();
    std::fs::write(db.data.join("standby.signal"), "").unwrap();
    db.start();
    let standin = Standin::start(&db.dsn());
    assert_eq!(standin.status("/health/ready"), 503, "the stand-in is not ready on a replica");
    let audit = ws.join("audit.jsonl");
    let run = || runbook(&moto, &proxy, "region-failover", &audit);
    let params = |d: Drctl| {
        d.args(["--param", "replica=api-db-dr", "--param", "dr_region=us-west-2"])
            .args(["--param", &format!("replica_dsn={}", db.dsn())])
            .args(["--param", &format!("zone={zone}"), "--param", "record=db.example.com"])
            .args(["--param", &format!("service_url={}/health/ready", standin.url)])
            .args(["--param", "accept_unknown_lag=true"])
    };

    let out = params(run()).arg("--dry-run").run();
    out.ok()
        .mentions("would ask: fail over to us-west-2?", "the approval")
        .mentions("ok     replica lag: unknown", "the gate with its override")
        .mentions(&format!("would UPSERT it -> {REPLICA_ENDPOINT} (TTL 60 s)"), "the DNS preview");
    assert_eq!(record(&moto, &zone), "api-db.aaaaaaaaaa.us-east-1.rds.amazonaws.com 2", "a dry run switched DNS");
    assert_eq!((proxy.calls("PromoteReadReplica"), dns_changes(&proxy)), (0, 0), "a dry run mutated\n{proxy}");

    // The primary region is lost. The replica's server leaves recovery as RDS promotes it.
    assert_eq!(db.sql("SELECT pg_promote()"), "t");
    let out = params(run()).arg("--yes").run();
    out.ok()
        .mentions("promoted: api-db-dr is a standalone instance", "the promotion")
        .mentions("waiting out the old TTL (2 s)", "the TTL wait said")
        .mentions("every step succeeded", "the end");
    assert_eq!(record(&moto, &zone), format!("{REPLICA_ENDPOINT} 60"));
    assert_eq!(standin.status("/health/ready"), 200);
    assert_eq!((proxy.calls("PromoteReadReplica"), dns_changes(&proxy)), (1, 1), "{proxy}");
    assert!(!still_a_replica(&moto, "us-west-2", "api-db-dr"));
}

/// A network for restored instances in `region`: a VPC with two subnets in subnet group
/// `api-db-dr`, a security group and parameter group `api-pg15`; returns the security group's id.
pub(crate) fn network(moto: &Moto, region: &str) -> String {
    moto.python(
        "ec2 = client('ec2', args[0]); rds = client('rds', args[0])\n\
         vpc = ec2.create_vpc(CidrBlock='10.1.0.0/16')['Vpc']['VpcId']\n\
         subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f'10.1.{i}.0/24', AvailabilityZone=args[0] + z)\
         ['Subnet']['SubnetId'] for i, z in ((1, 'a'), (2, 'b'))]\n\
         rds.create_db_subnet_group(DBSubnetGroupName='api-db-dr', DBSubnetGroupDescription='dr', SubnetIds=subnets)\n\
         rds.create_db_parameter_group(DBParameterGroupName='api-pg15', DBParameterGroupFamily='postgres15', \
         Description='the service settings')\n\
         print(ec2.create_security_group(GroupName='api-db', Description='db', VpcId=vpc)['GroupId'])",
        &[region],
    )
}

/// A drctl snapshot of `api-db` for policy `api` copied to us-west-2, as `drctl policy run` makes.
fn dr_snapshot_copy(moto: &Moto) {
    moto.python(
        "tags = [{'Key': 'drctl-policy', 'Value': 'api'}, {'Key': 'drctl-created-by', 'Value': 'drctl'}]\n\
         s = client('rds').create_db_snapshot(DBInstanceIdentifier='api-db', \
         DBSnapshotIdentifier='drctl-api-20261205-010000', Tags=tags)['DBSnapshot']\n\
         client('rds', 'us-west-2').copy_db_snapshot(SourceDBSnapshotIdentifier=s['DBSnapshotArn'], \
         TargetDBSnapshotIdentifier='drctl-api-20261205-010000', Tags=tags)",
        &[],
    );
}

/// The instances of a region with their subnet group, security groups and parameter groups.
fn instances(moto: &Moto, region: &str) -> Vec<String> {
    let out = moto.python(
        "for i in client('rds', args[0]).describe_db_instances()['DBInstances']:\n    \
             print(i['DBInstanceIdentifier'], i.get('DBSubnetGroup', {}).get('DBSubnetGroupName'), \
             ','.join(g['VpcSecurityGroupId'] for g in i.get('VpcSecurityGroups', [])), \
             ','.join(g['DBParameterGroupName'] for g in i.get('DBParameterGroups', [])))",
        &[region],
    );
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn region_failover_from_snapshot_restores_the_dr_copy_in_place_and_a_killed_run_resumes_without_repeating() {
    let ws = Workspace::new_public();
    let moto = Moto::empty();
    let proxy = FaultProxy::start(&moto.endpoint);
    moto.python(
        "client('rds').create_db_instance(DBInstanceIdentifier='api-db', Engine='postgres', \
         DBInstanceClass='db.t3.micro', AllocatedStorage=20, MasterUsername='app', MasterUserPassword='secret-pw-1')",
        &[],
    );
    dr_snapshot_copy(&moto);
    let group = network(&moto, "us-west-2");
    let zone = zone(&moto, "api-db.aaaaaaaaaa.us-east-1.rds.amazonaws.com", 20);
    let db = postgres(&ws);
    let standin = Standin::start(&db.dsn());
    let audit = ws.join("audit.jsonl");
    let params = |d: Drctl, parameter_group: &str| {
        d.args(["--param", "policy=api", "--param", "dr_region=us-west-2", "--param", "instance=api-db-restored"])
            .args(["--param", "subnet_group=api-db-dr", "--param", &format!("security_groups={group}")])
            .args(["--param", &format!("parameter_group={parameter_group}")])
            .args(["--param", &format!("dsn={}", db.dsn())])
            .args(["--param", &format!("zone={zone}"), "--param", "record=db.example.com"])
            .args(["--param", &format!("service_url={}/health/ready", standin.url)])
            .arg("--yes")
    };

    // A dry run finds the copy and previews every step.
    let out =
        params(runbook(&moto, &proxy, "region-failover-from-snapshot", &audit), "api-pg15").arg("--dry-run").run();
    out.ok()
        .mentions("would restore snapshot drctl-api-20261205-010000 into a new instance api-db-restored", "the copy")
        .mentions("would UPSERT it -> the endpoint of instance api-db-restored (not there yet)", "the DNS preview");

    // RDS's default parameter group is refused before any call.
    let out = params(runbook(&moto, &proxy, "region-failover-from-snapshot", &audit), "default.postgres15").run();
    out.code_is(2).mentions("parameter group default.postgres15 is RDS's default", "the refusal");
    assert_eq!(instances(&moto, "us-west-2"), Vec::<String>::new(), "an instance was made\n{out}");
    assert_eq!(proxy.calls("RestoreDBInstanceFromDBSnapshot"), 0, "{proxy}");

    // Killed while it waits out the old TTL (20 s), after the DNS change.
    let running =
        params(runbook(&moto, &proxy, "region-failover-from-snapshot", &audit), "api-pg15").stream_stdout().spawn();
    let mut running = running;
    for _ in 0..600 {
        if record(&moto, &zone).starts_with("api-db-restored.") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(running.kill9(), "the run ended before it could be killed");
    let killed = running.finish();
    let run = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|r| r["event"] == "run-start")
        .map(|r| r["run"].as_str().unwrap().to_string())
        .unwrap();
    let restored = format!("api-db-restored api-db-dr {group} api-pg15");
    assert_eq!(instances(&moto, "us-west-2"), vec![restored.clone()], "{killed}");

    let out = moto
        .aws("runbook")
        .args(["run", "region-failover-from-snapshot", "--dir"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks"))
        .arg("--audit-log")
        .arg(&audit)
        .args(["--resume", &run, "--yes"])
        .timeout(Duration::from_secs(300))
        .run();
    out.ok()
        .mentions("restore the DR snapshot copy: done in run", "the restore not repeated")
        .mentions("already switched: db.example.com CNAME -> api-db-restored.", "the DNS change not repeated")
        .mentions("every step succeeded", "the end");
    assert_eq!(instances(&moto, "us-west-2"), vec![restored], "one instance, placed as asked");
    assert_eq!((proxy.calls("RestoreDBInstanceFromDBSnapshot"), dns_changes(&proxy)), (1, 1), "{proxy}");
    assert!(record(&moto, &zone).starts_with("api-db-restored."), "{}", record(&moto, &zone));
    assert_eq!(standin.status("/health/ready"), 200);
}

#[test]
fn promote_replica_rds_runbook_previews_then_promotes_and_the_service_turns_ready() {
    let ws = Workspace::new_public();
    let moto = Moto::empty();
    let proxy = FaultProxy::start(&moto.endpoint);
    moto.python(
        "client('rds').create_db_instance(DBInstanceIdentifier='api-db', Engine='postgres', \
         DBInstanceClass='db.t3.micro', AllocatedStorage=20, MasterUsername='app', MasterUserPassword='secret-pw-1')\n\
         client('rds').create_db_instance_read_replica(DBInstanceIdentifier='api-db-ro', \
         SourceDBInstanceIdentifier='api-db')",
        &[],
    );
    replica_lag(&moto, "us-east-1", "api-db-ro", 4.0);
    let db = postgres(&ws);
    let standin = Standin::start(&db.dsn());
    let audit = ws.join("audit.jsonl");
    let run = || {
        runbook(&moto, &proxy, "promote-replica-rds", &audit)
            .args(["--param", "replica=api-db-ro", "--param", "region=us-east-1"])
            .args(["--param", &format!("replica_dsn={}", db.dsn())])
            .args(["--param", &format!("service_url={}/health/ready", standin.url)])
    };
    run().arg("--dry-run").run().code_is(15).mentions("REFUSE old primary fenced: api-db is available", "the gate");
    moto.python("client('rds').stop_db_instance(DBInstanceIdentifier='api-db')", &[]);
    run().arg("--dry-run").run().ok().mentions("ok     replica lag: ReplicaLag 4 s (at most 30 s allowed)", "the lag");
    assert_eq!(proxy.calls("PromoteReadReplica"), 0, "a dry run promoted\n{proxy}");
    run().arg("--yes").run().ok().mentions("promoted: api-db-ro is a standalone instance", "the promotion");
    assert_eq!(proxy.calls("PromoteReadReplica"), 1, "{proxy}");
    assert!(!still_a_replica(&moto, "us-east-1", "api-db-ro"));
}

#[test]
fn an_rds_point_in_time_restore_lands_where_asked_and_never_in_rds_defaults() {
    let ws = Workspace::new_public();
    let moto = Moto::empty();
    let proxy = FaultProxy::start(&moto.endpoint);
    moto.python(
        "client('rds').create_db_instance(DBInstanceIdentifier='api-db', Engine='postgres', \
         DBInstanceClass='db.t3.micro', AllocatedStorage=20, MasterUsername='app', MasterUserPassword='secret-pw-1', \
         BackupRetentionPeriod=7)",
        &[],
    );
    let group = network(&moto, "us-east-1");
    let dir = ws.join("runbooks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("rds-pitr.yaml"),
        "name: rds-pitr\n\
         description: api-db as it was, in a new instance\n\
         parameters:\n  \
           time: {type: time, description: the moment}\n  \
           security_groups: {description: the groups}\n\
         steps:\n  \
           - name: restore\n    \
             action: rds.restore-to-point-in-time\n    \
             with:\n      \
               source_instance: api-db\n      \
               instance: api-db-pitr\n      \
               region: us-east-1\n      \
               point_in_time: ${time}\n      \
               subnet_group: api-db-dr\n      \
               security_groups: ${security_groups}\n      \
               parameter_group: api-pg15\n",
    )
    .unwrap();
    let run = |groups: &str| {
        moto.aws_via("runbook", &proxy.endpoint())
            .args(["run", "rds-pitr", "--dir"])
            .arg(&dir)
            .arg("--audit-log")
            .arg(ws.join("audit.jsonl"))
            .args(["--param", "time=2026-12-05 10:00:00+00", "--param", &format!("security_groups={groups}")])
    };
    run(" , ").run().code_is(2).mentions("set security groups", "the refusal");
    run("default").run().code_is(2).mentions("VPC's default group", "the refusal");
    assert_eq!(proxy.calls("RestoreDBInstanceToPointInTime"), 0, "{proxy}");
    run(&group).arg("--dry-run").run().ok().mentions(
        "would restore api-db as of 2026-12-05T10:00:00+00:00 into a new instance api-db-pitr in us-east-1",
        "the preview",
    );
    run(&group).run().ok().mentions("restored api-db as of 2026-12-05T10:00:00+00:00 into api-db-pitr", "the restore");
    assert_eq!(proxy.calls("RestoreDBInstanceToPointInTime"), 1, "{proxy}");
    let placed: Vec<String> =
        instances(&moto, "us-east-1").into_iter().filter(|l| l.starts_with("api-db-pitr ")).collect();
    assert_eq!(placed, vec![format!("api-db-pitr api-db-dr {group} api-pg15")]);
    // The name is taken now: a second run fails the step, makes nothing.
    run(&group).run().code_is(16).mentions("an instance api-db-pitr exists already", "the refusal");
    assert_eq!(proxy.calls("RestoreDBInstanceToPointInTime"), 1, "{proxy}");
}

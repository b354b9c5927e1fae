//! `drctl drill --rds` against moto's RDS API, with a real PostgreSQL whose logical dump the
//! drill restores locally: the scratch instance is restored once, placed as the policy says,
//! tagged, checked (moto's endpoints serve nothing, so the connection check fails and names the
//! endpoint), and deleted (or kept with --keep), as describe calls and a proxy counting the calls
//! that reached moto show.

use std::path::Path;
use std::time::Duration;

use crate::failover::network;
use crate::harness::faultproxy::FaultProxy;
use crate::harness::moto::Moto;
use crate::harness::pg::Cluster;
use crate::harness::*;

/// A `kind: rds` policy for `orders-db` whose connection is the local server (`dsn`), with a
/// local repository and, when given, an `rds.drill` placement.
fn policy(dsn: &str, repo: &Path, placement: Option<&str>) -> String {
    let drill = placement.map_or(String::new(), |groups| {
        format!(
            "  drill:\n    subnet_group: api-db-dr\n    security_groups: [{groups}]\n    parameter_group: api-pg15\n\
             \x20   instance_class: db.t3.small\n"
        )
    });
    format!(
        "name: orders\nkind: rds\ndatabase:\n  dsn: \"{dsn}\"\n\
         sources:\n  dump:\n    type: logical-dump\n    databases: [orders]\n    schedule: \"0 */4 * * *\"\n\
         rds:\n  instance: orders-db\n  region: us-east-1\n  dr_region: us-west-2\n\
         \x20 snapshot_schedule: \"0 * * * *\"\n  snapshot_retention: 7d\n{drill}\
         repositories:\n  primary:\n    location: {}\n    password_env: DRCTL_PASSWORD\n\
         retention:\n  keep_last: 3\ntargets:\n  rto: 10m\n  rpo: 5h\n\
         drill:\n  checks:\n    - name: orders-present\n      sql: SELECT count(*) FROM orders\n      expect: \"50\"\n",
        repo.display()
    )
}

/// The scratch instances drctl made: `id subnet-group security-groups parameter-groups class`.
fn scratch_instances(moto: &Moto) -> Vec<String> {
    let out = moto.python(
        "for i in client('rds').describe_db_instances()['DBInstances']:\n    \
             if i['DBInstanceIdentifier'].startswith('drctl-drill-'):\n        \
                 print(i['DBInstanceIdentifier'], i.get('DBSubnetGroup', {}).get('DBSubnetGroupName'), \
                 ','.join(g['VpcSecurityGroupId'] for g in i.get('VpcSecurityGroups', [])), \
                 ','.join(g['DBParameterGroupName'] for g in i.get('DBParameterGroups', [])), i['DBInstanceClass'])",
        &[],
    );
    out.lines().map(str::to_string).collect()
}

#[test]
fn an_rds_drill_restores_a_scratch_instance_where_the_policy_says_checks_it_and_deletes_it() {
    let ws = Workspace::new_public();
    let moto = Moto::empty();
    let proxy = FaultProxy::start(&moto.endpoint);
    moto.python(
        "client('rds').create_db_instance(DBInstanceIdentifier='orders-db', Engine='postgres', \
         DBInstanceClass='db.t3.micro', AllocatedStorage=20, MasterUsername='app', MasterUserPassword='secret-pw-1', \
         BackupRetentionPeriod=7)",
        &[],
    );
    let group = network(&moto, "us-east-1");

    // The dump the drill restores locally, with a heartbeat in it.
    let mut server = Cluster::init(&ws.join("pg"), &[]);
    server.start();
    server.sql("CREATE DATABASE orders");
    server.sql_in("orders", "CREATE TABLE orders (id int PRIMARY KEY)");
    server.sql_in("orders", "INSERT INTO orders SELECT generate_series(1, 50)");
    let repo = ws.repo();
    repo.init();
    let dsn = server.dsn().replace("dbname=postgres", "dbname=orders");
    let bare = ws.join("bare.yaml");
    std::fs::write(&bare, policy(&dsn, &repo.path, None)).unwrap();
    Drctl::new().args(["heartbeat", "--policy"]).arg(&bare).run().ok();
    // `backup --policy` of a `kind: rds` policy also takes the RDS snapshot (not through the
    // proxy: only the drill's calls are counted).
    moto.aws("backup").args(["--policy"]).arg(&bare).timeout(Duration::from_secs(120)).run().ok();
    let drill = |file: &Path, extra: &[&str]| {
        moto.aws_via("drill", &proxy.endpoint())
            .args(["--json", "--policy"])
            .arg(file)
            .args(extra)
            .timeout(Duration::from_secs(600))
            .run()
    };

    // Without `rds.drill`, or with --snapshot, refused before any call to RDS.
    drill(&bare, &["--rds"]).code_is(2).stderr_mentions("has no `rds.drill`", "the key to add");
    let file = ws.join("orders.yaml");
    std::fs::write(&file, policy(&dsn, &repo.path, Some(&group))).unwrap();
    let snapshot = repo.snapshots()[0]["id"].as_str().unwrap().to_string();
    drill(&file, &["--rds", "--snapshot", &snapshot]).code_is(2).stderr_mentions("--rds restores the instance", "why");
    assert!(proxy.log().is_empty(), "a refused drill called AWS\n{proxy}");

    // A drill: the dump passes locally, the instance is restored as the policy places it, its
    // connection check fails (moto serves no PostgreSQL), and it is deleted all the same.
    let out = drill(&file, &["--rds", "--latest"]);
    out.code_is(16).stderr_mentions("check rds-connect failed: cannot connect to drctl-drill-orders-", "the RDS check");
    let record = out.json();
    for check in ["databases", "orders-present"] {
        let found = record["checks"].as_array().unwrap().iter().find(|c| c["name"] == check).unwrap();
        assert_eq!(found["status"], "pass", "{record:#}");
    }
    let rds = &record["rds"];
    let instance = rds["instance"].as_str().unwrap().to_string();
    assert!(instance.starts_with("drctl-drill-orders-"), "{rds}");
    assert_eq!((rds["deleted"].as_bool(), rds["kept"].as_bool()), (Some(true), Some(false)), "{rds}");
    assert_eq!((rds["source"].as_str(), rds["region"].as_str()), (Some("orders-db"), Some("us-east-1")));
    assert!(rds["restore_time"].is_null(), "--latest asks for the latest restorable time: {rds}");
    assert!(rds["latest_restorable"].is_string(), "what --latest got: {rds}");
    assert!(rds["endpoint"].as_str().unwrap().starts_with(&format!("{instance}.")), "{rds}");
    assert!(rds["rto_seconds"].is_null(), "no RDS RTO without passing checks: {rds}");
    let phases: Vec<&str> = record["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        phases,
        ["select", "rds-request", "open", "restore", "checks", "rds-restore", "rds-checks", "rds-delete"]
    );
    assert_eq!(proxy.calls("RestoreDBInstanceToPointInTime"), 1, "{proxy}");
    assert_eq!(proxy.calls("DeleteDBInstance"), 1, "{proxy}");
    assert_eq!(scratch_instances(&moto), Vec::<String>::new(), "the scratch instance is gone");
    // The table says what became of the instance.
    let out = moto.aws_via("drill", &proxy.endpoint()).args(["--rds", "--policy"]).arg(&file).run();
    out.code_is(16).mentions("RDS orders-db restored as of its latest restorable time (", "the RDS line");
    out.mentions("RDS instance drctl-drill-orders-", "the instance").mentions("deleted", "the deletion");
    let listed = Drctl::new().args(["drill", "list", "--json", "--policy"]).arg(&file).run().ok().json();
    assert_eq!(listed.as_array().unwrap().last().unwrap()["rds"]["deleted"], true, "{listed:#}");

    // --keep at a moment: left running where the policy placed it, tagged, named; the test
    // deletes it.
    let at = chrono::Utc::now().to_rfc3339();
    let out = drill(&file, &["--rds", "--keep", "--at", &at]);
    out.code_is(16);
    let rds = out.json()["rds"].clone();
    let kept = rds["instance"].as_str().unwrap().to_string();
    assert_eq!((rds["deleted"].as_bool(), rds["kept"].as_bool()), (Some(false), Some(true)), "{rds}");
    assert_eq!(rds["restore_time"].as_str().map(|t| &t[..19]), Some(&at[..19]), "{rds}");
    assert_eq!(scratch_instances(&moto), vec![format!("{kept} api-db-dr {group} api-pg15 db.t3.small")]);
    let tags = moto.python(
        "i = client('rds').describe_db_instances(DBInstanceIdentifier=args[0])['DBInstances'][0]\n\
         tags = client('rds').list_tags_for_resource(ResourceName=i['DBInstanceArn'])['TagList']\n\
         print(' '.join(sorted(t['Key'] + '=' + t['Value'] for t in tags)))",
        &[&kept],
    );
    assert!(tags.contains("drctl-policy=orders") && tags.contains("drctl-drill="), "{tags}");
    assert_eq!(proxy.calls("RestoreDBInstanceToPointInTime"), 3, "{proxy}");
    assert_eq!(proxy.calls("DeleteDBInstance"), 2, "--keep deleted it\n{proxy}");
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("drctl-drill-{}", out.json()["id"].as_str().unwrap())),
    );
    moto.python("client('rds').delete_db_instance(DBInstanceIdentifier=args[0], SkipFinalSnapshot=True)", &[&kept]);
    assert_eq!(scratch_instances(&moto), Vec::<String>::new());
}

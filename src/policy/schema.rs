//! The typed policy: what one YAML file in policies/ says about one protected system. Every
//! field here is a key of the file (policies/README.md is the reference, with examples); a value
//! of these types has passed validation, so the scheduler and `backup --policy` can act on it
//! without checking again.

use chrono::Duration;
use std::path::PathBuf;

use super::schedule::Schedule;
use crate::repo::retention::Rules;

#[derive(Debug, Clone)]
pub struct Policy {
    /// `name`: the protected system, e.g. `api-db` (lowercase letters, digits and hyphens: it
    /// names CronJobs and metric labels).
    pub name: String,
    /// `kind`: `self-managed` or `rds`.
    pub kind: Kind,
    /// `database`: how drctl connects to the server.
    pub database: Database,
    /// `sources`: what is backed up and when, in the order of the file.
    pub sources: Vec<Source>,
    /// `repositories`: where backups go.
    pub repositories: Repositories,
    /// `retention`: which snapshots `forget` keeps after each backup (the keys are the names of
    /// `forget`'s flags).
    pub retention: Rules,
    /// `targets`: the recovery objectives drills are measured against.
    pub targets: Targets,
    /// `drill`: what a restored database must answer, and how often heartbeats are written.
    pub drill: Drill,
    /// `rds`: the instance and its snapshots; present exactly when `kind` is `rds`.
    pub rds: Option<Rds>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PostgreSQL that drctl can reach as a server: base backups, WAL archive, logical dumps.
    SelfManaged,
    /// Amazon RDS: no replication connection and no archive_command, so logical dumps into the
    /// repository and RDS snapshots (RDS keeps its own point-in-time recovery).
    Rds,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    pub connection: Connection,
    /// `password_env` or `password_file`; none when the server trusts the client or a
    /// `~/.pgpass` or client certificate is used. Never the password itself.
    pub password: Option<Password>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// `dsn`: a libpq connection string or URL, without a password.
    Dsn(String),
    /// `host` (a name, an address or a socket directory), `port`, `user`, `dbname`, `sslmode`.
    Parts { host: String, port: Option<u16>, user: Option<String>, dbname: Option<String>, sslmode: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// `password_env`: the name of an environment variable holding it (e.g. from a Secret).
    Env(String),
    /// `password_file`: a file whose first line is it (e.g. a mounted Secret).
    File(PathBuf),
}

/// One entry of `sources`: a name (the key), what it backs up, and when.
#[derive(Debug, Clone)]
pub struct Source {
    /// The key under `sources`, e.g. `base` (`backup --policy FILE --source NAME` picks it).
    pub name: String,
    /// `type` and the keys that go with it.
    pub what: SourceKind,
    /// `schedule`: when it runs (5-field crontab, UTC).
    pub schedule: Schedule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// `type: base-backup`: a physical base backup; WAL is archived into the primary repository
    /// (drctl refuses a base backup of a server that does not archive), so every moment after the
    /// oldest kept base backup can be restored. Self-managed only.
    BaseBackup(BaseMode),
    /// `type: logical-dump`, `databases`: one `pg_dump` per database.
    LogicalDump { databases: Vec<String> },
    /// `type: config-snapshot`, `paths`: files and directories, e.g. mounted ConfigMaps and
    /// Secrets (absolute paths).
    ConfigSnapshot { paths: Vec<PathBuf> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseMode {
    /// `mode: stream`: over the replication protocol, from anywhere (e.g. a CronJob pod).
    Stream,
    /// `mode: local`, `pgdata`: read from the data directory beside the server (a sidecar).
    Local { pgdata: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repositories {
    /// `primary`: where every backup and the WAL archive go first.
    pub primary: Repository,
    /// `copies`: repositories (e.g. in the DR region) that `drctl copy` keeps in step.
    pub copies: Vec<Repository>,
    /// `key_rotation`: how old a key slot may get before reports call its rotation due
    /// (default 365d).
    pub key_rotation: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// `location`: an absolute directory or `s3://bucket/prefix`.
    pub location: String,
    /// `region`: the bucket's AWS region, when it is not the default one.
    pub region: Option<String>,
    /// How drctl opens it: exactly one of `password_env`, `password_file`, `key_file`,
    /// `kms_key_id`.
    pub key: KeySlot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySlot {
    /// `password_env`: an environment variable holding the passphrase.
    PasswordEnv(String),
    /// `password_file`: a file whose first line is the passphrase.
    PasswordFile(PathBuf),
    /// `key_file`: a key file from `drctl key add --new-key-file`.
    KeyFile(PathBuf),
    /// `kms_key_id`: the KMS key (id, ARN or alias) of the repository's KMS slot.
    Kms(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    /// `rto`: the longest a recovery may take, from the start of a restore to a database that
    /// passes its drill checks.
    pub rto: Duration,
    /// `rpo`: the most recent data a failure may lose.
    pub rpo: Duration,
}

/// `drill`: how drills of this system are measured and judged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drill {
    /// `checks`: what a restored database must answer for a drill to pass (may be empty).
    pub checks: Vec<DrillCheck>,
    /// `heartbeat`: how often `drctl schedule` writes a heartbeat row into the primary, the
    /// newest of which a drill's restore recovers to measure RPO (none: no heartbeats).
    pub heartbeat: Option<Duration>,
}

/// One entry of `drill.checks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillCheck {
    /// `name`: how reports refer to it.
    pub name: String,
    /// `database`: where to run it; the connection's database when absent.
    pub database: Option<String>,
    /// `sql`: the query.
    pub sql: String,
    /// `expect`: its output as `psql -At` prints it (columns joined by `|`, rows by newlines;
    /// booleans as `t` and `f`), compared without leading and trailing whitespace.
    pub expect: String,
}

/// `rds`: the instance a `kind: rds` policy protects.
#[derive(Debug, Clone)]
pub struct Rds {
    /// `instance`: the DB instance identifier.
    pub instance: String,
    /// `region`: where it runs.
    pub region: String,
    /// `dr_region`: where its snapshots are copied.
    pub dr_region: String,
    /// `snapshot_schedule`: when drctl takes a manual snapshot and copies it (crontab, UTC).
    pub snapshot_schedule: Schedule,
    /// `snapshot_retention`: how long those snapshots and their copies are kept.
    pub snapshot_retention: Duration,
    /// `drill`: where `drctl drill --rds` places its scratch instance (none: `--rds` is refused).
    pub drill: Option<RdsDrill>,
}

/// `rds.drill`: the network and settings of a drill's scratch instance. All three placements are
/// required: without them RDS would put the instance in the default VPC, open to the VPC's default
/// security group, with its default parameter group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdsDrill {
    /// `subnet_group`: the DB subnet group (in `rds.region`).
    pub subnet_group: String,
    /// `security_groups`: VPC security group ids.
    pub security_groups: Vec<String>,
    /// `parameter_group`: the DB parameter group (not a `default.*` one).
    pub parameter_group: String,
    /// `instance_class`: e.g. `db.t3.medium`; none: the source's.
    pub instance_class: Option<String>,
}

impl Policy {
    /// Whether drctl archives the database's WAL: a self-managed server with base backups (drctl
    /// takes none of a server that does not archive). It makes PITR and a continuous RPO.
    pub fn archives_wal(&self) -> bool {
        self.kind == Kind::SelfManaged && self.sources.iter().any(|s| matches!(s.what, SourceKind::BaseBackup(_)))
    }
}

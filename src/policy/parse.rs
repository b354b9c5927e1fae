//! From the YAML tree to the typed policy: the keys of each section (policies/README.md is the
//! reference), and the checks that one section can make alone: names, locations, passwords that
//! are never inline, exactly one key slot. Rules that relate sections are in rules.rs.

use marked_yaml::types::MarkedMappingNode;

use super::schema::*;
use super::yaml::{Found, Map, Value, all, optional};
use crate::repo::retention::Rules;

const KINDS: [(&str, Kind); 2] = [("self-managed", Kind::SelfManaged), ("rds", Kind::Rds)];

#[derive(Clone, Copy)]
enum SourceType {
    BaseBackup,
    LogicalDump,
    ConfigSnapshot,
}

const SOURCE_TYPES: [(&str, SourceType); 3] = [
    ("base-backup", SourceType::BaseBackup),
    ("logical-dump", SourceType::LogicalDump),
    ("config-snapshot", SourceType::ConfigSnapshot),
];

#[derive(Clone, Copy)]
enum Mode {
    Stream,
    Local,
}

const SSLMODES: [&str; 6] = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

const INLINE_PASSWORD: &str = "policy files live in git: name an environment variable (`password_env: VAR`) or a \
                               file (`password_file: /path`, e.g. a mounted Secret) instead";

pub fn policy(root: &MarkedMappingNode, found: &Found) -> Option<Policy> {
    let mut top = Map::root(root, found);
    let name = top.require("name", "name the protected system, e.g. `name: api-db`").and_then(|v| {
        let text = v.text()?;
        valid_name(&v, text).then(|| text.to_string())
    });
    let kind = top.require("kind", "write `kind: self-managed` or `kind: rds`").and_then(|v| v.choice(&KINDS));
    let database = top.require("database", "say how to connect: `database:` with `dsn` or `host`").and_then(database);
    let sources = top.require("sources", "name what to back up, e.g. `sources:` with a logical-dump").and_then(sources);
    let repositories =
        top.require("repositories", "say where backups go: `repositories:` with a `primary`").and_then(repositories);
    let retention =
        top.require("retention", "say what to keep, e.g. `retention:` with `keep_daily: 7`").and_then(retention);
    let targets = top.require("targets", "set the objectives: `targets:` with `rto` and `rpo`").and_then(targets);
    let drill = optional(top.get("drill"), drill);
    let rds = optional(top.get("rds"), rds);
    top.finish();
    Some(Policy {
        name: name?,
        kind: kind?,
        database: database?,
        sources: sources?,
        repositories: repositories?,
        retention: retention?,
        targets: targets?,
        drill: drill?.unwrap_or_default(),
        rds: rds?,
    })
}

/// Whether `name` (of the policy, or of a source) can become part of CronJob names and metric
/// labels; reported at `at` when it cannot.
fn valid_name(at: &Value, name: &str) -> bool {
    let valid = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        at.problem(
            format!("`{name}` is not a valid name"),
            "use lowercase letters, digits and hyphens, starting with a letter (at most 63): it names CronJobs and \
             metric labels",
        );
    }
    valid
}

fn env_name(v: &Value) -> Option<String> {
    let text = v.text()?;
    let valid = text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        v.problem(
            format!("`{}` must name an environment variable, not `{text}`", v.path()),
            "give the variable's name (e.g. `API_DB_PASSWORD`), never the secret itself",
        );
        return None;
    }
    Some(text.to_string())
}

/// Whether a connection string carries a password: `password=…` anywhere, or `user:secret@`
/// in a URL.
fn dsn_has_password(dsn: &str) -> bool {
    let keyword = dsn.match_indices("password").any(|(i, _)| dsn[i + "password".len()..].trim_start().starts_with('='));
    let in_url = ["postgres://", "postgresql://"].iter().any(|scheme| {
        dsn.strip_prefix(scheme).is_some_and(|rest| {
            let authority = rest.split(['/', '?']).next().unwrap_or("");
            authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
        })
    });
    keyword || in_url
}

fn database(v: Value) -> Option<Database> {
    let mut m = v.map()?;
    if let Some(inline) = m.get("password") {
        inline.problem("inline password in `database`", INLINE_PASSWORD);
    }
    let dsn = m.get("dsn");
    let host = m.get("host");
    let parts = [m.get("port"), m.get("user"), m.get("dbname"), m.get("sslmode")];
    let password = one_key(
        &mut m,
        &["password_env", "password_file"],
        |key, v| match key {
            "password_env" => env_name(v).map(Password::Env),
            _ => v.absolute_path().map(Password::File),
        },
        "keep one: the password comes from one place",
    );
    let connection = match (dsn, host) {
        (Some(dsn), host) if host.is_some() || parts.iter().any(Option::is_some) => {
            dsn.problem(
                "`database.dsn` and connection parts (`host`, `port`, `user`, `dbname`, `sslmode`) both given",
                "write the connection one way: all of it in `dsn`, or `host` and the other parts without `dsn`",
            );
            None
        }
        (Some(dsn), _) => dsn.text().and_then(|text| {
            if dsn_has_password(text) {
                dsn.problem("inline password in `database.dsn`", INLINE_PASSWORD);
                return None;
            }
            Some(Connection::Dsn(text.to_string()))
        }),
        (None, Some(host)) => {
            let [port, user, dbname, sslmode] = parts;
            let host = host.string();
            let port = optional(port, |v| v.whole::<u16>());
            let user = optional(user, Value::string);
            let dbname = optional(dbname, Value::string);
            let sslmode = optional(sslmode, |v| v.choice(&SSLMODES.map(|mode| (mode, mode))).map(str::to_string));
            Some(Connection::Parts { host: host?, port: port?, user: user?, dbname: dbname?, sslmode: sslmode? })
        }
        (None, None) => {
            m.problem(
                "missing key `database.dsn` or `database.host`",
                "write `dsn: \"host=… user=… dbname=…\"`, or `host` with `port`, `user`, `dbname`, `sslmode`",
            );
            None
        }
    };
    m.finish();
    Some(Database { connection: connection?, password: password? })
}

/// The one key present among `keys` (alternatives, such as the ways to give a password), read
/// with `read`; `Some(None)` when none is. More than one is a problem (`hint` says what to do).
fn one_key<T>(
    m: &mut Map,
    keys: &[&'static str],
    read: impl Fn(&str, &Value) -> Option<T>,
    hint: &str,
) -> Option<Option<T>> {
    let mut present: Vec<(&str, Value)> = keys.iter().filter_map(|&key| m.get(key).map(|v| (key, v))).collect();
    present.sort_by_key(|(_, v)| v.at());
    match present.as_slice() {
        [] => Some(None),
        [(key, value)] => read(key, value).map(Some),
        [(first, _), (second, value), ..] => {
            value.problem(format!("`{first}` and `{second}` both given in `{}`", m.path()), hint);
            None
        }
    }
}

fn sources(v: Value) -> Option<Vec<Source>> {
    let entries = v.entries()?;
    if entries.is_empty() {
        v.problem("`sources` is empty", "add at least one source: a base-backup, logical-dump or config-snapshot");
        return None;
    }
    all(entries.into_iter().map(|(name, value)| {
        let valid = valid_name(&value, name);
        source(name, value).filter(|_| valid)
    }))
}

fn source(name: &str, v: Value) -> Option<Source> {
    let mut m = v.map()?;
    let kind = m
        .require("type", "write `type: base-backup`, `type: logical-dump` or `type: config-snapshot`")
        .and_then(|t| t.choice(&SOURCE_TYPES));
    let schedule = m
        .require("schedule", "say when it runs, e.g. `schedule: \"0 2 * * *\"` (02:00 UTC)")
        .and_then(|s| s.schedule());
    // Without a type, which keys belong here is unknown: report none of them.
    let what = match kind? {
        SourceType::BaseBackup => base_backup(&mut m),
        SourceType::LogicalDump => m
            .require("databases", "name the databases to dump, e.g. `databases: [app]`")
            .and_then(|v| v.nonempty_list("database").and_then(|items| all(items.iter().map(Value::string))))
            .map(|databases| SourceKind::LogicalDump { databases }),
        SourceType::ConfigSnapshot => m
            .require("paths", "list the files and directories, e.g. `paths: [/etc/app-config]`")
            .and_then(|v| v.nonempty_list("path").and_then(|items| all(items.iter().map(Value::absolute_path))))
            .map(|paths| SourceKind::ConfigSnapshot { paths }),
    };
    m.finish();
    Some(Source { name: name.to_string(), what: what?, schedule: schedule? })
}

fn base_backup(m: &mut Map) -> Option<SourceKind> {
    let mode = m
        .require("mode", "write `mode: stream` (over the network) or `mode: local` (a sidecar beside the server)")
        .and_then(|v| v.choice(&[("stream", Mode::Stream), ("local", Mode::Local)]));
    let pgdata = m.get("pgdata");
    match (mode?, pgdata) {
        (Mode::Stream, None) => Some(SourceKind::BaseBackup(BaseMode::Stream)),
        (Mode::Local, Some(pgdata)) => {
            pgdata.absolute_path().map(|pgdata| SourceKind::BaseBackup(BaseMode::Local { pgdata }))
        }
        (Mode::Local, None) => {
            m.problem(
                format!("missing key `{}.pgdata`", m.path()),
                "a local base backup reads the data directory: write `pgdata: /var/lib/postgresql/data`",
            );
            None
        }
        (Mode::Stream, Some(pgdata)) => {
            pgdata.problem(
                "`pgdata` is only for `mode: local`",
                "remove it: a stream base backup reads over the replication protocol, or write `mode: local`",
            );
            None
        }
    }
}

/// How old a key slot may get by default before reports call its rotation due: a year, the
/// common audit expectation (NIST SP 800-57 allows a key-wrapping key up to two).
const DEFAULT_KEY_ROTATION: chrono::Duration = chrono::Duration::days(365);

fn repositories(v: Value) -> Option<Repositories> {
    let mut m = v.map()?;
    let primary = m.require("primary", "say where backups go first: `primary:` with a `location`").and_then(repository);
    let copies = optional(m.get("copies"), |v| v.list().and_then(|items| all(items.into_iter().map(repository))));
    let key_rotation = optional(m.get("key_rotation"), |v| v.duration());
    m.finish();
    Some(Repositories {
        primary: primary?,
        copies: copies?.unwrap_or_default(),
        key_rotation: key_rotation?.unwrap_or(DEFAULT_KEY_ROTATION),
    })
}

fn repository(v: Value) -> Option<Repository> {
    let mut m = v.map()?;
    if let Some(inline) = m.get("password") {
        inline.problem(format!("inline password in `{}`", v.path()), INLINE_PASSWORD);
    }
    let location = m
        .require("location", "write `location: s3://bucket/prefix` or an absolute directory")
        .and_then(|v| repo_location(&v));
    let region = optional(m.get("region"), aws_region);
    let key = one_key(
        &mut m,
        &["password_env", "password_file", "key_file", "kms_key_id"],
        |key, v| match key {
            "password_env" => env_name(v).map(KeySlot::PasswordEnv),
            "password_file" => v.absolute_path().map(KeySlot::PasswordFile),
            "key_file" => v.absolute_path().map(KeySlot::KeyFile),
            _ => v.text().map(|id| KeySlot::Kms(id.to_string())),
        },
        "keep one: drctl opens a repository with one key slot",
    );
    let key = match key {
        Some(None) => {
            m.problem(
                format!("`{}` has no key slot", v.path()),
                "add one of `kms_key_id`, `key_file`, `password_file` or `password_env`",
            );
            None
        }
        other => other.flatten(),
    };
    if let (Some(location), Some(Some(_))) = (&location, &region)
        && !location.starts_with("s3://")
    {
        m.problem(
            format!("`{}.region` given for a local directory", v.path()),
            "remove `region`: it names the region of an s3:// bucket",
        );
    }
    m.finish();
    Some(Repository { location: location?, region: region?, key: key? })
}

fn repo_location(v: &Value) -> Option<String> {
    let text = v.text()?;
    let problem = if let Some(rest) = text.strip_prefix("s3://") {
        if rest.contains('?') {
            Some("a region belongs in `region:`, not in the location")
        } else if rest.split('/').next().unwrap_or("").is_empty() {
            Some("an s3:// location names a bucket: `s3://bucket/prefix`")
        } else {
            None
        }
    } else if text.contains("://") {
        Some("drctl stores to local directories and s3:// buckets")
    } else if !text.starts_with('/') {
        Some("a local directory must be an absolute path")
    } else {
        None
    };
    if let Some(hint) = problem {
        v.problem(format!("`{}` is not a repository location: `{text}`", v.path()), hint);
        return None;
    }
    Some(text.to_string())
}

fn aws_region(v: &Value) -> Option<String> {
    let text = v.text()?;
    let parts: Vec<&str> = text.split('-').collect();
    let valid = parts.len() >= 3
        && parts.last().is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()));
    if !valid {
        v.problem(format!("`{}` is not an AWS region: `{text}`", v.path()), "write a region name such as `us-east-1`");
        return None;
    }
    Some(text.to_string())
}

fn retention(v: Value) -> Option<Rules> {
    let mut m = v.map()?;
    let mut count = |key| optional(m.get(key), |v| v.whole::<u32>()).map(Option::unwrap_or_default);
    let keep_last = count("keep_last");
    let keep_hourly = count("keep_hourly");
    let keep_daily = count("keep_daily");
    let keep_weekly = count("keep_weekly");
    let keep_monthly = count("keep_monthly");
    let keep_yearly = count("keep_yearly");
    let keep_within = optional(m.get("keep_within"), Value::duration);
    let pitr_window = optional(m.get("pitr_window"), Value::duration);
    let retention = Rules {
        keep_last: keep_last?,
        keep_hourly: keep_hourly?,
        keep_daily: keep_daily?,
        keep_weekly: keep_weekly?,
        keep_monthly: keep_monthly?,
        keep_yearly: keep_yearly?,
        keep_within: keep_within?,
        pitr_window: pitr_window?,
    };
    if retention.is_empty() {
        m.problem(
            "`retention` keeps nothing but each source's newest snapshot",
            "set at least one rule, e.g. `keep_daily: 7` (as `drctl forget` requires)",
        );
    }
    m.finish();
    Some(retention)
}

fn targets(v: Value) -> Option<Targets> {
    let mut m = v.map()?;
    let rto = m.require("rto", "the longest a recovery may take, e.g. `rto: 1h`").and_then(|v| v.duration());
    let rpo = m.require("rpo", "the most recent data a failure may lose, e.g. `rpo: 15m`").and_then(|v| v.duration());
    m.finish();
    Some(Targets { rto: rto?, rpo: rpo? })
}

fn drill(v: &Value) -> Option<Drill> {
    let mut m = v.map()?;
    let checks = optional(m.get("checks"), |v| {
        v.nonempty_list("check").and_then(|items| all(items.into_iter().map(drill_check)))
    });
    let heartbeat = optional(m.get("heartbeat"), Value::duration);
    m.finish();
    Some(Drill { checks: checks?.unwrap_or_default(), heartbeat: heartbeat? })
}

fn drill_check(v: Value) -> Option<DrillCheck> {
    let mut m = v.map()?;
    let name = m.require("name", "name the check for reports, e.g. `name: orders-exist`").and_then(|v| v.string());
    let database = optional(m.get("database"), Value::string);
    let sql = m.require("sql", "write the query, e.g. `sql: SELECT count(*) > 0 FROM orders`").and_then(|v| v.string());
    let expect = m.require("expect", "write what psql prints for it, e.g. `expect: t`").and_then(|v| {
        if v.is_plain_bool() {
            v.problem(
                format!("`{}` is a YAML boolean, which never matches psql's output", v.path()),
                "psql prints booleans as `t` and `f`: write `expect: t`, or quote the text (`\"true\"`)",
            );
            return None;
        }
        v.string()
    });
    m.finish();
    Some(DrillCheck { name: name?, database: database?, sql: sql?, expect: expect? })
}

fn rds(v: &Value) -> Option<Rds> {
    let mut m = v.map()?;
    let instance = m.require("instance", "the DB instance identifier, e.g. `instance: orders-prod`").and_then(|v| {
        let text = v.text()?;
        let valid = text.len() <= 63
            && text.starts_with(|c: char| c.is_ascii_alphabetic())
            && !text.ends_with('-')
            && !text.contains("--")
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid {
            v.problem(
                format!("`{}` is not an RDS instance identifier: `{text}`", v.path()),
                "RDS identifiers are letters, digits and single hyphens, starting with a letter (at most 63)",
            );
        }
        valid.then(|| text.to_string())
    });
    let region = m.require("region", "the instance's region, e.g. `region: us-east-1`").and_then(|v| aws_region(&v));
    let dr_region =
        m.require("dr_region", "where snapshots are copied, e.g. `dr_region: us-west-2`").and_then(|v| aws_region(&v));
    let snapshot_schedule = m
        .require("snapshot_schedule", "when to snapshot and copy, e.g. `snapshot_schedule: \"0 * * * *\"` (hourly)")
        .and_then(|v| v.schedule());
    let snapshot_retention = m
        .require("snapshot_retention", "how long snapshots and their copies stay, e.g. `snapshot_retention: 7d`")
        .and_then(|v| v.duration());
    let drill = optional(m.get("drill"), rds_drill);
    m.finish();
    Some(Rds {
        instance: instance?,
        region: region?,
        dr_region: dr_region?,
        snapshot_schedule: snapshot_schedule?,
        snapshot_retention: snapshot_retention?,
        drill: drill?,
    })
}

fn rds_drill(v: &Value) -> Option<RdsDrill> {
    let mut m = v.map()?;
    let subnet_group = m
        .require("subnet_group", "the DB subnet group of the scratch instance, e.g. `subnet_group: orders-drill`")
        .and_then(|v| v.string());
    let security_groups = m
        .require("security_groups", "the scratch instance's VPC security groups, e.g. `security_groups: [sg-0abc]`")
        .and_then(|v| {
            let items = v.nonempty_list("security group")?;
            let groups = all(items.iter().map(Value::string))?;
            if groups.iter().any(|g| g == "default") {
                v.problem(
                    format!("`{}` names the VPC's default security group", v.path()),
                    "name the service's own groups: the default group is open to all of the VPC",
                );
                return None;
            }
            Some(groups)
        });
    let parameter_group = m
        .require("parameter_group", "the scratch instance's DB parameter group, e.g. `parameter_group: orders-pg15`")
        .and_then(|v| {
            let name = v.string()?;
            if name.starts_with("default.") {
                v.problem(
                    format!("`{}` is RDS's default parameter group `{name}`", v.path()),
                    "name the service's own parameter group, so the drill runs with its settings",
                );
                return None;
            }
            Some(name)
        });
    let instance_class = optional(m.get("instance_class"), Value::string);
    m.finish();
    Some(RdsDrill {
        subnet_group: subnet_group?,
        security_groups: security_groups?,
        parameter_group: parameter_group?,
        instance_class: instance_class?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_connection_strings_are_found() {
        for dsn in [
            "host=db password=secret",
            "host=db password = secret user=x",
            "postgresql://app:secret@db/app",
            "postgres://app:secret@db:5432/app?sslmode=require",
            "postgres://db/app?password=secret",
        ] {
            assert!(dsn_has_password(dsn), "{dsn}");
        }
        for dsn in ["host=db user=backup passfile=/run/pgpass", "postgresql://app@db/app", "postgres://db/a:b@c"] {
            assert!(!dsn_has_password(dsn), "{dsn}");
        }
    }
}

//! What a base backup read straight from the data directory leaves out, following what
//! pg_basebackup itself sends (PostgreSQL 15's basebackup.c): runtime state rebuilt at start-up,
//! the WAL (it comes from the archive), temporary files and relations, and the main forks of
//! unlogged relations (only their init forks are kept, as a restore resets them anyway).

use std::ffi::OsString;
use std::path::Path;

/// Directories kept, but empty.
const EMPTY_DIRS: &[&str] =
    &["pg_wal", "pg_stat_tmp", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_subtrans"];

/// Files never copied, anywhere in the top directory. backup_label and tablespace_map come
/// from pg_backup_stop instead; the signal files are written by the restore; pg_control is
/// read last, after everything else.
const SKIPPED_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "backup_manifest",
    "postmaster.pid",
    "postmaster.opts",
    "recovery.signal",
    "standby.signal",
];

pub const PG_CONTROL: &str = "global/pg_control";

/// The major version of the cluster in `dir`, from its PG_VERSION file ("15").
pub fn major_version(dir: &Path) -> Result<u32, super::Error> {
    let path = dir.join("PG_VERSION");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| super::Error::database(format!("cannot read {}: {e}", path.display())))?;
    text.trim().parse().map_err(|_| super::Error::database(format!("{} holds no version: {text:?}", path.display())))
}

/// The pruning rule for a data directory of PostgreSQL `major` (e.g. "15"): in a tablespace,
/// only this version's `PG_<major>_<catalog version>` folder is copied (an upgraded cluster's
/// tablespace may still hold the old version's), as pg_basebackup does.
pub fn prune_for(major: &str) -> impl Fn(&Path, &mut Vec<OsString>) + Send + Sync + 'static {
    let version_dir = format!("PG_{major}_");
    move |dir, names| {
        let mut parts = dir.components();
        let in_tablespace_root = parts.next().is_some_and(|c| c.as_os_str() == "pg_tblspc")
            && parts.next().is_some()
            && parts.next().is_none();
        if in_tablespace_root {
            names.retain(|n| n.to_str().is_some_and(|n| n.starts_with(&version_dir)));
        }
        prune(dir, names);
    }
}

/// Removes from `names` (the sorted listing of `dir`, relative to the data directory) what a
/// base backup does not copy.
pub fn prune(dir: &Path, names: &mut Vec<OsString>) {
    let dir = dir.to_str().unwrap_or("");
    if dir == "pg_wal" {
        // Only archive_status stays: PostgreSQL expects it to exist.
        names.retain(|n| n == "archive_status");
        return;
    }
    if EMPTY_DIRS.contains(&dir) || dir == "pg_wal/archive_status" {
        names.clear();
        return;
    }
    let is_database_dir = is_database_dir(dir);
    let unlogged: Vec<String> = if is_database_dir {
        names.iter().filter_map(|n| n.to_str()?.strip_suffix("_init").map(str::to_string)).collect()
    } else {
        Vec::new()
    };
    names.retain(|name| {
        let Some(name) = name.to_str() else { return true };
        if name.starts_with("pgsql_tmp") || name.starts_with("pg_internal.init") {
            return false;
        }
        if dir.is_empty() && SKIPPED_FILES.contains(&name) {
            return false;
        }
        if dir == "global" && name == "pg_control" {
            return false;
        }
        if is_database_dir {
            if is_temp_relation(name) {
                return false;
            }
            let relation = name.split(['.', '_']).next().unwrap_or(name);
            if unlogged.iter().any(|u| u == relation) && !name.ends_with("_init") && !name.contains("_init.") {
                return false;
            }
        }
        true
    });
}

/// Tablespaces are symlinks in pg_tblspc; the backup follows them and stores their contents
/// under pg_tblspc/<oid>, so a restore brings them back inside the new data directory. A pg_wal
/// that is a symlink (initdb --waldir) is restored as a plain directory.
pub fn follow(path: &Path) -> bool {
    if path == Path::new("pg_wal") {
        return true;
    }
    let mut parts = path.components();
    parts.next().is_some_and(|c| c.as_os_str() == "pg_tblspc") && parts.next().is_some() && parts.next().is_none()
}

/// `base/<oid>` or `pg_tblspc/<oid>/<version dir>/<oid>`.
fn is_database_dir(dir: &str) -> bool {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match dir.split('/').collect::<Vec<_>>().as_slice() {
        ["base", db] => numeric(db),
        ["pg_tblspc", ts, _, db] => numeric(ts) && numeric(db),
        _ => false,
    }
}

/// Temporary relations: `t<backend>_<relfilenode>[_fork][.segment]`.
fn is_temp_relation(name: &str) -> bool {
    name.strip_prefix('t').and_then(|rest| rest.split_once('_')).is_some_and(|(backend, rest)| {
        !backend.is_empty()
            && backend.bytes().all(|b| b.is_ascii_digit())
            && rest.bytes().next().is_some_and(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pruned(dir: &str, names: &[&str]) -> Vec<String> {
        let mut list: Vec<OsString> = names.iter().map(OsString::from).collect();
        prune(Path::new(dir), &mut list);
        list.into_iter().map(|n| n.into_string().unwrap()).collect()
    }

    #[test]
    fn runtime_state_and_wal_are_left_out() {
        let top =
            ["PG_VERSION", "backup_label", "base", "pg_wal", "postmaster.pid", "postgresql.conf", "standby.signal"];
        assert_eq!(pruned("", &top), ["PG_VERSION", "base", "pg_wal", "postgresql.conf"]);
        assert_eq!(pruned("pg_wal", &["000000010000000000000001", "archive_status"]), ["archive_status"]);
        assert_eq!(pruned("pg_replslot", &["slot1"]), Vec::<String>::new());
        assert_eq!(pruned("global", &["1262", "pg_control", "pg_internal.init"]), ["1262"]);
    }

    #[test]
    fn temporary_and_unlogged_relations_are_left_out() {
        let names = ["16384", "16384_fsm", "16390", "16390.1", "16390_fsm", "16390_init", "t3_16400", "pgsql_tmp"];
        assert_eq!(pruned("base/5", &names), ["16384", "16384_fsm", "16390_init"]);
        assert_eq!(pruned("pg_tblspc/16500/PG_15_202209061/5", &["t12_1", "7"]), ["7"]);
        assert_eq!(pruned("base", &["t3_16400"]), ["t3_16400"], "only inside database directories");
    }

    #[test]
    fn a_tablespace_keeps_only_this_versions_folder() {
        let rule = prune_for("15");
        let mut names: Vec<OsString> = ["PG_14_202107181", "PG_15_202209061"].iter().map(OsString::from).collect();
        rule(Path::new("pg_tblspc/16500"), &mut names);
        assert_eq!(names, ["PG_15_202209061"]);
        let mut top: Vec<OsString> = ["PG_VERSION", "postmaster.pid"].iter().map(OsString::from).collect();
        rule(Path::new(""), &mut top);
        assert_eq!(top, ["PG_VERSION"]);
    }

    #[test]
    fn only_tablespace_links_are_followed() {
        assert!(follow(Path::new("pg_tblspc/16500")));
        assert!(!follow(Path::new("pg_tblspc")));
        assert!(!follow(Path::new("pg_tblspc/16500/x")));
        assert!(follow(Path::new("pg_wal")));
        assert!(!follow(Path::new("pg_wal/archive_status")));
    }
}

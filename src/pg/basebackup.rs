//! Physical base backups over the replication protocol: `pg_basebackup -Ft -X none -D -` writes
//! the data directory as one tar stream, which the caller parses on the fly (never spooled to
//! disk). With `-X none` the WAL comes from the archive (`drctl wal-push`), and pg_basebackup
//! waits at the end until the last segment it needs is archived.

use std::io::Read;
use std::path::Path;
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use super::Error;
use super::wal_blocks::RelFork;

/// The server facts checked before a backup starts.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub archive_mode: String,
    pub version_num: u32,
    pub in_recovery: bool,
    /// Bytes per WAL segment (16 MiB unless initdb chose otherwise).
    pub wal_segment_size: u64,
}

fn unreachable(detail: String) -> Error {
    Error::Database { detail }
}

/// Connects with psql and reads what the backup depends on; refuses a server whose WAL is not
/// archived, since such a backup could never be restored.
pub fn preflight(conn: &super::Conn) -> Result<ServerInfo, Error> {
    let sql = "SELECT current_setting('archive_mode'), current_setting('server_version_num'), pg_is_in_recovery(), \
               (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')";
    let fields = conn.query_row(sql)?;
    let [archive_mode, version, in_recovery, segment_size] = fields.as_slice() else {
        return Err(unreachable(format!("unexpected answer from the server: {fields:?}")));
    };
    let info = ServerInfo {
        archive_mode: archive_mode.to_string(),
        version_num: version.parse().unwrap_or(0),
        in_recovery: *in_recovery == "t",
        wal_segment_size: segment_size.parse().unwrap_or(16 << 20),
    };
    if info.archive_mode == "off" || (info.in_recovery && info.archive_mode != "always") {
        return Err(Error::ArchivingOff { archive_mode: info.archive_mode, standby: info.in_recovery });
    }
    Ok(info)
}

/// Pipe capacity for pg_basebackup's stream. At the default 64 KiB, pg_basebackup and drctl
/// take turns a few pages at a time, and each waits for the other.
const PIPE_BYTES: libc::c_int = 1 << 20;

/// Asks for a wider pipe; the default still works, so a refusal (a lower pipe-max-size) is fine.
fn widen_pipe(stdout: &ChildStdout) {
    use std::os::fd::AsRawFd;
    // SAFETY: F_SETPIPE_SZ takes an integer and only resizes the pipe's buffer.
    unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
}

/// Reads a child's stderr to the end on a thread (so a chatty child never blocks on a full
/// pipe); joining gives the text for error messages.
pub fn collect_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    })
}

/// A running pg_basebackup whose tar stream is read from `stdout`.
pub struct BaseBackupProcess {
    child: Child,
    stderr: std::thread::JoinHandle<String>,
}

impl BaseBackupProcess {
    /// Starts `program` (a pg_basebackup at least as new as the server) on the server `conn` names.
    pub fn start(conn: &super::Conn, program: &Path) -> Result<(BaseBackupProcess, ChildStdout), Error> {
        let mut child = conn
            .client(program)
            .args(["-d", &conn.dsn, "-D", "-", "-F", "t", "-X", "none", "--checkpoint=fast", "-v"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| unreachable(format!("cannot run pg_basebackup: {e}")))?;
        let stdout = child.stdout.take().expect("piped");
        widen_pipe(&stdout);
        let stderr = collect_stderr(&mut child);
        Ok((BaseBackupProcess { child, stderr }, stdout))
    }

    /// Waits for pg_basebackup after its tar stream ended; it still waits for the archiving of
    /// the last WAL segment, which hangs forever if archive_command fails, hence the timeout.
    pub fn finish(mut self, archive_timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + archive_timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().map_err(|e| unreachable(e.to_string()))? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(Error::ArchiveStalled { seconds: archive_timeout.as_secs() });
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = self.stderr.join().unwrap_or_default();
        if !status.success() {
            return Err(Error::Database { detail: format!("pg_basebackup failed ({status}): {}", stderr.trim()) });
        }
        Ok(())
    }

    /// Stops pg_basebackup early (the backup failed on our side).
    pub fn abort(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.join().unwrap_or_default()
    }
}

/// The connection string `dsn` with its database replaced by `database`: appended as a keyword
/// to a `key=value` string (a later keyword wins) or as a query parameter to a URI.
pub fn with_database(dsn: &str, database: &str) -> String {
    let quoted = database.replace('\\', "\\\\").replace('\'', "\\'");
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let encoded: String = database
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let separator = if dsn.contains('?') { '&' } else { '?' };
        format!("{dsn}{separator}dbname={encoded}")
    } else {
        format!("{dsn} dbname='{quoted}'")
    }
}

/// The parts of backup_label a restore needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLabel {
    pub start_lsn: String,
    pub start_wal: String,
    pub timeline: u32,
    pub start_time: String,
}

/// Parses backup_label ("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)", …).
pub fn parse_backup_label(text: &str) -> Option<BackupLabel> {
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let location = field("START WAL LOCATION:")?;
    let (lsn, rest) = location.split_once(' ')?;
    let file = rest.trim().strip_prefix("(file ")?.strip_suffix(')')?;
    Some(BackupLabel {
        start_lsn: lsn.to_string(),
        start_wal: file.to_string(),
        timeline: field("START TIMELINE:")?.parse().ok()?,
        start_time: field("START TIME:")?.to_string(),
    })
}

/// The end of the backup's WAL range from backup_manifest ("WAL-Ranges": [{"End-LSN": …}]).
pub fn manifest_stop_lsn(manifest: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    let ranges = json.get("WAL-Ranges")?.as_array()?;
    Some(ranges.last()?.get("End-LSN")?.as_str()?.to_string())
}

/// The system identifier: the first 8 bytes of pg_control, little endian on every platform
/// PostgreSQL 15 supports here.
pub fn system_identifier(pg_control: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(pg_control.get(..8)?.try_into().ok()?))
}

/// Whether a data-directory path is a relation file (`base/<db>/<relfilenode>[_fsm|_vm|_init][.N]`,
/// `global/<relfilenode>…`, or the same below `pg_tblspc/<oid>/<version dir>/<db>/`): such files
/// are made of 8 KiB pages that never shift, so they are cut into fixed, aligned blocks.
pub fn is_relation_file(path: &str) -> bool {
    relation_file(path).is_some()
}

/// The relation fork a relation file holds part of, and which 1 GiB segment of it (`.N`).
pub fn relation_file(path: &str) -> Option<(RelFork, u32)> {
    /// PostgreSQL's `DEFAULTTABLESPACE_OID` (`base/`) and `GLOBALTABLESPACE_OID` (`global/`).
    const DEFAULT_SPC: u32 = 1663;
    const GLOBAL_SPC: u32 = 1664;
    let number =
        |s: &str| if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { s.parse::<u32>().ok() } else { None };
    let parts: Vec<&str> = path.split('/').collect();
    let (spc, db, name) = match parts.as_slice() {
        ["global", f] => (GLOBAL_SPC, 0, *f),
        ["base", db, f] => (DEFAULT_SPC, number(db)?, *f),
        ["pg_tblspc", spc, _, db, f] => (number(spc)?, number(db)?, *f),
        _ => return None,
    };
    let (base, segno) = match name.split_once('.') {
        Some((base, seg)) => (base, number(seg)?),
        None => (name, 0),
    };
    // Forks 1, 2 and 3 by their suffixes; none is the main fork, 0.
    let (rel, fork) = ["_fsm", "_vm", "_init"]
        .iter()
        .zip(1..)
        .find_map(|(suffix, fork)| Some((base.strip_suffix(suffix)?, fork)))
        .unwrap_or((base, 0));
    Some((RelFork { spc, db, rel: number(rel)?, fork }, segno))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_label_and_manifest_parse() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                     CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
                     START TIME: 2026-11-24 23:40:00 UTC\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n";
        let parsed = parse_backup_label(label).unwrap();
        assert_eq!(parsed.start_lsn, "0/2000028");
        assert_eq!(parsed.start_wal, "000000010000000000000002");
        assert_eq!(parsed.timeline, 1);
        assert_eq!(parsed.start_time, "2026-11-24 23:40:00 UTC");
        let manifest = br#"{"PostgreSQL-Backup-Manifest-Version": 1, "WAL-Ranges": [
            { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }]}"#;
        assert_eq!(manifest_stop_lsn(manifest).as_deref(), Some("0/2000100"));
    }

    #[test]
    fn database_is_replaced_in_both_dsn_forms() {
        assert_eq!(with_database("host=h port=5 dbname=x", "app"), "host=h port=5 dbname=x dbname='app'");
        assert_eq!(with_database("host=h", "o'k"), "host=h dbname='o\\'k'");
        assert_eq!(with_database("postgres://u@h:5/x", "my db"), "postgres://u@h:5/x?dbname=my%20db");
        assert_eq!(with_database("postgresql://h/x?sslmode=require", "a"), "postgresql://h/x?sslmode=require&dbname=a");
    }

    #[test]
    fn relation_files_are_recognised() {
        for p in ["base/1/1259", "base/16384/16385.1", "global/1262", "base/5/2619_fsm", "base/5/2619_vm.2"] {
            assert!(is_relation_file(p), "{p}");
        }
        for p in ["base/1/PG_VERSION", "global/pg_control", "pg_xact/0000", "base/1", "postgresql.conf", "base/1/12_x"]
        {
            assert!(!is_relation_file(p), "{p}");
        }
        assert!(is_relation_file("pg_tblspc/16390/PG_15_202209061/16384/16391"));
        let fork = |spc, db, rel, fork| RelFork { spc, db, rel, fork };
        assert_eq!(relation_file("base/16384/16385.3"), Some((fork(1663, 16384, 16385, 0), 3)));
        assert_eq!(relation_file("global/1262_vm"), Some((fork(1664, 0, 1262, 2), 0)));
        assert_eq!(relation_file("base/5/2619_fsm.1"), Some((fork(1663, 5, 2619, 1), 1)));
        assert_eq!(
            relation_file("pg_tblspc/16390/PG_15_202209061/16384/16391_init"),
            Some((fork(16390, 16384, 16391, 3), 0))
        );
        assert_eq!(relation_file("base/5/99999999999"), None, "beyond a relation number");
    }
}

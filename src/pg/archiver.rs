//! The WAL archiver as the server sees it: `pg_stat_archiver`, how far the archive trails the
//! WAL the server has written, and whether given WAL files are archived yet (`pg_wal`'s status
//! files).

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::wal::WalName;
use super::{Conn, Error};

/// What `pg_stat_archiver` and the server's current WAL position say.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ArchiverState {
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<DateTime<Utc>>,
    pub failed_count: u64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<DateTime<Utc>>,
    /// Complete WAL segments written but not archived yet.
    pub segments_behind: Option<u64>,
    /// How far the archive trails the server: 0 when every complete segment is archived, else
    /// the time since the last one was.
    pub lag_seconds: Option<f64>,
}

/// Asks the server `conn` names. On a standby, or across a timeline switch, how far the archive
/// trails is not known (`None`); the next archived segment settles it.
pub fn state(conn: &Conn) -> Result<ArchiverState, Error> {
    let sql = "SELECT coalesce(last_archived_wal, ''), coalesce(extract(epoch FROM last_archived_time)::text, ''), \
               failed_count, coalesce(last_failed_wal, ''), coalesce(extract(epoch FROM last_failed_time)::text, ''), \
               CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_walfile_name(pg_current_wal_lsn()) END, \
               (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size') FROM pg_stat_archiver";
    let fields = conn.query_row(sql)?;
    let [archived, archived_at, failed_count, failed_wal, failed_at, current, segment_size] = fields.as_slice() else {
        return Err(Error::database(format!("unexpected answer from pg_stat_archiver: {fields:?}")));
    };
    let time = |epoch: &str| -> Option<DateTime<Utc>> {
        let seconds: f64 = epoch.parse().ok()?;
        DateTime::from_timestamp_micros((seconds * 1e6) as i64)
    };
    let text_or_none = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let mut state = ArchiverState {
        last_archived_wal: text_or_none(archived),
        last_archived_time: time(archived_at),
        failed_count: failed_count.parse().unwrap_or(0),
        last_failed_wal: text_or_none(failed_wal),
        last_failed_time: time(failed_at),
        segments_behind: None,
        lag_seconds: None,
    };
    let per_id = segment_size.parse::<u64>().ok().filter(|&s| s > 0).map(|s| 0x1_0000_0000 / s);
    let number = |name: &str| WalName::parse(name).and_then(|n| Some((n.timeline(), n.segment_number(per_id?)?)));
    // Comparable only on one timeline; after a promotion the next archived segment settles it.
    if let (Some((tli, current)), Some(archived)) = (number(current), state.last_archived_wal.as_deref())
        && let Some((_, archived)) = number(archived).filter(|(t, _)| *t == tli)
    {
        // The segment being written is not complete: everything before it should be archived.
        let behind = current.saturating_sub(archived + 1);
        state.segments_behind = Some(behind);
        state.lag_seconds = match (behind, state.last_archived_time) {
            (0, _) => Some(0.0),
            (_, Some(at)) => Some((Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0),
            _ => None,
        };
    }
    Ok(state)
}

/// How often [`wait_archived`] looks: the server's own wait looks once a second.
const ARCHIVE_POLL: Duration = Duration::from_millis(20);

/// Waits until the server has archived each of the WAL files `names` (segments, backup history
/// files), by the test the server's own wait makes on `pg_wal` (PostgreSQL's
/// `XLogArchiveIsBusy`); gives up after `timeout` (archive_command failing).
pub fn wait_archived(pg_wal: &Path, names: &[String], timeout: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    for name in names {
        while !is_archived(pg_wal, name) {
            if Instant::now() >= deadline {
                return Err(Error::ArchiveStalled { seconds: timeout.as_secs() });
            }
            std::thread::sleep(ARCHIVE_POLL);
        }
    }
    Ok(())
}

/// `.done` means archived and `.ready` not yet; with neither, the file is archived only if a
/// checkpoint has removed it already (a `.done` is looked for twice: the archiver may rename
/// `.ready` to `.done` between the looks).
fn is_archived(pg_wal: &Path, name: &str) -> bool {
    let status = |suffix: &str| pg_wal.join("archive_status").join(format!("{name}{suffix}")).exists();
    if status(".done") {
        return true;
    }
    if status(".ready") {
        return false;
    }
    status(".done")
        || matches!(std::fs::symlink_metadata(pg_wal.join(name)), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_done_and_gives_up_while_ready_stays() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("archive_status");
        std::fs::create_dir(&status).unwrap();
        let names =
            vec!["000000010000000000000003".to_string(), "000000010000000000000002.00000028.backup".to_string()];
        std::fs::write(dir.path().join(&names[0]), b"").unwrap();
        std::fs::write(status.join(format!("{}.ready", names[0])), b"").unwrap();
        std::fs::write(status.join(format!("{}.done", names[1])), b"").unwrap();

        let stalled = wait_archived(dir.path(), &names, Duration::from_millis(100));
        assert!(matches!(stalled, Err(Error::ArchiveStalled { .. })), "{stalled:?}");

        // The archiver renames .ready to .done a little later: the wait sees it.
        let ready = status.join(format!("{}.ready", names[0]));
        let done = status.join(format!("{}.done", names[0]));
        let archiver = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            std::fs::rename(ready, done).unwrap();
        });
        let started = Instant::now();
        wait_archived(dir.path(), &names, Duration::from_secs(10)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(100));
        archiver.join().unwrap();
    }

    #[test]
    fn a_segment_without_status_is_archived_only_once_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("archive_status")).unwrap();
        let name = "000000010000000000000007".to_string();
        std::fs::write(dir.path().join(&name), b"").unwrap();
        assert!(!is_archived(dir.path(), &name), "still in pg_wal and not marked: not yet archived");
        std::fs::remove_file(dir.path().join(&name)).unwrap();
        assert!(is_archived(dir.path(), &name), "removed by a checkpoint: archived before");
    }
}

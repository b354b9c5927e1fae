//! Point-in-time restore: which base backup serves a target time.

use chrono::{DateTime, Utc};

use crate::ops::Error;
use crate::pg::wal::{WalName, parse_lsn};
use crate::pg::window::Archive;
use crate::repo::Id;
use crate::repo::snapshot::{Snapshot, SnapshotKind};

/// Parses a target time. A time zone is required ("2026-11-20 14:03:00+00", RFC 3339, …): a
/// bare time would silently mean a different instant on another machine.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, Error> {
    let text = text.trim();
    let formats = ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f %#z"];
    let parsed = DateTime::parse_from_rfc3339(text)
        .ok()
        .or_else(|| formats.iter().find_map(|f| DateTime::parse_from_str(text, f).ok()))
        .or_else(|| text.strip_suffix(" UTC").and_then(|t| parse_time(&format!("{t}+00")).ok().map(|d| d.into())));
    parsed.map(|t| t.with_timezone(&Utc)).ok_or_else(|| {
        Error::Usage(format!(
            "{text:?} is not a time with a time zone; write it like \"2026-11-20 14:03:00+00\" or \"2026-11-20T14:03:00Z\""
        ))
    })
}

/// What the chosen base backup must have ended before.
#[derive(Debug, Clone, Copy)]
pub enum EndedBefore {
    Time(DateTime<Utc>),
    /// A WAL position: the backup's stop LSN at or before it.
    Lsn(u64),
    /// No bound: the newest restorable backup (recovery to a transaction id or the archive's end).
    Any,
}

/// The PostgreSQL base backups whose own WAL range is archived whole (`wal` lists the archive),
/// oldest first.
pub fn restorable(snapshots: Vec<(Id, Snapshot)>, wal: &[WalName]) -> Vec<(Id, Snapshot)> {
    let mut bases: Vec<(Id, Snapshot)> = snapshots
        .into_iter()
        .filter(|(_, s)| s.kind == SnapshotKind::PgBase)
        .filter(|(id, s)| {
            let Some(pg) = &s.pg else { return false };
            let missing = Archive::new(wal, pg.wal_segment_size).missing_for(pg.timeline, &pg.start_lsn, &pg.stop_lsn);
            if !missing.is_empty() {
                tracing::warn!(snapshot = %id.short(), missing = ?missing, "skipping a base backup whose WAL is not archived");
            }
            missing.is_empty()
        })
        .collect();
    bases.sort_by_key(|(_, s)| s.time);
    bases
}

/// The newest PostgreSQL base backup that ended before `bound` and whose own WAL range is
/// archived whole (`wal` lists the archive).
pub fn choose_backup(
    snapshots: Vec<(Id, Snapshot)>,
    wal: &[WalName],
    bound: EndedBefore,
) -> Result<(Id, Snapshot), Error> {
    let bases = restorable(snapshots, wal);
    let oldest = bases.first().map(|(_, s)| s.time);
    let fits = |s: &Snapshot| match bound {
        EndedBefore::Time(t) => s.time < t,
        EndedBefore::Lsn(lsn) => s.pg.as_ref().and_then(|pg| parse_lsn(&pg.stop_lsn)).is_some_and(|stop| stop <= lsn),
        EndedBefore::Any => true,
    };
    match bases.into_iter().rev().find(|(_, s)| fits(s)) {
        Some(found) => Ok(found),
        None => Err(crate::pg::Error::OutOfReach {
            detail: match (oldest, bound) {
                (Some(t), EndedBefore::Time(target)) => {
                    format!("{target} is before the end of the oldest base backup ({t})")
                }
                (Some(_), _) => "the WAL position is before the end of the oldest base backup".into(),
                (None, _) => "the repository holds no restorable PostgreSQL base backup".into(),
            },
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_need_a_zone() {
        let t = parse_time("2026-11-20 14:03:00+00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-20T14:03:00+00:00");
        assert_eq!(parse_time("2026-11-20T16:03:00.5+02:00").unwrap().timestamp_subsec_millis(), 500);
        assert_eq!(parse_time("2026-11-20 14:03:00 UTC").unwrap(), t);
        assert!(parse_time("2026-11-20 14:03:00").is_err());
        assert!(parse_time("yesterday").is_err());
    }
}

//! What a repository holds, as `drctl snapshots` shows it (and drills and reports will judge it):
//! the snapshots, the WAL each base backup lacks, the archive's timelines and where they fork,
//! and per PostgreSQL cluster the window a point-in-time restore can reach.

use std::collections::BTreeMap;

use super::Result;
use crate::pg::wal::{WalKind, WalName};
use crate::pg::window::{Archive, Fork, Timeline};
use crate::repo::snapshot::Snapshot;
use crate::repo::{Id, Repository, wal};

/// A repository's snapshots (oldest first) and WAL archive.
pub struct Catalog {
    pub snapshots: Vec<(Id, Snapshot)>,
    wal: Vec<WalName>,
    /// The archived timeline history files, as (timeline, content).
    histories: Vec<(u32, Vec<u8>)>,
    /// One view of the archive per WAL segment size the base backups use (usually one).
    archives: BTreeMap<u64, Archive>,
}

/// One timeline of the archive: its newest segment and, from its history file, where it leaves
/// its parent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimelineInfo {
    pub timeline: u32,
    pub newest_wal: Option<String>,
    pub parent: Option<u32>,
    pub fork_lsn: Option<String>,
    /// Whether the parent's WAL goes on past the fork (two clusters archived here).
    pub parent_goes_on: Option<bool>,
}

/// How far a point-in-time restore of one cluster reaches.
pub struct Window<'a> {
    pub system_identifier: &'a str,
    /// The oldest base backup whose WAL is archived whole: the window starts at its end.
    pub oldest_restorable: Option<&'a (Id, Snapshot)>,
    /// Base backups that cannot be restored, with the WAL they lack.
    pub unrestorable: Vec<(&'a (Id, Snapshot), Vec<String>)>,
    /// The archive's timelines (newest segment and gaps of each).
    pub timelines: Vec<Timeline>,
    pub forks: Vec<Fork>,
}

impl Catalog {
    pub fn load(repo: &Repository) -> Result<Catalog> {
        let snapshots = repo.snapshots()?;
        let wal: Vec<WalName> = wal::list(repo.store())?.into_iter().map(|(name, _)| name).collect();
        let histories = load_histories(repo, &wal);
        Ok(Catalog::new(snapshots, wal, histories))
    }

    /// The catalog of these snapshots, WAL names and history files (timeline, content).
    pub fn new(snapshots: Vec<(Id, Snapshot)>, wal: Vec<WalName>, histories: Vec<(u32, Vec<u8>)>) -> Catalog {
        let mut archives = BTreeMap::new();
        for pg in snapshots.iter().filter_map(|(_, s)| s.pg.as_ref()) {
            archives.entry(pg.wal_segment_size).or_insert_with(|| Archive::new(&wal, pg.wal_segment_size));
        }
        Catalog { snapshots, wal, histories, archives }
    }

    /// The WAL files a base backup's range lacks (it must be archived whole, or the backup
    /// cannot even reach consistency); `None` for other snapshots.
    pub fn missing_wal(&self, s: &Snapshot) -> Option<Vec<String>> {
        let pg = s.pg.as_ref()?;
        Some(self.archives[&pg.wal_segment_size].missing_for(pg.timeline, &pg.start_lsn, &pg.stop_lsn))
    }

    /// The archive's timelines as the base backups of `segment_size` see them.
    pub fn timelines(&self, segment_size: u64) -> Vec<TimelineInfo> {
        let Some(archive) = self.archives.get(&segment_size) else { return Vec::new() };
        let segments = archive.timelines();
        let mut numbers: Vec<u32> =
            segments.iter().map(|t| t.timeline).chain(self.histories.iter().map(|h| h.0)).collect();
        numbers.sort();
        numbers.dedup();
        numbers
            .into_iter()
            .map(|tli| {
                let fork =
                    self.histories.iter().find(|h| h.0 == tli).and_then(|(_, content)| archive.fork(tli, content));
                TimelineInfo {
                    timeline: tli,
                    newest_wal: segments.iter().find(|t| t.timeline == tli).map(|t| t.newest.clone()),
                    parent: fork.as_ref().map(|f| f.parent),
                    fork_lsn: fork.as_ref().map(|f| crate::pg::wal::format_lsn(f.at)),
                    parent_goes_on: fork.as_ref().map(|f| f.parent_goes_on),
                }
            })
            .collect()
    }

    /// The point-in-time window of each PostgreSQL cluster with base backups here, by system
    /// identifier.
    pub fn windows(&self) -> Vec<Window<'_>> {
        let mut clusters: Vec<&str> =
            self.snapshots.iter().filter_map(|(_, s)| s.pg.as_ref()).map(|pg| pg.system_identifier.as_str()).collect();
        clusters.sort();
        clusters.dedup();
        clusters.into_iter().map(|system| self.window(system)).collect()
    }

    fn window<'a>(&'a self, system: &'a str) -> Window<'a> {
        let backups: Vec<&(Id, Snapshot)> = self
            .snapshots
            .iter()
            .filter(|(_, s)| s.pg.as_ref().is_some_and(|pg| pg.system_identifier == system))
            .collect();
        let oldest_restorable =
            backups.iter().copied().find(|(_, s)| self.missing_wal(s).is_some_and(|m| m.is_empty()));
        let unrestorable = backups
            .iter()
            .filter_map(|b| self.missing_wal(&b.1).filter(|m| !m.is_empty()).map(|missing| (*b, missing)))
            .collect();
        let segment_size = backups.iter().find_map(|(_, s)| s.pg.as_ref()).map_or(16 << 20, |pg| pg.wal_segment_size);
        let archive = Archive::new(&self.wal, segment_size);
        let forks = self.histories.iter().filter_map(|(tli, content)| archive.fork(*tli, content)).collect();
        Window { system_identifier: system, oldest_restorable, unrestorable, timelines: archive.timelines(), forks }
    }
}

/// The archived timeline history files, as (timeline, content). One that cannot be read is
/// left out with a warning: it hides where its timeline forks, nothing else.
fn load_histories(repo: &Repository, wal: &[WalName]) -> Vec<(u32, Vec<u8>)> {
    let histories = wal.iter().filter(|n| n.kind() == WalKind::History);
    histories
        .filter_map(|name| match wal::fetch(repo, name) {
            Ok(content) => Some((name.timeline(), content?)),
            Err(e) => {
                tracing::warn!(wal = %name, error = %e, "cannot read a timeline history file");
                None
            }
        })
        .collect()
}

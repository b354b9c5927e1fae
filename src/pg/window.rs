//! What the archive can restore: for each base backup, whether every WAL segment from its start
//! to its stop is archived (else it cannot even reach consistency), and for each timeline, the
//! newest archived segment and any gaps. A point-in-time restore can reach a moment after a
//! restorable backup's end as far as the WAL runs without a gap.

use std::collections::{BTreeMap, BTreeSet};

use super::wal::{WalKind, WalName, fork_point, parse_lsn, segment_name};

/// One timeline of the archive: its number, its newest segment, and its gaps (first and last
/// missing segment of each).
pub struct Timeline {
    pub timeline: u32,
    pub newest: String,
    pub gaps: Vec<(String, String)>,
}

/// Where a timeline of the archive begins, from its history file.
#[derive(Debug, PartialEq, Eq)]
pub struct Fork {
    pub timeline: u32,
    pub parent: u32,
    /// The WAL position where it leaves its parent.
    pub at: u64,
    /// The archive holds the parent's WAL past that point: two clusters archived here (a
    /// restored copy, or a point-in-time restore that became the new primary), and recovery to
    /// the latest point follows this timeline, not the parent.
    pub parent_goes_on: bool,
}

/// How many missing WAL files [`Archive::missing_for`] names at most.
pub const MAX_LISTED: usize = 1000;

/// The archived segments, per timeline, as segment numbers for one segment size.
pub struct Archive {
    segment_size: u64,
    segments: BTreeMap<u32, BTreeSet<u64>>,
}

impl Archive {
    pub fn new(names: &[WalName], segment_size: u64) -> Archive {
        let per_log = 0x1_0000_0000 / segment_size;
        let mut segments: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for name in names.iter().filter(|n| n.kind() == WalKind::Segment) {
            if let Some(n) = name.segment_number(per_log) {
                segments.entry(name.timeline()).or_default().insert(n);
            }
        }
        Archive { segment_size, segments }
    }

    /// The segments of `timeline` from a base backup's start to its stop LSN that are not
    /// archived (empty: the backup can be restored to a consistent state).
    /// At most [`MAX_LISTED`] are named, then how many more: a range read from a damaged or
    /// forged manifest may span the whole WAL space, which no list could hold.
    pub fn missing_for(&self, timeline: u32, start_lsn: &str, stop_lsn: &str) -> Vec<String> {
        let (Some(start), Some(stop)) = (parse_lsn(start_lsn), parse_lsn(stop_lsn)) else {
            return vec![format!("(unreadable WAL range {start_lsn}..{stop_lsn})")];
        };
        let (first, last) = (start / self.segment_size, stop.saturating_sub(1).max(start) / self.segment_size);
        let empty = BTreeSet::new();
        let have = self.segments.get(&timeline).unwrap_or(&empty);
        let mut missing = Vec::new();
        let mut n = first;
        while n <= last && missing.len() < MAX_LISTED {
            if !have.contains(&n) {
                missing.push(segment_name(timeline, n, self.segment_size));
            }
            n += 1;
        }
        if n <= last {
            let more = (last - n + 1) - have.range(n..=last).count() as u64;
            if more > 0 {
                missing.push(format!("(and {more} more)"));
            }
        }
        missing
    }

    /// Where the oldest segment of `timeline` the archive holds begins.
    pub fn oldest(&self, timeline: u32) -> Option<u64> {
        Some(self.segments.get(&timeline)?.first()? * self.segment_size)
    }

    /// Where `timeline` begins, from the content of its history file.
    pub fn fork(&self, timeline: u32, history: &[u8]) -> Option<Fork> {
        let (parent, at) = fork_point(history)?;
        let parent_goes_on =
            self.segments.get(&parent).and_then(|s| s.last()).is_some_and(|&n| n * self.segment_size > at);
        Some(Fork { timeline, parent, at, parent_goes_on })
    }

    /// Per timeline: the newest archived segment and the gaps.
    pub fn timelines(&self) -> Vec<Timeline> {
        self.segments
            .iter()
            .map(|(&tli, segs)| {
                let newest = segment_name(tli, *segs.last().expect("non-empty"), self.segment_size);
                let mut gaps = Vec::new();
                let mut previous: Option<u64> = None;
                for &n in segs {
                    if let Some(p) = previous.filter(|p| n > p + 1) {
                        gaps.push((
                            segment_name(tli, p + 1, self.segment_size),
                            segment_name(tli, n - 1, self.segment_size),
                        ));
                    }
                    previous = Some(n);
                }
                Timeline { timeline: tli, newest, gaps }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_need_their_whole_wal_range_and_gaps_are_named() {
        let names: Vec<WalName> = [
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000006",
            "00000002.history",
            "000000020000000000000006",
        ]
        .iter()
        .map(|n| WalName::parse(n).unwrap())
        .collect();
        let archive = Archive::new(&names, 1 << 20);
        assert!(archive.missing_for(1, "0/200028", "0/300100").is_empty());
        assert_eq!(archive.missing_for(1, "0/300028", "0/400100"), vec!["000000010000000000000004"]);
        let timelines = archive.timelines();
        assert_eq!(timelines[0].newest, "000000010000000000000006");
        assert_eq!(timelines[0].gaps, vec![("000000010000000000000004".into(), "000000010000000000000005".into())]);
        assert_eq!((timelines[1].timeline, timelines[1].newest.as_str()), (2, "000000020000000000000006"));
        assert!(timelines[1].gaps.is_empty());
        // Timeline 2 leaves timeline 1 inside segment 5, but timeline 1 goes on to segment 6.
        let fork = archive.fork(2, b"1\t0/50A000\tno recovery target specified\n").unwrap();
        assert_eq!(fork, Fork { timeline: 2, parent: 1, at: 0x50A000, parent_goes_on: true });
        assert!(!archive.fork(2, b"1\t0/60A000\tno recovery target specified\n").unwrap().parent_goes_on);
    }
}

//! Which relation pages changed between the previous local backup's start and this one's, read
//! from the WAL between them: each segment's block map where the repository holds one, else the
//! segment itself (from `pg_wal`, where the newest segments are not archived yet, or from the
//! archive). An incremental then reads only those pages of a relation file.
//!
//! Why that is enough (docs/FORMAT.md says it at length): at `wal_level` replica or above, every
//! change to a page of a relation's main or init fork is a WAL record that names the page, and a
//! page changed after this backup's start is rewritten on restore by replaying from it. What the
//! WAL does not vouch for is read the usual way: free space and visibility map forks, relations
//! created or truncated meanwhile; and every file when a record may change any file (a database
//! copied), or on damage, a gap or another timeline.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::pg::wal::{self as pgwal, WalName};
use crate::pg::wal_blocks::{self, RelFork, SegmentScan, Unvouched};
use crate::repo::{Repository, wal, wal_map};

/// Segments read at once: on S3 each is a request's round trip.
const READERS: usize = 8;
/// The main fork and the init fork: the forks whose every change names its page.
const MAPPED_FORKS: [u8; 2] = [0, 3];

/// The pages changed between two LSNs, per relation file segment.
pub struct ChangedPages {
    /// Pages per relation file (1 GiB segment of a fork), as a bit per page.
    pages: HashMap<(RelFork, u32), Vec<u64>>,
    /// Relations created or truncated: all their files are read.
    whole: HashSet<(u32, u32, u32)>,
    pages_per_file: u32,
    /// Maps read, and segments read instead.
    pub maps: usize,
    pub segments: usize,
}

impl ChangedPages {
    /// The changed pages of a relation file (`segno` of `fork`), sorted, numbered within the
    /// file; `None` when the file must be read whole.
    pub fn in_file(&self, fork: RelFork, segno: u32) -> Option<Vec<u32>> {
        if !MAPPED_FORKS.contains(&fork.fork) || self.whole.contains(&(fork.spc, fork.db, fork.rel)) {
            return None;
        }
        let Some(bits) = self.pages.get(&(fork, segno)) else { return Some(Vec::new()) };
        let mut pages = Vec::new();
        for (w, &word) in bits.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                pages.push(w as u32 * 64 + word.trailing_zeros());
                word &= word - 1;
            }
        }
        Some(pages)
    }

    fn mark(&mut self, fork: RelFork, block: u32) {
        let (segno, page) = (block / self.pages_per_file, block % self.pages_per_file);
        let words = self.pages_per_file.div_ceil(64) as usize;
        let bits = self.pages.entry((fork, segno)).or_insert_with(|| vec![0; words]);
        bits[page as usize / 64] |= 1 << (page % 64);
    }

    fn add(&mut self, scan_blocks: impl IntoIterator<Item = wal_blocks::BlockRef>, unvouched: &[Unvouched]) {
        for b in scan_blocks.into_iter().filter(|b| MAPPED_FORKS.contains(&b.file.fork)) {
            self.mark(b.file, b.block);
        }
        for u in unvouched {
            if let Unvouched::Relation { spc, db, rel } = u {
                self.whole.insert((*spc, *db, *rel));
            }
        }
    }
}

/// Where the WAL between two backups is.
pub struct WalRange<'a> {
    pub system_identifier: u64,
    pub timeline: u32,
    /// The previous backup's start (its checkpoint's redo point).
    pub from: u64,
    /// This backup's start.
    pub to: u64,
    pub segment_size: u64,
    /// Relation file segments' length in pages (`blocks_per_segment`).
    pub pages_per_file: u32,
    /// The server's `pg_wal`, for segments not archived yet.
    pub pg_wal: &'a Path,
}

/// The pages changed in `range`; `Err` says why the WAL cannot tell (the caller then reads
/// files as if there were no map).
pub fn changed_pages(repo: &Repository, range: &WalRange) -> Result<ChangedPages, String> {
    if range.to < range.from {
        return Err("the previous backup started after this one".into());
    }
    if range.pages_per_file == 0 || !range.segment_size.is_power_of_two() {
        let (pages, size) = (range.pages_per_file, range.segment_size);
        return Err(format!("relation files of {pages} pages and WAL segments of {size} bytes are not PostgreSQL's"));
    }
    let first = range.from / range.segment_size;
    let last = (range.to.max(1) - 1) / range.segment_size;
    let numbers: Vec<u64> = (first..=last).collect();
    let read: Vec<Result<(SegmentScan, bool), String>> = std::thread::scope(|s| {
        let workers: Vec<_> = numbers
            .chunks(numbers.len().div_ceil(READERS).max(1))
            .map(|part| s.spawn(move || part.iter().map(|&n| read_segment(repo, range, n)).collect::<Vec<_>>()))
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a segment reader panicked")).collect()
    });
    let mut changed = ChangedPages {
        pages: HashMap::new(),
        whole: HashSet::new(),
        pages_per_file: range.pages_per_file,
        maps: 0,
        segments: 0,
    };
    let mut scans = Vec::with_capacity(read.len());
    for r in read {
        let (scan, from_map) = r?;
        *(if from_map { &mut changed.maps } else { &mut changed.segments }) += 1;
        scans.push(scan);
    }
    for (i, scan) in scans.iter().enumerate() {
        let name = || pgwal::segment_name(range.timeline, first + i as u64, range.segment_size);
        if scan.changes_everything() {
            let why = scan.unvouched.iter().find_map(|u| match u {
                Unvouched::Everything(why) => Some(why.as_str()),
                Unvouched::Relation { .. } => None,
            });
            return Err(format!("segment {}: {}", name(), why.unwrap_or_default()));
        }
        changed.add(scan.blocks.iter().copied(), &scan.unvouched);
        // A record begun here and finished in a later segment: joined and read whole.
        if let Some(tail) = scan.tail.as_ref().filter(|t| t.lsn < range.to) {
            let heads: Vec<_> = scans[i + 1..].iter().map(|s| s.head.as_ref()).collect();
            match wal_blocks::stitch(tail, scan.major, &heads) {
                Ok(Some(record)) => {
                    if let Some(Unvouched::Everything(why)) = &record.unvouched {
                        return Err(why.clone());
                    }
                    changed.add(record.blocks.iter().copied(), record.unvouched.as_slice());
                }
                // Abandoned by PostgreSQL (after a crash), never replayed.
                Ok(None) => {}
                Err(e) => return Err(format!("segment {}: {e}", name())),
            }
        }
    }
    Ok(changed)
}

/// Segment `n`'s scan, and whether it came from a block map: the map, else the segment from
/// `pg_wal`, else from the archive, whichever first reads as this cluster's segment at its
/// position, in full up to `range.to` (a file in `pg_wal` may be being recycled).
fn read_segment(repo: &Repository, range: &WalRange, n: u64) -> Result<(SegmentScan, bool), String> {
    let name = pgwal::segment_name(range.timeline, n, range.segment_size);
    let wal_name = WalName::parse(&name).expect("a segment name");
    let start = n * range.segment_size;
    let usable = |scan: &SegmentScan| -> Result<(), String> {
        if let Some(stopped) = scan.stopped.as_ref().filter(|s| s.at < range.to) {
            return Err(format!("WAL segment {name}: {}", stopped.why));
        }
        if scan.start != start || scan.system_identifier != range.system_identifier {
            return Err(format!("WAL segment {name} is not this cluster's segment at {}", pgwal::format_lsn(start)));
        }
        Ok(())
    };
    let mut why = format!("WAL segment {name} is neither archived nor in pg_wal");
    match wal_map::get(repo, &wal_name) {
        Ok(Some(map)) => match usable(&map) {
            Ok(()) => return Ok((map, true)),
            Err(e) => why = e,
        },
        Ok(None) => {}
        // The segment tells the same: a damaged map costs reading it, nothing more.
        Err(e) => tracing::warn!(error = %e, "reading the WAL segment instead of its block map"),
    }
    if let Ok(data) = std::fs::read(range.pg_wal.join(&name)) {
        let scan = wal_blocks::scan_segment(&data, |_| {});
        match usable(&scan) {
            Ok(()) => return Ok((scan, false)),
            Err(e) => why = e,
        }
    }
    match wal::fetch(repo, &wal_name) {
        Ok(Some(data)) => {
            let scan = wal_blocks::scan_segment(&data, |_| {});
            usable(&scan).map(|()| (scan, false))
        }
        Ok(None) => Err(why),
        Err(e) => Err(e.to_string()),
    }
}

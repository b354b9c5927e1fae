//! Which relation blocks a WAL segment changes, read from its records' block references (as
//! PostgreSQL 17's WAL summaries and WAL-G's delta maps do), so that an incremental backup can
//! read only those blocks of a file instead of all of it.
//!
//! WAL is input drctl did not write. Every length is checked against the bytes that are there
//! before it is used, every whole record's CRC-32C is checked, and whatever this reader does not
//! understand (an unknown page version, a damaged record, a change that has no block reference,
//! such as a database copied file by file) is reported as [`Unvouched`]: the segment then
//! vouches for less, never for fewer changes than it holds.
//!
//! A record may begin in one segment and end in the next. Each segment's scan keeps the
//! beginning of such a record ([`Tail`]) and the continuation it starts with ([`Continuation`]);
//! [`stitch`] joins them, checking the lengths the page headers give, and decodes the record
//! whole.

use std::collections::BTreeSet;

const XLOG_BLCKSZ: usize = 8192;
const SHORT_PAGE_HEADER: usize = 24;
const LONG_PAGE_HEADER: usize = 40;
const RECORD_HEADER: usize = 24;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_FORK_MASK: u8 = 0x0F;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_HAS_DATA: u8 = 0x20;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;
const RM_XLOG_ID: u8 = 0;
const RM_SMGR_ID: u8 = 2;
const RM_DBASE_ID: u8 = 4;
const RM_TBLSPC_ID: u8 = 5;
/// Resource managers up to this id are PostgreSQL's own; 128 and up are extensions' (15+).
const RM_MAX_BUILTIN_ID: u8 = 127;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_SMGR_CREATE: u8 = 0x10;
const XLOG_SMGR_TRUNCATE: u8 = 0x20;

/// The longest record that can be stitched across a segment boundary, since the segments on
/// either side keep its parts for that: block references sit at a record's start, but its CRC
/// covers all of it. A longer crossing record (rare: a commit with very many subtransactions)
/// leaves the boundary unvouched.
pub const CARRY_LIMIT: usize = 1 << 20;

/// One fork of a relation: tablespace, database and relation file number (the path
/// `base/<db>/<rel>[_fsm|_vm|_init]`, or under `pg_tblspc/<spc>`), and fork (0 main, 1 fsm, 2 vm,
/// 3 init).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelFork {
    pub spc: u32,
    pub db: u32,
    pub rel: u32,
    pub fork: u8,
}

/// A block of a relation fork that a record changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockRef {
    pub file: RelFork,
    pub block: u32,
}

/// A change that block references do not describe.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unvouched {
    /// Any file may have changed: databases or tablespaces created or dropped (whole
    /// directories copied), an extension's resource manager, or WAL this reader could not read.
    Everything(String),
    /// A relation file created or truncated: all its forks must be read whole.
    Relation { spc: u32, db: u32, rel: u32 },
}

/// A decoded WAL record: where it starts, its resource manager and info bits, and the blocks it
/// references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: u64,
    pub rmid: u8,
    pub info: u8,
    pub blocks: Vec<BlockRef>,
    /// Set when the record changes files in a way its block references do not say.
    pub unvouched: Option<Unvouched>,
}

/// The part of a record, begun in an earlier segment, that a segment starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    /// How many bytes of the record were still to come at the segment's start (the first page
    /// header's `xlp_rem_len`).
    pub remaining: u32,
    /// The bytes of it this segment holds; empty when `remaining` exceeds [`CARRY_LIMIT`].
    pub bytes: Vec<u8>,
}

/// The beginning of a record that a segment does not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub lsn: u64,
    /// The record's whole length (`xl_tot_len`).
    pub total: u32,
    /// The bytes this segment holds; empty when `total` exceeds [`CARRY_LIMIT`].
    pub bytes: Vec<u8>,
}

/// What one segment says of the blocks it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentScan {
    /// The LSN of the segment's first byte.
    pub start: u64,
    /// PostgreSQL's major version, from the pages' format number.
    pub major: u32,
    /// The cluster that wrote it (the first page's `xlp_sysid`).
    pub system_identifier: u64,
    /// Blocks referenced by the records that begin in this segment and end in it.
    pub blocks: BTreeSet<BlockRef>,
    pub unvouched: Vec<Unvouched>,
    pub head: Option<Continuation>,
    pub tail: Option<Tail>,
    /// The segment was ended early by a WAL switch: the rest of it is padding.
    pub switched: bool,
    /// Where and why reading stopped before the segment's end: damage, an unknown format, or
    /// the end of the WAL written so far. Records before `at` were read in full.
    pub stopped: Option<Stopped>,
}

/// Where a segment's reading stopped early, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub at: u64,
    pub why: String,
}

impl SegmentScan {
    /// True when the segment cannot vouch for all of its changes.
    pub fn vouches_for_nothing(&self) -> bool {
        self.stopped.is_some() || self.changes_everything()
    }

    /// True when a record in it may change any file (whatever reading stopped at).
    pub fn changes_everything(&self) -> bool {
        self.unvouched.iter().any(|u| matches!(u, Unvouched::Everything(_)))
    }

    fn give_up(&mut self, at: u64, why: impl std::fmt::Display) {
        self.stopped = Some(Stopped { at, why: format!("WAL at {}: {why}", super::wal::format_lsn(at)) });
    }

    fn add(&mut self, record: &Record) {
        self.blocks.extend(record.blocks.iter().copied());
        if let Some(u) = &record.unvouched {
            self.unvouched.push(u.clone());
        }
    }
}

/// The major version a page format number (`XLOG_PAGE_MAGIC`) belongs to: the releases drctl
/// supports. A development or unknown version's WAL is not read.
fn major_of(magic: u16) -> Option<u32> {
    Some(match magic {
        0xD106 => 13,
        0xD10D => 14,
        0xD110 => 15,
        0xD113 => 16,
        0xD116 => 17,
        0xD118 => 18,
        _ => return None,
    })
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

const fn maxalign(n: usize) -> usize {
    (n + 7) & !7
}

/// A page's header fields this reader checks.
struct Page {
    info: u16,
    rem_len: u32,
    /// Where the page's contents begin (after its header).
    body: usize,
}

/// Reads a segment's pages in order, checking each header against the first.
struct Pages<'a> {
    seg: &'a [u8],
    start: u64,
    magic: u16,
}

impl Pages<'_> {
    /// Page `i`'s header, or why it is not a page of this segment (recycled or never written).
    fn page(&self, i: usize) -> Result<Page, String> {
        let p = &self.seg[i * XLOG_BLCKSZ..(i + 1) * XLOG_BLCKSZ];
        let magic = u16_at(p, 0);
        if magic != self.magic {
            return Err(format!("page {i} has format {magic:#06x}, not {:#06x}", self.magic));
        }
        let info = u16_at(p, 2);
        let addr = u64_at(p, 8);
        let expected = self.start + (i * XLOG_BLCKSZ) as u64;
        if addr != expected {
            return Err(format!("page {i} says it is at {}", super::wal::format_lsn(addr)));
        }
        if (info & XLP_LONG_HEADER != 0) != (i == 0) {
            return Err(format!("page {i} has the wrong header length"));
        }
        let body = if i == 0 { LONG_PAGE_HEADER } else { SHORT_PAGE_HEADER };
        Ok(Page { info, rem_len: u32_at(p, 16), body })
    }
}

/// How gathering a record's bytes across pages ended.
enum Gathered {
    Whole,
    /// The segment ended first: the record goes on in the next one.
    SegmentEnd,
    /// PostgreSQL found the record cut short (at a crash or a promotion) and wrote over its rest:
    /// it never replays it, and new records begin on the page reached.
    Abandoned,
    Broken(String),
}

impl Pages<'_> {
    /// Takes `left` bytes of a record from `(page, off)` on, into `out` when `keep`, across the
    /// headers of the pages it continues on (each must say it continues a record, with the bytes
    /// that remain); leaves `(page, off)` just after them.
    fn gather(&self, page: &mut usize, off: &mut usize, mut left: usize, keep: bool, out: &mut Vec<u8>) -> Gathered {
        loop {
            let here = left.min(XLOG_BLCKSZ - *off);
            if keep {
                out.extend_from_slice(&self.seg[*page * XLOG_BLCKSZ + *off..][..here]);
            }
            left -= here;
            *off += here;
            if left == 0 {
                return Gathered::Whole;
            }
            *page += 1;
            if *page == self.seg.len() / XLOG_BLCKSZ {
                return Gathered::SegmentEnd;
            }
            match self.page(*page) {
                Ok(p) if p.info & XLP_FIRST_IS_CONTRECORD != 0 && p.rem_len as usize == left => *off = p.body,
                Ok(p) if p.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 => {
                    *off = p.body;
                    return Gathered::Abandoned;
                }
                Ok(p) => {
                    return Gathered::Broken(format!(
                        "page {page} says {} bytes of a record remain, not {left}",
                        p.rem_len
                    ));
                }
                Err(e) => return Gathered::Broken(e),
            }
        }
    }
}

/// Reads every record of one WAL segment (a whole file as archived), calling `on_record` for
/// each one that begins and ends in it, in order.
pub fn scan_segment(seg: &[u8], mut on_record: impl FnMut(&Record)) -> SegmentScan {
    let mut scan = SegmentScan::default();
    if seg.len() < XLOG_BLCKSZ || !seg.len().is_power_of_two() {
        scan.give_up(0, format!("a segment of {} bytes is not a WAL segment", seg.len()));
        return scan;
    }
    let magic = u16_at(seg, 0);
    let Some(major) = major_of(magic) else {
        scan.give_up(0, format!("page format {magic:#06x} is not one of PostgreSQL 13 to 18's"));
        return scan;
    };
    scan.major = major;
    scan.start = u64_at(seg, 8);
    scan.system_identifier = u64_at(seg, 24);
    let (seg_size, blcksz) = (u32_at(seg, 32) as usize, u32_at(seg, 36) as usize);
    if seg_size != seg.len() || blcksz != XLOG_BLCKSZ || !scan.start.is_multiple_of(seg.len() as u64) {
        scan.give_up(scan.start, format!("the first page says a segment of {seg_size} bytes in pages of {blcksz}"));
        return scan;
    }
    let start = scan.start;
    let pages = Pages { seg, start, magic };
    let page_count = seg.len() / XLOG_BLCKSZ;
    let lsn_of = move |page: usize, off: usize| start + (page * XLOG_BLCKSZ + off) as u64;

    let first = match pages.page(0) {
        Ok(p) => p,
        Err(e) => {
            scan.give_up(scan.start, e);
            return scan;
        }
    };
    // Where the next record may begin: page and offset within it.
    let (mut page, mut off) = (0usize, first.body);

    // A record begun in an earlier segment: skip its continuation, keeping it for stitching.
    if first.info & XLP_FIRST_IS_CONTRECORD != 0 {
        let remaining = first.rem_len;
        let mut bytes = Vec::new();
        match pages.gather(&mut page, &mut off, remaining as usize, remaining as usize <= CARRY_LIMIT, &mut bytes) {
            Gathered::Whole => {
                scan.head = Some(Continuation { remaining, bytes });
                off = maxalign(off);
            }
            Gathered::SegmentEnd => {
                scan.head = Some(Continuation { remaining, bytes });
                return scan;
            }
            // Nothing to stitch: the earlier segment's unfinished record was abandoned.
            Gathered::Abandoned => {}
            Gathered::Broken(e) => {
                scan.give_up(lsn_of(page, 0), e);
                return scan;
            }
        }
    }

    let mut record = Vec::new();
    loop {
        if off >= XLOG_BLCKSZ {
            page += 1;
            if page == page_count {
                return scan;
            }
            match pages.page(page) {
                Ok(p) if p.info & XLP_FIRST_IS_CONTRECORD == 0 => off = p.body,
                Ok(_) => {
                    scan.give_up(lsn_of(page, 0), "a page continues a record that never began");
                    return scan;
                }
                Err(e) => {
                    scan.give_up(lsn_of(page, 0), e);
                    return scan;
                }
            }
        }
        let lsn = lsn_of(page, off);
        // Records start 8-aligned and page bodies are multiples of 8: the length field is whole.
        let total = u32_at(seg, page * XLOG_BLCKSZ + off) as usize;
        if total == 0 {
            scan.give_up(lsn, "the WAL ends before the segment does");
            return scan;
        }
        if total < RECORD_HEADER {
            scan.give_up(lsn, format!("a record of {total} bytes is shorter than its header"));
            return scan;
        }
        // A record longer than the segment cannot end in it.
        record.clear();
        let keep = total <= seg.len();
        match pages.gather(&mut page, &mut off, total, keep, &mut record) {
            Gathered::Whole => {}
            Gathered::SegmentEnd => {
                let bytes = if total <= CARRY_LIMIT { std::mem::take(&mut record) } else { Vec::new() };
                scan.tail = Some(Tail { lsn, total: total as u32, bytes });
                return scan;
            }
            Gathered::Abandoned => continue,
            Gathered::Broken(e) => {
                scan.give_up(lsn, e);
                return scan;
            }
        }
        if !keep {
            scan.give_up(lsn, format!("a record of {total} bytes ends in a segment of {}", seg.len()));
            return scan;
        }
        match decode_record(lsn, &record, major) {
            Ok(r) => {
                scan.add(&r);
                on_record(&r);
                if r.rmid == RM_XLOG_ID && r.info & 0xF0 == XLOG_SWITCH {
                    scan.switched = true;
                    return scan;
                }
            }
            Err(e) => {
                scan.give_up(lsn, e);
                return scan;
            }
        }
        off = maxalign(off);
    }
}

/// Joins the record a segment's `tail` begins with the continuations of the segments after it
/// (`heads`, in order; a record may cross more than one) and decodes it. `Ok(None)`: the next
/// segment does not continue it, so PostgreSQL abandoned the record and never replays it.
/// Errors name what does not fit; the map must then vouch for nothing across the boundary.
pub fn stitch(tail: &Tail, major: u32, heads: &[Option<&Continuation>]) -> Result<Option<Record>, String> {
    let total = tail.total as usize;
    if total > CARRY_LIMIT {
        return Err(format!("a record of {total} bytes crosses a segment boundary"));
    }
    if tail.bytes.len() > total {
        return Err(format!("{} bytes kept of a record of {total}", tail.bytes.len()));
    }
    let mut bytes = tail.bytes.clone();
    for head in heads {
        let Some(head) = head else { return Ok(None) };
        let left = total - bytes.len();
        if head.remaining as usize != left {
            return Err(format!("the next segment continues a record with {} bytes, not {left}", head.remaining));
        }
        bytes.extend_from_slice(&head.bytes[..head.bytes.len().min(left)]);
        if bytes.len() == total {
            return decode_record(tail.lsn, &bytes, major).map(Some);
        }
    }
    Err(format!("the record at {} runs past the segments given", super::wal::format_lsn(tail.lsn)))
}

/// Decodes one whole record (header included): checks its CRC and reads its block references
/// the way PostgreSQL's `DecodeXLogRecord` does, refusing anything out of bounds or out of order.
pub fn decode_record(lsn: u64, rec: &[u8], major: u32) -> Result<Record, String> {
    if rec.len() < RECORD_HEADER || u32_at(rec, 0) as usize != rec.len() {
        return Err("a record's length does not match its bytes".to_string());
    }
    let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    crc.update(&rec[RECORD_HEADER..]);
    crc.update(&rec[..20]);
    if crc.finalize() as u32 != u32_at(rec, 20) {
        return Err("a record's CRC does not match: the WAL is damaged".to_string());
    }
    let (info, rmid) = (rec[16], rec[17]);
    let mut at = RECORD_HEADER;
    let remaining = rec.len() - RECORD_HEADER;
    let mut data_total = 0usize;
    let mut main_len = 0usize;
    let mut blocks = Vec::new();
    let mut last_rel: Option<(u32, u32, u32)> = None;
    let mut max_block_id: i32 = -1;
    let take = |at: &mut usize, n: usize| -> Result<usize, String> {
        if *at + n > rec.len() {
            return Err("a record's block headers run past its end".to_string());
        }
        *at += n;
        Ok(*at - n)
    };
    while remaining - (at - RECORD_HEADER) > data_total {
        let id = rec[take(&mut at, 1)?];
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = rec[take(&mut at, 1)?] as usize;
                data_total += main_len;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = u32_at(rec, take(&mut at, 4)?) as usize;
                data_total += main_len;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => {
                take(&mut at, 2)?;
            }
            XLR_BLOCK_ID_TOPLEVEL_XID => {
                take(&mut at, 4)?;
            }
            id if id <= XLR_MAX_BLOCK_ID => {
                if i32::from(id) <= max_block_id {
                    return Err(format!("block id {id} out of order"));
                }
                max_block_id = i32::from(id);
                let flags = rec[take(&mut at, 1)?];
                let data_len = u16_at(rec, take(&mut at, 2)?) as usize;
                if (flags & BKPBLOCK_HAS_DATA != 0) != (data_len != 0) {
                    return Err(format!("block {id}'s data flag and length ({data_len}) disagree"));
                }
                data_total += data_len;
                if flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let image_len = u16_at(rec, take(&mut at, 2)?) as usize;
                    take(&mut at, 2)?; // hole offset
                    let image_info = rec[take(&mut at, 1)?];
                    let compressed = if major <= 14 { image_info & 0x02 != 0 } else { image_info & 0x1C != 0 };
                    if image_info & BKPIMAGE_HAS_HOLE != 0 && compressed {
                        take(&mut at, 2)?; // hole length
                    }
                    if image_len == 0 || image_len > 8192 {
                        return Err(format!("block {id}'s image of {image_len} bytes"));
                    }
                    data_total += image_len;
                }
                let rel = if flags & BKPBLOCK_SAME_REL != 0 {
                    last_rel.ok_or_else(|| format!("block {id} refers to a previous relation and there is none"))?
                } else {
                    let r = take(&mut at, 12)?;
                    (u32_at(rec, r), u32_at(rec, r + 4), u32_at(rec, r + 8))
                };
                last_rel = Some(rel);
                let block = u32_at(rec, take(&mut at, 4)?);
                let fork = flags & BKPBLOCK_FORK_MASK;
                if fork > 3 {
                    return Err(format!("block {id} is in fork {fork}"));
                }
                blocks.push(BlockRef { file: RelFork { spc: rel.0, db: rel.1, rel: rel.2, fork }, block });
            }
            id => return Err(format!("block id {id} is not one PostgreSQL writes")),
        }
    }
    if rec.len() - at != data_total {
        return Err(format!(
            "a record's block headers end at byte {at} of {}, and their data lengths add up to {data_total}",
            rec.len()
        ));
    }
    let main = &rec[rec.len() - main_len..];
    let unvouched = unvouched(rmid, info, main)?;
    Ok(Record { lsn, rmid, info, blocks, unvouched })
}

/// What a record changes besides its blocks.
fn unvouched(rmid: u8, info: u8, main: &[u8]) -> Result<Option<Unvouched>, String> {
    let relation = |at: usize| -> Result<Unvouched, String> {
        if main.len() < at + 12 {
            return Err(format!("a storage record's data is {} bytes long", main.len()));
        }
        Ok(Unvouched::Relation { spc: u32_at(main, at), db: u32_at(main, at + 4), rel: u32_at(main, at + 8) })
    };
    Ok(match (rmid, info & 0xF0) {
        // xl_smgr_create: the relation first; xl_smgr_truncate: the new length, then it.
        (RM_SMGR_ID, XLOG_SMGR_CREATE) => Some(relation(0)?),
        (RM_SMGR_ID, XLOG_SMGR_TRUNCATE) => Some(relation(4)?),
        (RM_DBASE_ID, _) => Some(Unvouched::Everything("a database was created, moved or dropped".into())),
        (RM_TBLSPC_ID, _) => Some(Unvouched::Everything("a tablespace was created or dropped".into())),
        (id, _) if id > RM_MAX_BUILTIN_ID => {
            Some(Unvouched::Everything(format!("an extension's resource manager ({id}) wrote WAL")))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests;

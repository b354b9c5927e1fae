//! Segments laid out here the way PostgreSQL lays them out (page headers, records crossing pages
//! and segments, 8-byte alignment), so each rule of the reader is tried on its own. Real WAL,
//! compared with pg_waldump, is in the integration tests (`walblocks`).

use super::*;

const PAGE: usize = XLOG_BLCKSZ;
const SEG: usize = 1 << 20;
const MAGIC_15: u16 = 0xD110;
const MAGIC_13: u16 = 0xD106;

/// A block reference as a record builder writes it.
#[derive(Clone)]
struct Block {
    rel: (u32, u32, u32),
    fork: u8,
    block: u32,
    same_rel: bool,
    /// An image: its stored length and `bimg_info`.
    image: Option<(u16, u8)>,
    data: usize,
}

fn block(rel: u32, block_no: u32) -> Block {
    Block { rel: (1663, 5, rel), fork: 0, block: block_no, same_rel: false, image: None, data: 0 }
}

/// One record, CRC included.
fn record(rmid: u8, info: u8, blocks: &[Block], main: &[u8]) -> Vec<u8> {
    let mut headers = Vec::new();
    let mut payload = Vec::new();
    for (id, b) in blocks.iter().enumerate() {
        let mut flags = b.fork;
        if b.image.is_some() {
            flags |= BKPBLOCK_HAS_IMAGE;
        }
        if b.data > 0 {
            flags |= BKPBLOCK_HAS_DATA;
        }
        if b.same_rel {
            flags |= BKPBLOCK_SAME_REL;
        }
        headers.push(id as u8);
        headers.push(flags);
        headers.extend_from_slice(&(b.data as u16).to_le_bytes());
        if let Some((len, info)) = b.image {
            headers.extend_from_slice(&len.to_le_bytes());
            headers.extend_from_slice(&100u16.to_le_bytes());
            headers.push(info);
            let compressed = info & 0x02 != 0 || info & 0x1C != 0;
            if info & BKPIMAGE_HAS_HOLE != 0 && compressed {
                headers.extend_from_slice(&(8192 - len).to_le_bytes());
            }
            payload.extend(std::iter::repeat_n(0xAB, len as usize));
        }
        if !b.same_rel {
            for v in [b.rel.0, b.rel.1, b.rel.2] {
                headers.extend_from_slice(&v.to_le_bytes());
            }
        }
        headers.extend_from_slice(&b.block.to_le_bytes());
        payload.extend(std::iter::repeat_n(0xCD, b.data));
    }
    if !main.is_empty() {
        if main.len() < 256 {
            headers.push(XLR_BLOCK_ID_DATA_SHORT);
            headers.push(main.len() as u8);
        } else {
            headers.push(XLR_BLOCK_ID_DATA_LONG);
            headers.extend_from_slice(&(main.len() as u32).to_le_bytes());
        }
    }
    let total = RECORD_HEADER + headers.len() + payload.len() + main.len();
    let mut rec = Vec::with_capacity(total);
    rec.extend_from_slice(&(total as u32).to_le_bytes());
    rec.extend_from_slice(&700u32.to_le_bytes()); // xid
    rec.extend_from_slice(&0u64.to_le_bytes()); // prev
    rec.push(info);
    rec.push(rmid);
    rec.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // padding, then the CRC's place
    rec.extend_from_slice(&headers);
    rec.extend_from_slice(&payload);
    rec.extend_from_slice(main);
    set_crc(&mut rec);
    rec
}

/// Writes the record's CRC-32C (of its data, then of its header before the CRC) into it.
fn set_crc(rec: &mut [u8]) {
    let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    crc.update(&rec[RECORD_HEADER..]);
    crc.update(&rec[..20]);
    let crc = crc.finalize() as u32;
    rec[20..24].copy_from_slice(&crc.to_le_bytes());
}

fn heap_insert(rel: u32, block_no: u32) -> Vec<u8> {
    record(10, 0x00, &[Block { data: 30, ..block(rel, block_no) }], &[1, 0, 0])
}

fn switch() -> Vec<u8> {
    record(RM_XLOG_ID, XLOG_SWITCH, &[], &[])
}

/// Lays `records` out over `segments` segments starting at LSN `start` (page headers written
/// where records reach them), as PostgreSQL does. Returns the segments and each record's LSN.
fn lay_out(magic: u16, start: u64, segments: usize, records: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<u64>) {
    lay_out_in(SEG, magic, start, segments, records)
}

/// [`lay_out`] in segments of `seg` bytes.
fn lay_out_in(seg: usize, magic: u16, start: u64, segments: usize, records: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<u64>) {
    let mut buf = vec![0u8; seg * segments];
    let header = |buf: &mut Vec<u8>, pos: usize, rem: usize| -> usize {
        let long = pos.is_multiple_of(seg);
        let mut info = if rem > 0 { XLP_FIRST_IS_CONTRECORD } else { 0 };
        if long {
            info |= XLP_LONG_HEADER;
        }
        buf[pos..pos + 2].copy_from_slice(&magic.to_le_bytes());
        buf[pos + 2..pos + 4].copy_from_slice(&info.to_le_bytes());
        buf[pos + 4..pos + 8].copy_from_slice(&1u32.to_le_bytes());
        buf[pos + 8..pos + 16].copy_from_slice(&(start + pos as u64).to_le_bytes());
        buf[pos + 16..pos + 20].copy_from_slice(&(rem as u32).to_le_bytes());
        if long {
            buf[pos + 24..pos + 32].copy_from_slice(&7u64.to_le_bytes());
            buf[pos + 32..pos + 36].copy_from_slice(&(seg as u32).to_le_bytes());
            buf[pos + 36..pos + 40].copy_from_slice(&(PAGE as u32).to_le_bytes());
            LONG_PAGE_HEADER
        } else {
            SHORT_PAGE_HEADER
        }
    };
    let mut pos = header(&mut buf, 0, 0);
    let mut lsns = Vec::new();
    for rec in records {
        pos = maxalign(pos);
        if pos.is_multiple_of(PAGE) {
            pos += header(&mut buf, pos, 0);
        }
        lsns.push(start + pos as u64);
        let mut written = 0;
        while written < rec.len() {
            if pos.is_multiple_of(PAGE) {
                pos += header(&mut buf, pos, rec.len() - written);
            }
            let n = (rec.len() - written).min(PAGE - pos % PAGE);
            buf[pos..pos + n].copy_from_slice(&rec[written..written + n]);
            pos += n;
            written += n;
        }
    }
    (buf.chunks(seg).map(<[u8]>::to_vec).collect(), lsns)
}

fn read(seg: &[u8]) -> (SegmentScan, Vec<Record>) {
    let mut records = Vec::new();
    let scan = scan_segment(seg, |r| records.push(r.clone()));
    (scan, records)
}

fn refs(list: &[(u32, u32)]) -> BTreeSet<BlockRef> {
    list.iter().map(|&(rel, b)| BlockRef { file: RelFork { spc: 1663, db: 5, rel, fork: 0 }, block: b }).collect()
}

#[test]
fn records_across_pages_give_their_blocks_and_lsns() {
    // Big enough that many cross a page boundary.
    let mut records: Vec<Vec<u8>> = (0..300).map(|i| heap_insert(16384, i)).collect();
    records.push(record(10, 0x10, &[Block { data: 5000, ..block(16385, 9) }], &[0; 300]));
    records.push(switch());
    let start = 3 * SEG as u64;
    let (segs, lsns) = lay_out(MAGIC_15, start, 1, &records);
    let (scan, seen) = read(&segs[0]);
    assert_eq!(scan.start, start);
    assert_eq!(scan.major, 15);
    assert!(scan.unvouched.is_empty(), "{:?}", scan.unvouched);
    assert!(scan.switched && scan.head.is_none() && scan.tail.is_none());
    let mut expected: Vec<(u32, u32)> = (0..300).map(|i| (16384, i)).collect();
    expected.push((16385, 9));
    assert_eq!(scan.blocks, refs(&expected));
    assert_eq!(seen.iter().map(|r| r.lsn).collect::<Vec<_>>(), lsns);
}

#[test]
fn images_same_relation_forks_and_origins_decode_in_both_image_layouts() {
    for (magic, compressed_hole) in [(MAGIC_15, 0x01 | 0x04), (MAGIC_13, 0x01 | 0x02)] {
        let blocks = [
            Block { image: Some((8100, 0x01)), ..block(16384, 1) },
            Block { same_rel: true, fork: 2, image: Some((700, compressed_hole)), data: 12, ..block(16384, 7) },
            Block { data: 4, ..block(16390, 0) },
        ];
        // With an origin before the main data, as a replication origin's records carry.
        let rec = with_origin(&record(11, 0x00, &blocks, &[9; 40]));
        let (segs, _) = lay_out(magic, 0, 1, &[rec, switch()]);
        let (scan, _) = read(&segs[0]);
        assert!(scan.unvouched.is_empty(), "{magic:#x}: {:?}", scan.unvouched);
        let mut want = refs(&[(16384, 1), (16390, 0)]);
        want.insert(BlockRef { file: RelFork { spc: 1663, db: 5, rel: 16384, fork: 2 }, block: 7 });
        assert_eq!(scan.blocks, want, "{magic:#x}");
    }
}

/// The record with an origin (block id 253) written before its main data header, CRC redone.
fn with_origin(rec: &[u8]) -> Vec<u8> {
    let main_len = 40u8;
    let mut out = rec.to_vec();
    // The main data header (id 255, then its length) is the last of the headers.
    let pos =
        (RECORD_HEADER..out.len() - 1).find(|&i| out[i] == XLR_BLOCK_ID_DATA_SHORT && out[i + 1] == main_len).unwrap();
    out.splice(pos..pos, [XLR_BLOCK_ID_ORIGIN, 3, 0]);
    let total = out.len() as u32;
    out[0..4].copy_from_slice(&total.to_le_bytes());
    set_crc(&mut out);
    out
}

/// Heap inserts that fill the first segment but for about 400 bytes.
fn nearly_a_segment_of_inserts() -> Vec<Vec<u8>> {
    let mut records: Vec<Vec<u8>> = (0..20_000).map(|i| heap_insert(16384, i)).collect();
    let (_, lsns) = lay_out(MAGIC_15, 0, 2, &records);
    let in_first = lsns.iter().filter(|&&l| l < SEG as u64).count();
    records.truncate(in_first - 5);
    records
}

#[test]
fn a_record_crossing_into_the_next_segment_is_stitched_from_both() {
    // Fill the first segment so that a large record straddles its end.
    let mut records = nearly_a_segment_of_inserts();
    let big = record(10, 0x00, &[Block { image: Some((8192, 0)), ..block(16400, 42) }], &[0; 2000]);
    records.push(big);
    records.push(heap_insert(16401, 1));
    records.push(switch());
    let (segs, lsns) = lay_out(MAGIC_15, 0, 2, &records);
    let big_lsn = lsns[lsns.len() - 3];
    assert!(big_lsn < SEG as u64 && big_lsn + 10_000 > SEG as u64, "the big record straddles the boundary");

    let (first, _) = read(&segs[0]);
    let (second, _) = read(&segs[1]);
    assert!(first.unvouched.is_empty() && second.unvouched.is_empty());
    let tail = first.tail.as_ref().expect("the first segment ends inside a record");
    assert_eq!(tail.lsn, big_lsn);
    let head = second.head.as_ref().expect("the second segment starts inside a record");
    assert_eq!(tail.bytes.len() + head.remaining as usize, tail.total as usize);
    // Neither segment claims the record's block on its own.
    let big_ref = refs(&[(16400, 42)]);
    assert!(first.blocks.is_disjoint(&big_ref) && second.blocks.is_disjoint(&big_ref));
    assert!(second.blocks.contains(&refs(&[(16401, 1)]).pop_first().unwrap()));

    let joined = stitch(tail, 15, &[Some(head)]).unwrap().expect("continued");
    assert_eq!(joined.lsn, big_lsn);
    assert_eq!(joined.blocks, refs(&[(16400, 42)]).into_iter().collect::<Vec<_>>());

    // Continued with the wrong length, or not at all.
    let short = Continuation { remaining: head.remaining - 8, bytes: head.bytes.clone() };
    assert!(stitch(tail, 15, &[Some(&short)]).unwrap_err().contains("continues a record"));
    assert_eq!(stitch(tail, 15, &[None]).unwrap(), None);
    // Damaged on the way: the CRC catches it.
    let mut bad = head.clone();
    bad.bytes[10] ^= 1;
    assert!(stitch(tail, 15, &[Some(&bad)]).unwrap_err().contains("CRC"));
}

#[test]
fn a_record_longer_than_a_segment_crosses_two_boundaries() {
    let mut records: Vec<Vec<u8>> = (0..50).map(|i| heap_insert(16384, i)).collect();
    // 2.5 segments of main data: begins in the first segment, runs through the second.
    records.push(record(1, 0x00, &[block(16500, 3)], &vec![7; SEG * 5 / 2]));
    records.push(switch());
    let (segs, _) = lay_out(MAGIC_15, 0, 3, &records);
    let scans: Vec<SegmentScan> = segs.iter().map(|s| read(s).0).collect();
    let tail = scans[0].tail.as_ref().unwrap();
    assert!(tail.bytes.is_empty(), "longer than the carry limit: not kept");
    assert!(scans[1].head.as_ref().unwrap().bytes.is_empty() && scans[1].tail.is_none());
    let err = stitch(tail, 15, &[scans[1].head.as_ref(), scans[2].head.as_ref()]).unwrap_err();
    assert!(err.contains("crosses a segment boundary"), "{err}");

    // Within the limit, beginning at the end of one segment and ending in the one after the
    // next (a 1 MiB segment holds a little less than 1 MiB of records).
    let mut records = nearly_a_segment_of_inserts();
    records.push(record(1, 0x00, &[block(16500, 3)], &vec![7; CARRY_LIMIT - 100]));
    let (segs, _) = lay_out(MAGIC_15, 0, 3, &records);
    let scans: Vec<SegmentScan> = segs.iter().map(|s| read(s).0).collect();
    assert!(
        scans[1].head.as_ref().unwrap().remaining as usize > SEG - 128 * SHORT_PAGE_HEADER,
        "runs through the middle one"
    );
    let joined = stitch(scans[0].tail.as_ref().unwrap(), 15, &[scans[1].head.as_ref(), scans[2].head.as_ref()])
        .unwrap()
        .unwrap();
    assert_eq!(joined.blocks, refs(&[(16500, 3)]).into_iter().collect::<Vec<_>>());
}

#[test]
fn a_record_longer_than_the_carry_limit_is_read_where_it_ends_in_its_segment() {
    let seg = 4 << 20;
    let records = [heap_insert(16384, 1), record(1, 0x00, &[block(16800, 4)], &vec![5; CARRY_LIMIT * 3 / 2]), switch()];
    let (segs, _) = lay_out_in(seg, MAGIC_15, 0, 1, &records);
    let (scan, _) = read(&segs[0]);
    assert!(scan.unvouched.is_empty(), "{:?}", scan.unvouched);
    assert_eq!(scan.blocks, refs(&[(16384, 1), (16800, 4)]));
}

#[test]
fn damage_and_unknown_formats_vouch_for_nothing() {
    let records: Vec<Vec<u8>> = (0..300).map(|i| heap_insert(16384, i)).chain([switch()]).collect();
    let (segs, lsns) = lay_out(MAGIC_15, 0, 1, &records);

    let mut flipped = segs[0].clone();
    flipped[lsns[40] as usize + 30] ^= 0x10;
    let (scan, _) = read(&flipped);
    assert!(scan.vouches_for_nothing(), "a flipped byte");
    assert!(scan.stopped.as_ref().is_some_and(|s| s.why.contains("CRC")), "{:?}", scan.stopped);

    let mut unknown = segs[0].clone();
    unknown[0..2].copy_from_slice(&0xD0FFu16.to_le_bytes());
    assert!(read(&unknown).0.vouches_for_nothing(), "an unknown page format");

    let mut wrong_page = segs[0].clone();
    wrong_page[2 * PAGE + 8] ^= 1;
    assert!(read(&wrong_page).0.vouches_for_nothing(), "a page from elsewhere");

    // WAL that ends before the segment does (no switch record): not a whole archived segment.
    let (short, _) = lay_out(MAGIC_15, 0, 1, &records[..50]);
    assert!(read(&short[0]).0.vouches_for_nothing());

    assert!(read(&segs[0][..PAGE * 3]).0.vouches_for_nothing(), "not a segment's size");
    assert!(read(&[]).0.vouches_for_nothing());
}

#[test]
fn new_and_truncated_relations_databases_and_extensions_are_named() {
    let mut create = vec![0u8; 16];
    create[0..4].copy_from_slice(&1663u32.to_le_bytes());
    create[4..8].copy_from_slice(&5u32.to_le_bytes());
    create[8..12].copy_from_slice(&16600u32.to_le_bytes());
    let mut truncate = vec![0u8; 20];
    truncate[4..16].copy_from_slice(&create[0..12]);
    truncate[8..12].copy_from_slice(&5u32.to_le_bytes());
    truncate[12..16].copy_from_slice(&16601u32.to_le_bytes());
    let records = vec![
        record(RM_SMGR_ID, XLOG_SMGR_CREATE, &[], &create),
        record(RM_SMGR_ID, XLOG_SMGR_TRUNCATE, &[], &truncate),
        record(RM_DBASE_ID, 0x00, &[], &[0; 16]),
        record(200, 0x00, &[block(16602, 0)], &[1]),
        switch(),
    ];
    let (segs, _) = lay_out(MAGIC_15, 0, 1, &records);
    let (scan, _) = read(&segs[0]);
    assert_eq!(scan.unvouched[0], Unvouched::Relation { spc: 1663, db: 5, rel: 16600 });
    assert_eq!(scan.unvouched[1], Unvouched::Relation { spc: 1663, db: 5, rel: 16601 });
    assert!(matches!(&scan.unvouched[2], Unvouched::Everything(why) if why.contains("database")));
    assert!(matches!(&scan.unvouched[3], Unvouched::Everything(why) if why.contains("extension")));
    // A storage record too short for the relation it names is damage, not a change.
    let (segs, _) = lay_out(MAGIC_15, 0, 1, &[record(RM_SMGR_ID, XLOG_SMGR_CREATE, &[], &[0; 8]), switch()]);
    assert!(read(&segs[0]).0.vouches_for_nothing());
}

#[test]
fn a_record_postgres_abandoned_and_overwrote_is_skipped() {
    // A record cut short at a crash: its next page was written over, flagged as such.
    let records: Vec<Vec<u8>> = (0..60).map(|i| heap_insert(16384, i)).collect();
    let big = record(10, 0x00, &[block(16700, 1)], &[3; 20_000]);
    let (mut segs, lsns) = lay_out(MAGIC_15, 0, 1, &[records.clone(), vec![big]].concat());
    let big_lsn = *lsns.last().unwrap() as usize;
    let next_page = big_lsn.next_multiple_of(PAGE);
    let after = record(10, 0x00, &[block(16701, 2)], &[1]);
    let seg = &mut segs[0];
    seg[next_page + 2..next_page + 4].copy_from_slice(&XLP_FIRST_IS_OVERWRITE_CONTRECORD.to_le_bytes());
    seg[next_page + 16..next_page + 20].copy_from_slice(&0u32.to_le_bytes());
    let body = next_page + SHORT_PAGE_HEADER;
    seg[body..body + after.len()].copy_from_slice(&after);
    let sw = switch();
    let at = maxalign(body + after.len());
    seg[at..at + sw.len()].copy_from_slice(&sw);
    let (scan, _) = read(seg);
    assert!(scan.unvouched.is_empty(), "{:?}", scan.unvouched);
    assert!(!scan.blocks.iter().any(|b| b.file.rel == 16700), "the abandoned record's block is not claimed");
    assert!(scan.blocks.iter().any(|b| b.file.rel == 16701 && b.block == 2));
}

#[test]
fn malformed_block_headers_are_refused() {
    let good = record(10, 0, &[Block { data: 8, ..block(16384, 1) }, block(16384, 2)], &[1, 2]);
    assert!(decode_record(0, &good, 15).is_ok());
    let redo = |mut rec: Vec<u8>| {
        set_crc(&mut rec);
        rec
    };
    let mut out_of_order = good.clone();
    out_of_order[RECORD_HEADER] = 1; // the first block claims id 1, the second also 1
    assert!(decode_record(0, &redo(out_of_order), 15).unwrap_err().contains("out of order"));
    let mut flag_without_data = good.clone();
    flag_without_data[RECORD_HEADER + 2] = 0; // data length 0 with HAS_DATA set
    assert!(decode_record(0, &redo(flag_without_data), 15).unwrap_err().contains("disagree"));
    let mut same_rel_first = good.clone();
    same_rel_first[RECORD_HEADER + 1] |= BKPBLOCK_SAME_REL;
    assert!(decode_record(0, &redo(same_rel_first), 15).is_err());
    let mut bad_id = good.clone();
    bad_id[RECORD_HEADER] = 100;
    assert!(decode_record(0, &redo(bad_id), 15).unwrap_err().contains("block id 100"));
}

proptest::proptest! {
    /// Any bytes: no panic, and damage never yields a block the intact segment did not have.
    #[test]
    fn damaged_segments_never_claim_blocks_they_do_not_have(flips in proptest::collection::vec((0usize..SEG, 0u8..8), 1..6)) {
        let records: Vec<Vec<u8>> = (0..400).map(|i| heap_insert(16384, i)).chain([switch()]).collect();
        let (segs, _) = lay_out(MAGIC_15, 0, 1, &records);
        let intact = read(&segs[0]).0;
        let mut seg = segs[0].clone();
        for (at, bit) in flips {
            seg[at] ^= 1 << bit;
        }
        let scan = read(&seg).0;
        proptest::prop_assert!(scan.vouches_for_nothing() || scan.blocks.is_subset(&intact.blocks));
    }
}

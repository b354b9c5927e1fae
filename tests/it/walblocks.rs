//! The WAL block reader (`drctl::pg::wal_blocks`) on WAL real servers wrote: every record
//! pg_waldump shows, at the same LSN with the same block references, records crossing segment
//! boundaries included; and each supported version's WAL read in full.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;

use drctl::pg::wal_blocks::{self, BlockRef, SegmentScan};

use crate::harness::pg::{Cluster, server_bin};
use crate::harness::*;

/// (spc, db, rel, fork, block) of each block reference, as pg_waldump prints them.
type Refs = Vec<(u32, u32, u32, u8, u32)>;

fn refs_of(blocks: &[BlockRef]) -> Refs {
    blocks.iter().map(|b| (b.file.spc, b.file.db, b.file.rel, b.file.fork, b.block)).collect()
}

/// A cluster of PostgreSQL `major` that copies each finished segment into `archive`.
fn archiving_cluster(ws: &Workspace, major: u32, extra: &[(&str, String)]) -> (Cluster, std::path::PathBuf) {
    let archive = ws.mkdir("archive");
    let (uid, gid) = user_ids("postgres");
    std::os::unix::fs::chown(&archive, Some(uid), Some(gid)).unwrap();
    let mut settings =
        vec![("archive_mode", "on".to_string()), ("archive_command", format!("'cp %p {}/%f'", archive.display()))];
    settings.extend(extra.iter().cloned());
    let mut pg = Cluster::init_version(major, &ws.join("data"), &[], &settings);
    pg.start();
    (pg, archive)
}

/// Every archived segment in order, scanned, with each record the scans decode (and those
/// stitched across boundaries) by LSN.
fn read_archive(archive: &Path) -> (Vec<(String, SegmentScan)>, BTreeMap<u64, Refs>, usize) {
    let mut names: Vec<String> = fs::read_dir(archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect();
    names.sort();
    let mut records = BTreeMap::new();
    let mut scans = Vec::new();
    for name in &names {
        let seg = fs::read(archive.join(name)).unwrap();
        let scan = wal_blocks::scan_segment(&seg, |r| {
            records.insert(r.lsn, refs_of(&r.blocks));
        });
        scans.push((name.clone(), scan));
    }
    let mut stitched = 0;
    for (i, (name, scan)) in scans.iter().enumerate() {
        if let Some(tail) = &scan.tail {
            let heads: Vec<_> = scans[i + 1..].iter().map(|(_, s)| s.head.as_ref()).collect();
            let record = wal_blocks::stitch(tail, scan.major, &heads)
                .unwrap_or_else(|e| panic!("stitching the record at the end of {name}: {e}"))
                .unwrap_or_else(|| panic!("the record at the end of {name} is not continued"));
            records.insert(record.lsn, refs_of(&record.blocks));
            stitched += 1;
        }
    }
    (scans, records, stitched)
}

fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// pg_waldump's records from `first` to `last` (segment names): LSN and block references.
fn pg_waldump(archive: &Path, first: &str, last: &str) -> BTreeMap<u64, Refs> {
    let out =
        Command::new(server_bin(15).join("pg_waldump")).arg("-p").arg(archive).args([first, last]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pg_waldump: {}{}", text, String::from_utf8_lossy(&out.stderr));
    let mut records = BTreeMap::new();
    for line in text.lines() {
        let lsn = line.split("lsn: ").nth(1).unwrap().split(',').next().unwrap();
        let mut refs = Vec::new();
        for part in line.split("blkref #").skip(1) {
            // "<n>: rel <spc>/<db>/<rel>[ fork <name>] blk <block>[ FPW...]"
            let words: Vec<&str> = part.split([' ', ',']).filter(|w| !w.is_empty()).collect();
            let rel: Vec<u32> = words[2].split('/').map(|n| n.parse().unwrap()).collect();
            let (fork, blk) = match words[3] {
                "fork" => {
                    let fork = match words[4] {
                        "fsm" => 1,
                        "vm" => 2,
                        "init" => 3,
                        other => panic!("fork {other} in {line}"),
                    };
                    (fork, words[6])
                }
                _ => (0, words[4]),
            };
            refs.push((rel[0], rel[1], rel[2], fork, blk.parse().unwrap()));
        }
        records.insert(parse_lsn(lsn), refs);
    }
    records
}

#[test]
fn every_record_and_block_reference_pg_waldump_shows_on_real_wal() {
    let ws = Workspace::new_public();
    // Compressed full-page images (pglz) exercise the image headers with a hole length.
    let (pg, archive) = archiving_cluster(&ws, 15, &[("wal_compression", "pglz".into())]);
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, pad text)");
    pg.sql("INSERT INTO t SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 20000) g");
    pg.sql("CHECKPOINT");
    // After a checkpoint each first change of a page carries its image.
    pg.sql("UPDATE t SET pad = md5(pad) WHERE id % 7 = 0");
    // An index build logs its pages in records of up to 32 images, which cross segments.
    pg.sql("CREATE INDEX t_pad ON t (pad)");
    pg.sql("DELETE FROM t WHERE id > 15000");
    pg.sql("VACUUM t");
    // Large values go to TOAST; a table created and truncated in one go.
    pg.sql("CREATE TABLE big (v text); ALTER TABLE big ALTER v SET STORAGE EXTERNAL");
    pg.sql("INSERT INTO big SELECT string_agg(md5(g::text), '') FROM generate_series(1, 40000) g");
    pg.sql("TRUNCATE big");
    pg.archive_all_wal();

    let (scans, ours, stitched) = read_archive(&archive);
    assert!(scans.len() >= 8, "{} segments", scans.len());
    assert!(stitched >= 4, "only {stitched} records crossed a segment boundary");
    for (name, scan) in &scans {
        assert_eq!(scan.major, 15, "{name}");
    }
    let first = &scans[0].0;
    let last = &scans[scans.len() - 1].0;
    let theirs = pg_waldump(&archive, first, last);
    // pg_waldump starts at the first record that begins in the first segment, as the scan does.
    let missing: Vec<_> = theirs.keys().filter(|l| !ours.contains_key(l)).take(5).collect();
    let extra: Vec<_> = ours.keys().filter(|l| !theirs.contains_key(l)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "records only pg_waldump saw: {missing:x?}; only drctl: {extra:x?}"
    );
    for (lsn, refs) in &theirs {
        assert_eq!(&ours[lsn], refs, "block references of the record at {lsn:X}");
    }
    let with_blocks = theirs.values().filter(|r| !r.is_empty()).count();
    let references: usize = theirs.values().map(Vec::len).sum();
    eprintln!(
        "{} segments: {} records ({with_blocks} with {references} block references), {stitched} stitched across segments",
        scans.len(),
        theirs.len()
    );
    assert!(with_blocks > 20_000, "{with_blocks} records with block references");
    // Segments written after initdb's (which created databases) vouch for their blocks.
    for (name, scan) in &scans[2..] {
        assert!(!scan.vouches_for_nothing(), "{name}: {:?}", scan.unvouched);
    }
}

#[test]
fn wal_of_every_supported_version_is_read_in_full() {
    for major in [13, 14, 15, 16, 17, 18] {
        let ws = Workspace::new_public();
        let (pg, archive) = archiving_cluster(&ws, major, &[]);
        pg.sql("CREATE TABLE t (id int, pad text)");
        // initdb's records (databases created) may share the first segment: the table's rows
        // go into segments after this one.
        let before = pg.sql("SELECT pg_walfile_name(pg_switch_wal())");
        pg.sql("INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series(1, 30000) g");
        pg.sql("UPDATE t SET pad = 'y' WHERE id % 100 = 0");
        let file = pg.sql("SELECT pg_relation_filenode('t')").parse::<u32>().unwrap();
        let pages = pg.sql("SELECT pg_relation_size('t') / 8192").parse::<u32>().unwrap();
        pg.archive_all_wal();
        drop(pg);

        let (scans, records, _) = read_archive(&archive);
        let mut touched = BTreeSet::new();
        for refs in records.values() {
            touched.extend(refs.iter().filter(|r| r.2 == file && r.3 == 0).map(|r| r.4));
        }
        for (name, scan) in &scans {
            assert_eq!(scan.major, major, "{name}");
            if name.as_str() > before.as_str() {
                assert!(!scan.vouches_for_nothing(), "PostgreSQL {major}, {name}: {:?}", scan.unvouched);
            }
        }
        assert_eq!(touched, (0..pages).collect::<BTreeSet<_>>(), "PostgreSQL {major}: every page of the table");
    }
}

/// The reader misses no change an incremental relies on: after a varied workload, every page of
/// a main or init fork on disk whose LSN (the end of the record that last changed it) lies in
/// the WAL read is among the blocks that WAL's records name, unless its relation was created
/// or truncated meanwhile (read whole). The page LSN is PostgreSQL's own record of a change,
/// independent of the reader.
#[test]
fn every_page_the_wal_changed_is_named_by_its_records() {
    let ws = Workspace::new_public();
    let (pg, archive) = archiving_cluster(&ws, 15, &[]);
    let space = ws.mkdir("space");
    let (uid, gid) = user_ids("postgres");
    std::os::unix::fs::chown(&space, Some(uid), Some(gid)).unwrap();
    pg.sql(&format!("CREATE TABLESPACE outside LOCATION '{}'", space.display()));
    pg.sql("CREATE TABLE a (n int PRIMARY KEY, pad text, tags int[]) WITH (fillfactor = 80)");
    pg.sql("INSERT INTO a SELECT g, md5(g::text), ARRAY[g % 7, g % 11] FROM generate_series(1, 40000) g");
    pg.sql("CREATE INDEX a_hash ON a USING hash (pad)");
    pg.sql("CREATE INDEX a_gin ON a USING gin (tags)");
    pg.sql("CREATE INDEX a_brin ON a USING brin (n)");
    pg.sql("CREATE SEQUENCE s");
    pg.sql("VACUUM (FREEZE) a");
    pg.sql("CHECKPOINT");
    let from = parse_lsn(&pg.sql("SELECT pg_current_wal_lsn()"));

    // HOT and non-HOT updates, deletes, inserts into every index kind, a sequence, a vacuum,
    // relations created, truncated, moved to another tablespace, an unlogged table.
    pg.sql("UPDATE a SET pad = md5(pad) WHERE n % 101 = 0");
    pg.sql("UPDATE a SET tags = ARRAY[n] WHERE n % 211 = 0");
    pg.sql("DELETE FROM a WHERE n % 307 = 0");
    pg.sql("INSERT INTO a SELECT g, md5(g::text), ARRAY[g] FROM generate_series(40001, 42000) g");
    pg.sql("SELECT nextval('s') FROM generate_series(1, 50)");
    pg.sql("VACUUM a");
    pg.sql("CREATE TABLE b AS SELECT g FROM generate_series(1, 5000) g");
    pg.sql("CREATE INDEX b_g ON b (g)");
    pg.sql("TRUNCATE b");
    pg.sql("INSERT INTO b SELECT g FROM generate_series(1, 100) g");
    pg.sql("CREATE TABLE c AS SELECT g FROM generate_series(1, 3000) g");
    pg.sql("ALTER TABLE c SET TABLESPACE outside");
    pg.sql("CREATE UNLOGGED TABLE u AS SELECT g FROM generate_series(1, 1000) g");
    let to = parse_lsn(&pg.sql("SELECT pg_current_wal_lsn()"));
    pg.sql("CHECKPOINT");
    pg.archive_all_wal();
    let data = pg.data.clone();
    drop(pg);

    let (scans, records, _) = read_archive(&archive);
    let named: BTreeSet<_> = records.values().flatten().copied().collect();
    // Relations created or truncated within the range (each segment read again for the LSNs).
    let mut whole = BTreeSet::new();
    for (name, scan) in &scans {
        assert!(!scan.changes_everything() || scan.start < from, "{name}: {:?}", scan.unvouched);
        wal_blocks::scan_segment(&fs::read(archive.join(name)).unwrap(), |r| {
            if let Some(wal_blocks::Unvouched::Relation { spc, db, rel }) =
                r.unvouched.as_ref().filter(|_| r.lsn >= from)
            {
                whole.insert((*spc, *db, *rel));
            }
        });
    }
    let (mut checked, mut missed) = (0, Vec::new());
    let mut dirs = vec![data.join("global"), space.clone()];
    dirs.extend(fs::read_dir(data.join("base")).unwrap().map(|e| e.unwrap().path()));
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            // As stored: relative to the data directory, or below pg_tblspc/<oid>/.
            let relative = match path.strip_prefix(&data) {
                Ok(p) => p.to_string_lossy().into_owned(),
                Err(_) => format!("pg_tblspc/{}", tablespace_relative(&path, &space)),
            };
            let Some((fork, segno)) = drctl::pg::basebackup::relation_file(&relative) else { continue };
            if ![0, 3].contains(&fork.fork) || whole.contains(&(fork.spc, fork.db, fork.rel)) {
                continue;
            }
            for (i, page) in fs::read(&path).unwrap().chunks(8192).enumerate() {
                let lsn = (u64::from(u32::from_le_bytes(page[..4].try_into().unwrap())) << 32)
                    | u64::from(u32::from_le_bytes(page[4..8].try_into().unwrap()));
                if lsn < from || lsn > to {
                    continue;
                }
                checked += 1;
                let block = segno * 131_072 + i as u32;
                if !named.contains(&(fork.spc, fork.db, fork.rel, fork.fork, block)) {
                    missed.push(format!("{relative} page {i} (LSN {lsn:X})"));
                }
            }
        }
    }
    assert!(
        missed.is_empty(),
        "{} of {checked} changed pages named by no record: {:?}",
        missed.len(),
        &missed[..missed.len().min(10)]
    );
    assert!(checked > 500, "only {checked} pages changed in the range");
}

/// A path below a tablespace's directory as it appears below `pg_tblspc/<oid>/`.
fn tablespace_relative(path: &Path, space: &Path) -> String {
    let inner = path.strip_prefix(space).unwrap().to_string_lossy().into_owned();
    // The tablespace's oid is the link's name in pg_tblspc; the test has one tablespace.
    let link = fs::read_dir(space.parent().unwrap().join("data/pg_tblspc")).unwrap().next().unwrap().unwrap();
    format!("{}/{inner}", link.file_name().to_string_lossy())
}

//! The order a directory restore reads the repository in: pack by pack, each needed byte once,
//! as restic's restorer does, instead of file by file (which on S3 re-reads a pack every time a
//! file switches between an incremental's pack and its parent's).
//!
//! A delta chunk needs its base's data, and the base is usually no part of the restored tree (it
//! is the block's previous version). Rather than hold bases in memory or fetch them again, the
//! plan writes each base into the file position its delta will occupy (a delta has its base's
//! length), and reads it back from there when the delta's pack comes. Packs are ordered in waves
//! so that a pack holding bases comes before the packs holding their deltas. Order only decides
//! speed, never correctness: a delta whose base was not written back yet (packs that depend on
//! each other, as prune's repacking can make) reads its base from the repository instead, and
//! every chunk is checked against its id after decoding either way.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::repo::Id;
use crate::repo::index::{ChunkLocation, Index};

/// Where a chunk's data goes: a file of the segment being restored and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub file: u32,
    pub offset: u64,
    /// False where a base is parked for its delta: that write does not complete the file.
    pub counts: bool,
}

/// One chunk to read, with every position it is written to.
#[derive(Debug)]
pub struct Item {
    pub id: Id,
    pub loc: ChunkLocation,
    /// The base the index says this chunk is a delta against, and whether that base is parked
    /// at `targets[0]`, with the index position of the pack holding it.
    pub base: Option<Base>,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Base {
    pub id: Id,
    /// The pack whose items write the base to this delta's first target; `None` when the base
    /// is not planned (unknown to the index, or a delta itself): it is then read from the
    /// repository, and fails there if it cannot be.
    pub parked_by: Option<u32>,
}

/// Items of one pack read with one ranged read.
#[derive(Debug)]
pub struct Run {
    /// Position of the pack in [`Index::packs`].
    pub pack: u32,
    pub start: u64,
    pub len: u64,
    pub items: Vec<Item>,
}

/// Runs in waves: every run of a wave may go at once; a wave starts when the one before ended.
#[derive(Debug, Default)]
pub struct Plan {
    pub waves: Vec<Vec<Run>>,
}

impl Plan {
    /// Every run, wave by wave.
    pub fn runs(&self) -> impl Iterator<Item = &Run> {
        self.waves.iter().flatten()
    }
}

/// How a plan reads: chunks within `gap` bytes of each other in a pack are read together, in runs
/// of at most `max_run` bytes that decode to at most `max_decoded` bytes (a delta counts twice,
/// its base being decoded too); with `park`, delta bases are parked in the target (a remote store,
/// where reading a base again costs a download), else deltas read their base from the
/// repository (a local one, where that is a page-cache read, cheaper than writing the base
/// twice).
#[derive(Debug, Clone, Copy)]
pub struct Reads {
    pub gap: u64,
    pub max_run: u64,
    /// A run is one worker's work: a few hundred KiB of sealed deltas can decode to a GiB, which
    /// would leave the other workers idle.
    pub max_decoded: u64,
    pub park: bool,
}

/// Plans the reads `(chunk, file, offset)` of a stretch of files, every chunk known to `index`.
pub fn build(index: &Index, reads: impl IntoIterator<Item = (Id, u32, u64)>, how: Reads) -> Plan {
    let mut items: HashMap<Id, Item> = HashMap::new();
    for (id, file, offset) in reads {
        let item = items.entry(id).or_insert_with(|| new_item(index, id));
        item.targets.push(Target { file, offset, counts: true });
    }
    // Park each delta's base at the delta's first position. A base that is itself a delta (a
    // damaged or hostile index) is not planned: decoding it would need a chain.
    let deltas: Vec<(Id, Id, Target)> = match how.park {
        true => items.values().filter_map(|item| Some((item.id, item.base?.id, item.targets[0]))).collect(),
        false => Vec::new(),
    };
    for (delta, base, at) in deltas {
        if index.get(&base).is_none() || index.deltas.contains_key(&base) {
            continue;
        }
        let base_item = items.entry(base).or_insert_with(|| new_item(index, base));
        base_item.targets.push(Target { counts: false, ..at });
        let pack = base_item.loc.pack;
        items.get_mut(&delta).and_then(|d| d.base.as_mut()).expect("planned above").parked_by = Some(pack);
    }

    let mut packs: BTreeMap<u32, Vec<Item>> = BTreeMap::new();
    for item in items.into_values() {
        packs.entry(item.loc.pack).or_default().push(item);
    }
    let (mut waves, cycle) = waves(&packs);
    if !cycle.is_empty() {
        unpark_within(&cycle, &mut packs);
        waves.push(cycle);
    }
    let mut plan = Plan { waves: Vec::with_capacity(waves.len()) };
    for wave in waves {
        let mut runs = Vec::new();
        for pack in wave {
            let mut items = packs.remove(&pack).expect("every pack is in one wave");
            items.sort_by_key(|item| item.loc.offset);
            runs.extend(runs_of(pack, items, how));
        }
        plan.waves.push(runs);
    }
    plan
}

fn new_item(index: &Index, id: Id) -> Item {
    let (_, loc) = index.get(&id).expect("planned chunks are in the index");
    let base = index.deltas.get(&id).map(|&base| Base { id: base, parked_by: None });
    Item { id, loc, base, targets: Vec::new() }
}

/// Packs in waves: a pack comes after every other pack that parks a base its deltas need. Packs
/// that need each other (a cycle) are returned apart, to go together in a last wave.
fn waves(packs: &BTreeMap<u32, Vec<Item>>) -> (Vec<Vec<u32>>, Vec<u32>) {
    let needs: BTreeMap<u32, HashSet<u32>> = packs
        .iter()
        .map(|(&pack, items)| (pack, items.iter().filter_map(|item| item.base?.parked_by).collect()))
        .collect();
    crate::repo::waves::waves(&needs)
}

/// Within one wave nothing orders two packs, so a base parked by another pack of it could land
/// after its delta was written, over it: such deltas read their base from the repository instead.
/// (Bases parked by the delta's own pack are safe: a pack's deltas wait for all of its runs.)
fn unpark_within(wave: &[u32], packs: &mut BTreeMap<u32, Vec<Item>>) {
    let mut unparked: Vec<(u32, Id, Target)> = Vec::new();
    for pack in wave {
        for item in packs.get_mut(pack).into_iter().flatten() {
            if let Some(base) = &mut item.base
                && let Some(by) = base.parked_by
                && by != *pack
                && wave.contains(&by)
            {
                base.parked_by = None;
                unparked.push((by, base.id, Target { counts: false, ..item.targets[0] }));
            }
        }
    }
    for (by, base, at) in unparked {
        let items = packs.get_mut(&by).expect("a parking pack is planned");
        if let Some(item) = items.iter_mut().find(|item| item.id == base) {
            item.targets.retain(|t| *t != at);
        }
        items.retain(|item| !item.targets.is_empty());
    }
    packs.retain(|_, items| !items.is_empty());
}

/// A pack's items (sorted by offset) as ranged reads.
fn runs_of(pack: u32, items: Vec<Item>, how: Reads) -> Vec<Run> {
    let decoded = |item: &Item| item.loc.raw_len as u64 * if item.base.is_some() { 2 } else { 1 };
    let mut runs: Vec<(Run, u64)> = Vec::new();
    for item in items {
        let (offset, end) = (item.loc.offset as u64, item.loc.offset as u64 + item.loc.sealed_len as u64);
        let work = decoded(&item);
        if let Some((run, run_work)) = runs.last_mut()
            && offset <= run.start + run.len + how.gap
            && end - run.start <= how.max_run
            && *run_work + work <= how.max_decoded
        {
            run.len = run.len.max(end - run.start);
            run.items.push(item);
            *run_work += work;
            continue;
        }
        runs.push((Run { pack, start: offset, len: end - offset, items: vec![item] }, work));
    }
    runs.into_iter().map(|(run, _)| run).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::index::PackInfo;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    fn parked(gap: u64, max_run: u64) -> Reads {
        Reads { gap, max_run, max_decoded: u64::MAX, park: true }
    }

    /// An index of `packs`, each a list of (chunk, sealed length, delta base).
    fn index(packs: &[&[(u8, u32, Option<u8>)]]) -> Index {
        let mut index = Index::default();
        for (p, chunks) in packs.iter().enumerate() {
            index.packs.push(PackInfo { id: id(200 + p as u8), size: 1 << 30, index_file: id(0) });
            let mut offset = 0;
            for &(c, len, base) in chunks.iter() {
                let loc = ChunkLocation { pack: p as u32, offset, sealed_len: len, raw_len: 100 };
                index.chunks.insert(id(c), loc);
                if let Some(b) = base {
                    index.deltas.insert(id(c), id(b));
                }
                offset += len;
            }
        }
        index
    }

    /// Each run as (pack, start, length, its chunks' first bytes), wave by wave.
    type Summary = Vec<Vec<(u32, u64, u64, Vec<u8>)>>;

    fn summary(plan: &Plan) -> Summary {
        plan.waves
            .iter()
            .map(|w| w.iter().map(|r| (r.pack, r.start, r.len, r.items.iter().map(|i| i.id.0[0]).collect())).collect())
            .collect()
    }

    #[test]
    fn bases_are_parked_at_their_deltas_and_their_packs_come_first() {
        // Pack 0: the full backup (1, 2, 3); pack 1: the incremental, 4 new and 5 a delta of 2.
        let index = index(&[&[(1, 10, None), (2, 10, None), (3, 10, None)], &[(4, 10, None), (5, 10, Some(2))]]);
        let plan = build(&index, [(id(1), 0, 0), (id(5), 0, 100), (id(3), 1, 0), (id(4), 1, 100)], parked(0, 1 << 20));
        assert_eq!(summary(&plan), vec![vec![(0, 0, 30, vec![1, 2, 3])], vec![(1, 0, 20, vec![4, 5])]]);
        let item = |n: u8| plan.runs().flat_map(|r| &r.items).find(|i| i.id == id(n)).unwrap();
        assert_eq!(item(2).targets, vec![Target { file: 0, offset: 100, counts: false }]);
        assert_eq!(item(5).base, Some(Base { id: id(2), parked_by: Some(0) }));
        assert_eq!(item(5).targets, vec![Target { file: 0, offset: 100, counts: true }]);

        let reads = [(id(1), 0, 0), (id(5), 0, 100), (id(3), 1, 0), (id(4), 1, 100)];
        let unparked = build(&index, reads, Reads { park: false, ..parked(0, 1 << 20) });
        assert_eq!(
            summary(&unparked),
            vec![vec![(0, 0, 10, vec![1]), (0, 20, 10, vec![3]), (1, 0, 20, vec![4, 5])]],
            "without parking, one wave and the base is not read"
        );
    }

    #[test]
    fn a_chunk_used_twice_is_read_once_and_written_twice() {
        let index = index(&[&[(1, 10, None), (2, 10, Some(1))]]);
        let plan = build(&index, [(id(2), 0, 0), (id(2), 3, 50)], parked(0, 1 << 20));
        assert_eq!(summary(&plan), vec![vec![(0, 0, 20, vec![1, 2])]]);
        let runs: Vec<&Run> = plan.runs().collect();
        assert_eq!(runs[0].items[1].targets.len(), 2);
        assert_eq!(runs[0].items[0].targets, vec![Target { file: 0, offset: 0, counts: false }]);
    }

    #[test]
    fn gaps_and_the_run_limit_split_reads() {
        let index = index(&[&[(1, 10, None), (2, 10, None), (3, 10, None), (4, 10, None), (5, 10, None)]]);
        let reads = [(id(1), 0, 0), (id(3), 0, 100), (id(4), 0, 200), (id(5), 0, 300)];
        assert_eq!(
            summary(&build(&index, reads, parked(0, 1 << 20))),
            vec![vec![(0, 0, 10, vec![1]), (0, 20, 30, vec![3, 4, 5])]],
            "an unneeded chunk between two needed ones ends a run when no gap is allowed"
        );
        assert_eq!(summary(&build(&index, reads, parked(10, 1 << 20))), vec![vec![(0, 0, 50, vec![1, 3, 4, 5])]]);
        assert_eq!(
            summary(&build(&index, reads, parked(10, 20))),
            vec![vec![(0, 0, 10, vec![1]), (0, 20, 20, vec![3, 4]), (0, 40, 10, vec![5])]]
        );
    }

    #[test]
    fn a_run_of_deltas_is_split_by_what_it_decodes_to() {
        // Five deltas of 100 bytes each (their bases in pack 0 decoded too): 200 bytes of work
        // each, in 10 sealed bytes.
        let full: Vec<(u8, u32, Option<u8>)> = (1..=5).map(|n| (n, 10, None)).collect();
        let incremental: Vec<(u8, u32, Option<u8>)> = (1..=5).map(|n| (10 + n, 10, Some(n))).collect();
        let index = index(&[&full, &incremental]);
        let reads: Vec<(Id, u32, u64)> = (1..=5).map(|n| (id(10 + n), 0, n as u64 * 100)).collect();
        let how = Reads { gap: 0, max_run: 1 << 20, max_decoded: 400, park: false };
        assert_eq!(
            summary(&build(&index, reads, how)),
            vec![vec![(1, 0, 20, vec![11, 12]), (1, 20, 20, vec![13, 14]), (1, 40, 10, vec![15])]]
        );
    }

    #[test]
    fn packs_needing_each_other_go_in_a_last_wave_and_chains_are_not_planned() {
        // Pack 0 holds 1 and a delta of 3; pack 1 holds 3 and a delta of 1: a cycle. Pack 2 holds
        // a delta of 6, which the index calls a delta itself.
        let index = index(&[
            &[(1, 10, None), (2, 10, Some(3))],
            &[(3, 10, None), (4, 10, Some(1))],
            &[(5, 10, Some(6)), (6, 10, Some(1))],
            &[(7, 10, None)],
        ]);
        let plan =
            build(&index, [(id(2), 0, 0), (id(4), 0, 100), (id(5), 0, 200), (id(7), 0, 300)], parked(0, 1 << 20));
        assert_eq!(
            summary(&plan),
            vec![vec![(2, 0, 10, vec![5]), (3, 0, 10, vec![7])], vec![(0, 10, 10, vec![2]), (1, 10, 10, vec![4])]],
            "bases 1 and 3 are not parked within the cycle, and 6 (a delta) never"
        );
        let item = |n: u8| plan.runs().flat_map(|r| &r.items).find(|i| i.id == id(n)).unwrap();
        assert_eq!(item(2).base, Some(Base { id: id(3), parked_by: None }));
        assert_eq!(item(4).base, Some(Base { id: id(1), parked_by: None }));
        assert_eq!(item(5).base, Some(Base { id: id(6), parked_by: None }));
    }
}

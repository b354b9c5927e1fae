//! Orders packs so that a pack holding delta bases is read before the packs holding their deltas,
//! which lets a reader that reads each pack once (restore, `check --read-data`) keep the bases it
//! will need aside instead of fetching them again.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Packs in waves: each pack comes after every other pack it `needs`; the packs of a wave need
/// none of each other. Packs that need each other (a cycle, which no writer produces) are
/// returned apart, sorted, for the caller to handle.
pub fn waves(needs: &BTreeMap<u32, HashSet<u32>>) -> (Vec<Vec<u32>>, Vec<u32>) {
    let mut left: HashMap<u32, HashSet<u32>> = HashMap::new();
    let mut needed_by: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pack, others) in needs {
        let others: HashSet<u32> = others.iter().copied().filter(|&o| o != pack && needs.contains_key(&o)).collect();
        for &other in &others {
            needed_by.entry(other).or_default().push(pack);
        }
        left.insert(pack, others);
    }
    let mut waves = Vec::new();
    let mut ready: Vec<u32> = left.iter().filter(|(_, n)| n.is_empty()).map(|(&p, _)| p).collect();
    while !ready.is_empty() {
        ready.sort_unstable();
        for pack in &ready {
            left.remove(pack);
        }
        let mut next = Vec::new();
        for pack in &ready {
            for dependent in needed_by.get(pack).into_iter().flatten() {
                if let Some(waiting) = left.get_mut(dependent)
                    && waiting.remove(pack)
                    && waiting.is_empty()
                {
                    next.push(*dependent);
                }
            }
        }
        waves.push(std::mem::replace(&mut ready, next));
    }
    let mut cycle: Vec<u32> = left.into_keys().collect();
    cycle.sort_unstable();
    (waves, cycle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_follow_what_they_need_and_cycles_are_set_apart() {
        let needs: BTreeMap<u32, HashSet<u32>> = [
            (0, HashSet::new()),
            (1, HashSet::from([0])),
            (2, HashSet::from([1, 0, 2])),
            (3, HashSet::from([9])),
            (4, HashSet::from([5])),
            (5, HashSet::from([4])),
        ]
        .into();
        assert_eq!(waves(&needs), (vec![vec![0, 3], vec![1], vec![2]], vec![4, 5]));
    }
}

//! Read-ahead for single-chunk reads from a remote store. A backup that deltas changed blocks
//! against their previous versions, and a restore that reads trees and delta bases, ask for one
//! small chunk at a time, and consecutive requests usually fall in the same pack region (a
//! backup writes a file's chunks in order). On S3 each would be a request costing a round trip
//! and a fee; instead the first read fetches a window forward from it, and the next reads are
//! served from the windows kept here (a handful, so memory stays bounded).

use std::collections::VecDeque;
use std::sync::Mutex;

use super::crypto::Id;

/// Bytes fetched forward from a chunk a remote read asks for.
pub const WINDOW: u64 = 1 << 20;
/// Windows kept, most recent first: a few per reader thread.
const KEPT: usize = 16;

struct Window {
    pack: Id,
    start: u64,
    data: Vec<u8>,
}

#[derive(Default)]
pub struct ReadAhead {
    windows: Mutex<VecDeque<Window>>,
}

impl ReadAhead {
    /// `len` bytes at `offset` of `pack`, if a kept window holds them.
    pub fn get(&self, pack: Id, offset: u64, len: u64) -> Option<Vec<u8>> {
        let windows = self.windows.lock().expect("poisoned");
        windows.iter().find_map(|w| {
            let end = w.start + w.data.len() as u64;
            (w.pack == pack && offset >= w.start && offset + len <= end)
                .then(|| w.data[(offset - w.start) as usize..(offset - w.start + len) as usize].to_vec())
        })
    }

    /// Keeps a window read from `pack` at `start`, dropping the oldest beyond the limit.
    pub fn keep(&self, pack: Id, start: u64, data: Vec<u8>) {
        let mut windows = self.windows.lock().expect("poisoned");
        windows.push_front(Window { pack, start, data });
        windows.truncate(KEPT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_serve_ranges_they_cover_only() {
        let cache = ReadAhead::default();
        let pack = Id([1; 32]);
        cache.keep(pack, 100, (0..=255u8).collect());
        assert_eq!(cache.get(pack, 110, 3), Some(vec![10, 11, 12]));
        assert_eq!(cache.get(pack, 350, 6), Some(vec![250, 251, 252, 253, 254, 255]));
        assert_eq!(cache.get(pack, 350, 7), None, "past the window's end");
        assert_eq!(cache.get(pack, 99, 2), None, "before its start");
        assert_eq!(cache.get(Id([2; 32]), 110, 3), None, "another pack");
    }
}

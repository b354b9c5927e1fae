//! Splitting a byte stream into chunks. Two modes:
//! - content-defined (FastCDC 2020 with a keyed gear table) for generic streams, where inserts
//!   shift data and only content-anchored boundaries keep unchanged regions deduplicating;
//! - fixed, aligned blocks for PostgreSQL relation files, whose 8 KiB pages never shift, so
//!   aligned blocks dedup exactly and cost no boundary search.

use fastcdc::v2020::{Normalization, StreamCDC};
use serde::{Deserialize, Serialize};
use std::io::{self, Read};

/// Content-defined chunking parameters, stored in the repository config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunking {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for Chunking {
    /// 512 KiB / 1 MiB / 8 MiB: large enough that the index stays small (a TiB is ~10^6
    /// chunks), small enough that one changed region costs about a MiB.
    fn default() -> Self {
        Chunking { min_size: 512 << 10, avg_size: 1 << 20, max_size: 8 << 20 }
    }
}

/// How a particular stream is cut.
#[derive(Debug, Clone, Copy)]
pub enum Chunker {
    Cdc { params: Chunking, seed: u64 },
    Fixed { block_size: usize },
}

impl Chunker {
    /// Iterates over the chunks of `reader`, each a fresh buffer.
    pub fn chunks<'r, R: Read + 'r>(self, reader: R) -> Box<dyn Iterator<Item = io::Result<Vec<u8>>> + 'r> {
        match self {
            Chunker::Cdc { params, seed } => Box::new(
                StreamCDC::with_level_and_seed(
                    reader,
                    params.min_size as usize,
                    params.avg_size as usize,
                    params.max_size as usize,
                    Normalization::Level1,
                    seed,
                )
                .map(|chunk| {
                    chunk.map(|c| c.data).map_err(|e| match e {
                        fastcdc::v2020::Error::IoError(io) => io,
                        other => io::Error::other(other.to_string()),
                    })
                }),
            ),
            Chunker::Fixed { block_size } => Box::new(FixedBlocks { reader, block_size, done: false }),
        }
    }

    /// Cuts an in-memory buffer; returns the chunk lengths. Used where the data is already in
    /// memory (the tree writer), with the same boundaries a stream would get.
    pub fn cut_points(self, data: &[u8]) -> Vec<usize> {
        match self {
            Chunker::Cdc { params, seed } => fastcdc::v2020::FastCDC::with_level_and_seed(
                data,
                params.min_size as usize,
                params.avg_size as usize,
                params.max_size as usize,
                Normalization::Level1,
                seed,
            )
            .map(|c| c.length)
            .collect(),
            Chunker::Fixed { block_size } => data.chunks(block_size).map(|c| c.len()).collect(),
        }
    }
}

struct FixedBlocks<R> {
    reader: R,
    block_size: usize,
    done: bool,
}

impl<R: Read> Iterator for FixedBlocks<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut block = vec![0u8; self.block_size];
        let mut filled = 0;
        while filled < self.block_size {
            match self.reader.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        if filled < self.block_size {
            self.done = true;
            if filled == 0 {
                return None;
            }
            block.truncate(filled);
        }
        Some(Ok(block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pseudo_random;

    #[test]
    fn fixed_blocks_are_aligned_and_cover_the_stream() {
        let data = pseudo_random(8192 * 3 + 100, 1);
        let chunks: Vec<_> =
            Chunker::Fixed { block_size: 8192 }.chunks(io::Cursor::new(data.clone())).map(|c| c.unwrap()).collect();
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![8192, 8192, 8192, 100]);
        assert_eq!(chunks.concat(), data);
        assert_eq!(Chunker::Fixed { block_size: 8192 }.chunks(io::empty()).count(), 0);
    }

    #[test]
    fn cdc_boundaries_survive_an_insert() {
        let chunker = Chunker::Cdc { params: Chunking::default(), seed: 42 };
        let data = pseudo_random(20 << 20, 7);
        let mut shifted = b"inserted prefix".to_vec();
        shifted.extend_from_slice(&data);
        let a: Vec<_> = chunker.chunks(io::Cursor::new(data.clone())).map(|c| c.unwrap()).collect();
        let b: Vec<_> = chunker.chunks(io::Cursor::new(shifted)).map(|c| c.unwrap()).collect();
        assert_eq!(a.concat(), data);
        let shared = a.iter().filter(|c| b.contains(c)).count();
        assert!(shared + 2 >= a.len(), "all but the first chunk dedup after an insert: {shared}/{}", a.len());
        assert_eq!(chunker.cut_points(&data), a.iter().map(Vec::len).collect::<Vec<_>>());
    }
}

//! The repository config: format version, repository id and the defaults every backup uses.

use serde::{Deserialize, Serialize};

use super::chunker::Chunking;

pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;
pub const DEFAULT_PACK_SIZE: u64 = 32 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: u8,
    /// Random 32-byte id, hex: names the repository in messages, reports and locks.
    pub id: String,
    pub created: chrono::DateTime<chrono::Utc>,
    /// Content-defined chunking for generic streams.
    pub chunking: Chunking,
    /// zstd level used unless a backup asks for another.
    pub compression_level: i32,
    /// Packs are closed once they reach this many bytes.
    pub pack_size: u64,
}

impl Config {
    /// The config in the authenticated JSON `json`, refused if a value is outside what drctl
    /// writes: the chunker would assert (or, built without assertions, cut chunks larger than a
    /// restore accepts), and a pack size or level out of range would misbehave later.
    pub fn decode(json: &[u8]) -> Result<Config, super::Error> {
        let corrupt = |reason: String| super::Error::corrupt("config", reason);
        let config: Config = serde_json::from_slice(json).map_err(|e| corrupt(format!("it does not parse: {e}")))?;
        config.check().map_err(corrupt)?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let Chunking { min_size, avg_size, max_size } = self.chunking;
        let (min, avg, max) = (min_size as usize, avg_size as usize, max_size as usize);
        let in_bounds = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max);
        if !in_bounds || min > avg || avg > max || [min, avg, max].iter().any(|n| n % 2 != 0) {
            return Err(format!("its chunk sizes {min_size}/{avg_size}/{max_size} are outside what drctl writes"));
        }
        if !zstd::compression_level_range().contains(&self.compression_level) {
            return Err(format!("its compression level {} is not a zstd level", self.compression_level));
        }
        if !(MIN_PACK_SIZE..=MAX_PACK_SIZE).contains(&self.pack_size) {
            return Err(format!("its pack size {} is outside 1 MiB to 1 GiB", self.pack_size));
        }
        Ok(())
    }
}

/// The pack sizes `drctl init --pack-size-mib` accepts.
const MIN_PACK_SIZE: u64 = 1 << 20;
const MAX_PACK_SIZE: u64 = 1 << 30;

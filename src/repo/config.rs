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
    /// The config in the authenticated JSON `json`.
    pub fn decode(json: &[u8]) -> Result<Config, super::Error> {
        serde_json::from_slice(json).map_err(|e| super::Error::corrupt("config", format!("it does not parse: {e}")))
    }
}

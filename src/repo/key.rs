//! Key slots: the master key wrapped once per way of opening the repository. A passphrase slot
//! derives a key-encryption key with argon2id (parameters stored in the slot); adding or removing
//! a slot changes a passphrase without touching any data. KMS slots come with the S3 work.

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

use super::Error;
use super::crypto::{self, Id, MasterKey};
use super::format::{self, ObjectType};
use crate::store::Store;

/// argon2id cost for new slots: 64 MiB and 3 passes, about 0.1-0.2 s on one core. Commands open
/// the repository once each, so this is paid once per command.
const DEFAULT_MEMORY_KIB: u32 = 64 * 1024;
const DEFAULT_ITERATIONS: u32 = 3;
const DEFAULT_PARALLELISM: u32 = 1;
/// A slot asking for more is refused rather than allowed to exhaust the machine's memory.
const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySlot {
    pub version: u8,
    pub kind: SlotKind,
    pub created: chrono::DateTime<chrono::Utc>,
    pub hostname: String,
    pub kdf: Kdf,
    /// The 64-byte master key sealed with the derived key (12-byte nonce || ciphertext || tag), hex.
    pub wrapped_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    Passphrase,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kdf {
    pub algorithm: String,
    pub argon2_version: u32,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// 16 random bytes, hex.
    pub salt: String,
}

impl Kdf {
    fn new_default() -> Kdf {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).expect("the OS random source works");
        Kdf {
            algorithm: "argon2id".into(),
            argon2_version: 0x13,
            memory_kib: DEFAULT_MEMORY_KIB,
            iterations: DEFAULT_ITERATIONS,
            parallelism: DEFAULT_PARALLELISM,
            salt: hex::encode(salt),
        }
    }

    fn derive(&self, passphrase: &[u8], object: &str) -> Result<[u8; 32], Error> {
        if self.algorithm != "argon2id" || self.argon2_version != 0x13 {
            return Err(Error::corrupt(object, format!("unknown KDF {} v{}", self.algorithm, self.argon2_version)));
        }
        let salt = hex::decode(&self.salt).map_err(|_| Error::corrupt(object, "its salt is not hex"))?;
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::corrupt(object, format!("bad argon2 parameters: {e}")))?;
        let mut kek = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase, &salt, &mut kek)
            .map_err(|e| Error::corrupt(object, format!("argon2 failed: {e}")))?;
        Ok(kek)
    }
}

fn slot_ad() -> Vec<u8> {
    format::associated_data(ObjectType::KeySlot, b"")
}

/// Wraps `master` under `passphrase` and stores the new slot; returns its id.
pub fn add_passphrase_slot(store: &dyn Store, master: &MasterKey, passphrase: &[u8]) -> Result<Id, Error> {
    let kdf = Kdf::new_default();
    let kek = kdf.derive(passphrase, "new key slot")?;
    let slot = KeySlot {
        version: format::VERSION,
        kind: SlotKind::Passphrase,
        created: chrono::Utc::now(),
        hostname: crate::repo::hostname(),
        kdf,
        wrapped_key: hex::encode(crypto::seal_with(&kek, &slot_ad(), &master.to_bytes())),
    };
    let bytes = serde_json::to_vec_pretty(&slot).expect("key slots serialize");
    let id = Id::of_stored(&bytes);
    store.put(&format!("{}{}", format::KEYS_DIR, id), &bytes)?;
    Ok(id)
}

/// Tries every slot with `passphrase`; returns the master key from the first that opens.
pub fn unlock(store: &dyn Store, passphrase: &[u8]) -> Result<MasterKey, Error> {
    let slots = store.list(format::KEYS_DIR)?;
    if slots.is_empty() {
        return Err(Error::corrupt("keys/", "the repository has no key slots"));
    }
    for info in slots {
        let bytes = store.get(&info.key)?;
        // A slot this build cannot use (damaged, newer, another kind) must not lock out the others.
        match try_slot(&bytes, passphrase, &format!("key slot {}", info.key)) {
            Ok(Some(key)) => return Ok(key),
            Ok(None) => {}
            Err(e) => tracing::warn!(slot = %info.key, error = %e, "skipping a key slot"),
        }
    }
    Err(Error::WrongPassword { location: store.location().to_string() })
}

/// The master key if `passphrase` opens this slot, `None` if it does not.
fn try_slot(bytes: &[u8], passphrase: &[u8], object: &str) -> Result<Option<MasterKey>, Error> {
    let slot: KeySlot = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(object, format!("it is not a valid key slot: {e}")))?;
    if slot.version > format::VERSION {
        return Err(Error::UnsupportedVersion { found: slot.version, supported: format::VERSION });
    }
    if slot.kdf.memory_kib > MAX_MEMORY_KIB {
        return Err(Error::corrupt(object, format!("it asks argon2 for {} KiB of memory", slot.kdf.memory_kib)));
    }
    let kek = slot.kdf.derive(passphrase, object)?;
    let wrapped = hex::decode(&slot.wrapped_key).map_err(|_| Error::corrupt(object, "wrapped key is not hex"))?;
    let Ok(bytes) = crypto::open_with(&kek, &slot_ad(), &wrapped) else {
        return Ok(None);
    };
    let bytes: [u8; MasterKey::LEN] =
        bytes.try_into().map_err(|_| Error::corrupt(object, "wrapped key has the wrong length"))?;
    Ok(Some(MasterKey::from_bytes(&bytes)))
}

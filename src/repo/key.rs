//! Key slots: the master key wrapped once per way of opening the repository, so a passphrase can
//! change (add a slot, remove the old) without touching any data. Two kinds so far:
//! - passphrase: the key-encryption key comes from argon2id (parameters stored in the slot), which
//!   costs ~0.1 s and 64 MiB on purpose;
//! - key file: 32 random bytes in a local file (mode 0600); the key-encryption key is a keyed
//!   BLAKE3 of it, so opening costs microseconds. For `wal-push`/`wal-fetch`, which PostgreSQL runs
//!   once per WAL segment and cannot pay an argon2 run each time.
//!
//! - KMS: the master key encrypted by AWS KMS under a key the operator names; whoever may
//!   `kms:Decrypt` with it opens the repository, with no secret on disk (IRSA in Kubernetes).

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
/// Bounds on a slot's argon2 parameters, checked before any work: a planted slot asking for more
/// (`iterations: 4294967295`) would otherwise hang or exhaust every command that unlocks. Far
/// above what drctl writes, so a slot it wrote is never refused.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_ITERATIONS: u32 = 16;
const MAX_PARALLELISM: u32 = 8;
/// Memory × passes, the cost that sets the run time: 1 GiB × 4 passes, about 20× a default slot
/// (a few seconds).
const MAX_COST_KIB_PASSES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySlot {
    pub version: u8,
    pub kind: SlotKind,
    pub created: chrono::DateTime<chrono::Utc>,
    pub hostname: String,
    /// Present for passphrase slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<Kdf>,
    /// Present for KMS slots: the ARN of the key that wrapped the master key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// The 64-byte master key sealed with the derived key (12-byte nonce || ciphertext || tag),
    /// or for KMS slots the KMS ciphertext; hex.
    pub wrapped_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    Passphrase,
    #[serde(rename = "key-file")]
    KeyFile,
    Kms,
}

/// What opens a repository: a passphrase, the content of a key file, or a KMS key reached through
/// the given service (named for a new slot; any KMS slot the service can use opens).
pub enum Secret {
    Passphrase(Vec<u8>),
    KeyFile([u8; 32]),
    Kms(Option<String>, &'static dyn Kms),
}

/// Why the KMS service did not wrap or unwrap a key: its own error, which names the key and the fix.
pub type KmsFailure = Box<dyn std::error::Error + Send + Sync>;

/// The two calls a KMS slot needs, handed in by the caller so the repository format depends on no
/// cloud SDK (drctl's is in `ops::unlock`; a test can give its own).
pub trait Kms: Send + Sync {
    /// Encrypts `plaintext` under `key_id` (an ARN, key id or alias); returns the ciphertext and
    /// the key's ARN.
    fn encrypt(&self, key_id: &str, plaintext: &[u8]) -> Result<(Vec<u8>, String), KmsFailure>;
    /// Decrypts a ciphertext made by `encrypt` under `key_id`.
    fn decrypt(&self, key_id: &str, ciphertext: &[u8]) -> Result<Vec<u8>, KmsFailure>;
}

const KEY_FILE_PREFIX: &str = "drctl-key-file-v1:";

impl Secret {
    /// An empty passphrase is refused wherever a secret is used: it is an unset variable or an
    /// unmounted Secret far more often than a choice, and it would protect nothing.
    fn refuse_empty(&self) -> Result<(), Error> {
        match self {
            Secret::Passphrase(p) if p.is_empty() => Err(Error::EmptyPassphrase),
            _ => Ok(()),
        }
    }

    fn kind(&self) -> SlotKind {
        match self {
            Secret::Passphrase(_) => SlotKind::Passphrase,
            Secret::KeyFile(_) => SlotKind::KeyFile,
            Secret::Kms(..) => SlotKind::Kms,
        }
    }

    /// Reads a key file written by [`Secret::create_key_file`].
    pub fn read_key_file(path: &std::path::Path) -> std::io::Result<Secret> {
        let text = std::fs::read_to_string(path)?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a drctl key file");
        let hex_key = text.trim().strip_prefix(KEY_FILE_PREFIX).ok_or_else(bad)?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex_key, &mut key).map_err(|_| bad())?;
        Ok(Secret::KeyFile(key))
    }

    /// Creates a new key file (mode 0600; never overwrites one) holding 32 random bytes.
    pub fn create_key_file(path: &std::path::Path) -> std::io::Result<Secret> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source works");
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        writeln!(file, "{KEY_FILE_PREFIX}{}", hex::encode(key))?;
        file.sync_all()?;
        Ok(Secret::KeyFile(key))
    }
}

/// argon2's memory and passes for a new passphrase slot. Debug builds (the test suite's) take
/// argon2's least cost when DRCTL_TEST_CHEAP_KDF is set, as restic's tests lower theirs: the
/// suite runs thousands of commands, each of which would otherwise spend 64 MiB and a quarter of
/// a second of CPU opening its repository. Release builds never read it. Opening a slot always
/// uses the cost the slot records, so the code that runs is the same.
fn new_slot_cost() -> (u32, u32) {
    if cfg!(debug_assertions) && std::env::var_os("DRCTL_TEST_CHEAP_KDF").is_some() {
        return (1024, 1);
    }
    (DEFAULT_MEMORY_KIB, DEFAULT_ITERATIONS)
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
        let (memory_kib, iterations) = new_slot_cost();
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).expect("the OS random source works");
        Kdf {
            algorithm: "argon2id".into(),
            argon2_version: 0x13,
            memory_kib,
            iterations,
            parallelism: DEFAULT_PARALLELISM,
            salt: hex::encode(salt),
        }
    }

    fn derive(&self, passphrase: &[u8], object: &str) -> Result<[u8; 32], Error> {
        if self.algorithm != "argon2id" || self.argon2_version != 0x13 {
            return Err(Error::corrupt(object, format!("unknown KDF {} v{}", self.algorithm, self.argon2_version)));
        }
        self.check_bounds().map_err(|reason| Error::corrupt(object, reason))?;
        let salt = hex::decode(&self.salt).map_err(|_| Error::corrupt(object, "its salt is not hex"))?;
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::corrupt(object, format!("bad argon2 parameters: {e}")))?;
        let mut kek = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase, &salt, &mut kek)
            .map_err(|e| Error::corrupt(object, format!("argon2 failed: {e}")))?;
        Ok(kek)
    }

    /// Refuses parameters beyond the bounds above, naming the one out of bounds.
    pub(crate) fn check_bounds(&self) -> Result<(), String> {
        let cost = u64::from(self.memory_kib) * u64::from(self.iterations);
        if self.memory_kib > MAX_MEMORY_KIB {
            Err(format!("it asks argon2 for {} KiB of memory (at most {MAX_MEMORY_KIB})", self.memory_kib))
        } else if self.iterations == 0 || self.iterations > MAX_ITERATIONS {
            Err(format!("it asks argon2 for {} passes (1 to {MAX_ITERATIONS})", self.iterations))
        } else if self.parallelism == 0 || self.parallelism > MAX_PARALLELISM {
            Err(format!("it asks argon2 for {} lanes (1 to {MAX_PARALLELISM})", self.parallelism))
        } else if cost > MAX_COST_KIB_PASSES {
            Err(format!("it asks argon2 for {cost} KiB × passes (at most {MAX_COST_KIB_PASSES})"))
        } else {
            Ok(())
        }
    }
}

fn slot_ad() -> Vec<u8> {
    format::associated_data(ObjectType::KeySlot, b"")
}

/// The key-encryption key of a key-file slot.
fn key_file_kek(key: &[u8; 32]) -> [u8; 32] {
    *blake3::keyed_hash(key, b"drctl key file kek v1").as_bytes()
}

/// Wraps `master` under `secret` and stores the new slot; returns its id.
pub fn add_slot(store: &dyn Store, master: &MasterKey, secret: &Secret) -> Result<Id, Error> {
    secret.refuse_empty()?;
    let mut kdf = None;
    let mut kms_key_id = None;
    let wrapped = match secret {
        Secret::Passphrase(passphrase) => {
            let new = Kdf::new_default();
            let kek = new.derive(passphrase, "new key slot")?;
            kdf = Some(new);
            crypto::seal_with(&kek, &slot_ad(), &master.to_bytes())
        }
        Secret::KeyFile(key) => crypto::seal_with(&key_file_kek(key), &slot_ad(), &master.to_bytes()),
        Secret::Kms(key_id, kms) => {
            let key_id =
                key_id.as_deref().ok_or_else(|| Error::InvalidRequest("name the KMS key of the new slot".into()))?;
            let (ciphertext, arn) = kms.encrypt(key_id, &master.to_bytes()).map_err(Error::Kms)?;
            // Proven now, not at the first restore: the key must also decrypt what it wrapped.
            if kms.decrypt(&arn, &ciphertext).map_err(Error::Kms)? != master.to_bytes() {
                return Err(Error::InvalidRequest(format!("KMS key {arn} did not give back the key it wrapped")));
            }
            kms_key_id = Some(arn);
            ciphertext
        }
    };
    let slot = KeySlot {
        version: format::VERSION,
        kind: secret.kind(),
        created: chrono::Utc::now(),
        hostname: crate::repo::hostname(),
        kdf,
        kms_key_id,
        wrapped_key: hex::encode(wrapped),
    };
    let bytes = serde_json::to_vec_pretty(&slot).expect("key slots serialize");
    let id = Id::of_stored(&bytes);
    store.put(&format!("{}{}", format::KEYS_DIR, id), &bytes)?;
    Ok(id)
}

/// Whether the repository has a KMS slot (which then opens it when no other secret is given).
pub fn has_kms_slot(store: &dyn Store) -> Result<bool, Error> {
    Ok(list(store)?.iter().any(|(_, slot)| slot.kind == SlotKind::Kms))
}

/// Every key slot with its id.
pub fn list(store: &dyn Store) -> Result<Vec<(Id, KeySlot)>, Error> {
    let mut slots = Vec::new();
    for info in store.list(format::KEYS_DIR)? {
        let Some(id) = format::id_of_key(&info.key) else { continue };
        let bytes = store.get(&info.key)?;
        match serde_json::from_slice::<KeySlot>(&bytes) {
            Ok(slot) => slots.push((id, slot)),
            Err(e) => tracing::warn!(slot = %info.key, error = %e, "skipping an unreadable key slot"),
        }
    }
    slots.sort_by_key(|(_, s)| s.created);
    Ok(slots)
}

/// Removes a key slot; refuses to remove the last one, which would lock everyone out for good.
pub fn remove(store: &dyn Store, id: Id) -> Result<(), Error> {
    let slots = list(store)?;
    if !slots.iter().any(|(s, _)| *s == id) {
        return Err(Error::InvalidRequest(format!("no key slot {id}")));
    }
    if slots.len() == 1 {
        return Err(Error::InvalidRequest("refusing to remove the repository's only key slot".into()));
    }
    store.delete(&format!("{}{id}", format::KEYS_DIR))?;
    Ok(())
}

/// The slots `secret` opens to `master`, oldest first.
pub fn slots_opened_by(store: &dyn Store, secret: &Secret, master: &MasterKey) -> Result<Vec<Id>, Error> {
    let mut opened = Vec::new();
    for (id, _) in list(store)? {
        let bytes = store.get(&format!("{}{id}", format::KEYS_DIR))?;
        if let Ok(Some(key)) = try_slot(&bytes, secret, &format!("key slot {id}"))
            && key.to_bytes() == master.to_bytes()
        {
            opened.push(id);
        }
    }
    Ok(opened)
}

/// Proves that slot `id` opens with `secret` and yields `master` (before an old slot is removed).
pub fn verify_slot(store: &dyn Store, id: Id, secret: &Secret, master: &MasterKey) -> Result<(), Error> {
    let object = format!("{}{id}", format::KEYS_DIR);
    let bytes = store.get(&object)?;
    match try_slot(&bytes, secret, &object)? {
        Some(key) if key.to_bytes() == master.to_bytes() => Ok(()),
        _ => Err(Error::InvalidRequest(format!("the new key slot {} does not open the repository", id.short()))),
    }
}

/// Tries every slot of the secret's kind; returns the master key and the id of the slot that
/// opened.
pub fn unlock(store: &dyn Store, secret: &Secret) -> Result<(MasterKey, Id), Error> {
    secret.refuse_empty()?;
    let slots = store.list(format::KEYS_DIR)?;
    if slots.is_empty() {
        return Err(Error::corrupt("keys/", "the repository has no key slots"));
    }
    let mut kms_failure = None;
    for info in slots {
        // A slot this user may not read (added by another user of a shared repository) must not
        // lock out the others either.
        let bytes = match store.get(&info.key) {
            Ok(bytes) => bytes,
            Err(e @ crate::store::Error::PermissionDenied { .. }) => {
                tracing::warn!(slot = %info.key, error = %e, "skipping a key slot");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // A slot this build cannot use (damaged, newer, another kind) must not lock out the others.
        match try_slot(&bytes, secret, &format!("key slot {}", info.key)) {
            Ok(Some(key)) => return Ok((key, format::id_of_key(&info.key).unwrap_or(Id([0; 32])))),
            Ok(None) => {}
            // KMS said why it would not unwrap: that, not "wrong password", is what to fix.
            Err(Error::Kms(e)) => kms_failure = Some(Error::Kms(e)),
            Err(e) => tracing::warn!(slot = %info.key, error = %e, "skipping a key slot"),
        }
    }
    match (kms_failure, secret) {
        (Some(e), _) => Err(e),
        (None, Secret::Kms(..)) => Err(Error::NoPassword),
        (None, _) => Err(Error::WrongPassword { location: store.location().to_string() }),
    }
}

/// The master key if `passphrase` opens this slot, `None` if it does not.
pub(crate) fn try_slot(bytes: &[u8], secret: &Secret, object: &str) -> Result<Option<MasterKey>, Error> {
    let slot: KeySlot = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(object, format!("it is not a valid key slot: {e}")))?;
    if slot.version > format::VERSION {
        return Err(Error::UnsupportedVersion { found: slot.version, supported: format::VERSION });
    }
    let kek = match (secret, &slot.kdf) {
        _ if slot.kind != secret.kind() => return Ok(None),
        // Any KMS slot the credentials can use opens (the key named for a new slot may be an alias).
        (Secret::Kms(_, kms), _) => {
            let key_id =
                slot.kms_key_id.as_deref().ok_or_else(|| Error::corrupt(object, "a KMS slot without a key"))?;
            let ciphertext =
                hex::decode(&slot.wrapped_key).map_err(|_| Error::corrupt(object, "wrapped key is not hex"))?;
            let bytes: [u8; MasterKey::LEN] = kms
                .decrypt(key_id, &ciphertext)
                .map_err(Error::Kms)?
                .try_into()
                .map_err(|_| Error::corrupt(object, "KMS gave back a key of the wrong length"))?;
            return Ok(Some(MasterKey::from_bytes(&bytes)));
        }
        (Secret::Passphrase(passphrase), Some(kdf)) => kdf.derive(passphrase, object)?,
        (Secret::Passphrase(_), None) => return Err(Error::corrupt(object, "a passphrase slot without KDF")),
        (Secret::KeyFile(key), _) => key_file_kek(key),
    };
    let wrapped = hex::decode(&slot.wrapped_key).map_err(|_| Error::corrupt(object, "wrapped key is not hex"))?;
    let Ok(bytes) = crypto::open_with(&kek, &slot_ad(), &wrapped) else {
        return Ok(None);
    };
    let bytes: [u8; MasterKey::LEN] =
        bytes.try_into().map_err(|_| Error::corrupt(object, "wrapped key has the wrong length"))?;
    Ok(Some(MasterKey::from_bytes(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    /// Key files exist so that commands run once per WAL segment open the repository without an
    /// argon2 run: a key-file slot records no KDF, and opening one never consults a KDF, even a
    /// planted one that could not run.
    #[test]
    fn key_file_slots_open_without_a_kdf() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let master = MasterKey::generate();
        let secret = Secret::KeyFile([7; 32]);
        let id = add_slot(&store, &master, &secret).unwrap();
        let key = format!("{}{}", format::KEYS_DIR, id);
        let mut slot: serde_json::Value = serde_json::from_slice(&store.get(&key).unwrap()).unwrap();
        assert!(slot.get("kdf").is_none(), "{slot}");

        let impossible = Kdf { memory_kib: u32::MAX, ..Kdf::new_default() };
        slot["kdf"] = serde_json::to_value(impossible).unwrap();
        let planted = serde_json::to_vec(&slot).unwrap();
        let opened = try_slot(&planted, &secret, "slot").unwrap().expect("the key file opens its slot");
        assert_eq!(opened.to_bytes(), master.to_bytes());
        assert!(try_slot(&planted, &Secret::KeyFile([8; 32]), "slot").unwrap().is_none(), "another key file does not");

        // Nor is a passphrase slot's KDF run for a key file: the slot is not the key file's.
        let mut passphrase_slot = slot;
        passphrase_slot["kind"] = serde_json::json!("passphrase");
        let planted = serde_json::to_vec(&passphrase_slot).unwrap();
        assert!(try_slot(&planted, &secret, "slot").unwrap().is_none());
    }
}

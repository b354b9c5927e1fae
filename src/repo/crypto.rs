//! Keys and authenticated encryption.
//!
//! The master key is 64 random bytes: a 32-byte encryption key and a separate 32-byte id key for
//! chunk ids (keyed BLAKE3 of the plaintext, so an id says nothing about the data to someone
//! without the key, yet equal data dedups).
//!
//! Every object is sealed with AES-256-GCM under a per-object subkey: a fresh random 24-byte nonce
//! N is drawn, the subkey is keyed-BLAKE3(enc key, "drctl subkey v1" || N[0..12]) and the GCM nonce
//! is N[12..24]. Random 96-bit GCM nonces under one key would cap a key at about 2^32 objects; with
//! 192 random bits split this way a repeat needs a 192-bit collision, so one master key can seal
//! about 2^80 objects before the chance of any repeat reaches 2^-32 (see docs/FORMAT.md).

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aead::{Nonce, Tag};
use std::fmt;

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const SUBKEY_CONTEXT: &[u8] = b"drctl subkey v1";

/// A 32-byte object id, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// The id of stored bytes: plain BLAKE3 of exactly what the store holds, so the name of an
    /// object checks its content without any key.
    pub fn of_stored(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    /// A fresh random id, for objects named before their content is known (packs).
    pub fn random() -> Id {
        let mut id = [0u8; 32];
        getrandom::fill(&mut id).expect("the OS random source works");
        Id(id)
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters, used in listings.
    pub fn short(self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn from_hex(s: &str) -> Option<Id> {
        let mut id = [0u8; 32];
        hex::decode_to_slice(s, &mut id).ok()?;
        Some(Id(id))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

/// A sealed object did not authenticate: wrong key, or the bytes or their context were changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthError;

/// The repository master key. Never stored in the clear: key slots hold it wrapped.
#[derive(Clone)]
pub struct MasterKey {
    enc: [u8; 32],
    id: [u8; 32],
}

impl MasterKey {
    pub const LEN: usize = 64;

    pub fn generate() -> MasterKey {
        let mut bytes = [0u8; Self::LEN];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        MasterKey::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8; Self::LEN]) -> MasterKey {
        let mut enc = [0u8; 32];
        let mut id = [0u8; 32];
        enc.copy_from_slice(&bytes[..32]);
        id.copy_from_slice(&bytes[32..]);
        MasterKey { enc, id }
    }

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut bytes = [0u8; Self::LEN];
        bytes[..32].copy_from_slice(&self.enc);
        bytes[32..].copy_from_slice(&self.id);
        bytes
    }

    /// The id of a chunk: keyed BLAKE3 of its plaintext.
    pub fn chunk_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id, plaintext).as_bytes())
    }

    /// A MAC of `data` under a key derived from the master key for reports only: a report is
    /// proven unedited by anyone who can open the repository, and the MAC key is of no use for
    /// anything else.
    pub fn report_mac(&self, data: &[u8]) -> [u8; 32] {
        let key = blake3::derive_key("drctl 2026-12 report seal v1", &self.to_bytes());
        *blake3::keyed_hash(&key, data).as_bytes()
    }

    /// The gear-table seed of the content-defined chunker, derived from the id key so that chunk
    /// boundaries (and so chunk sizes) do not reveal which known file a repository holds.
    pub fn chunker_seed(&self) -> u64 {
        let h = blake3::keyed_hash(&self.id, b"drctl fastcdc seed v1");
        u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
    }

    /// Seals `plaintext`: returns nonce || ciphertext || tag. `ad` binds the context (type, id,
    /// format version) so the object cannot be presented as another one.
    pub fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let (cipher, gcm_nonce) = self.subkey(&nonce);
        let tag = cipher
            .encrypt_inout_detached(&gcm_nonce, ad, (&mut out[NONCE_LEN..]).into())
            .expect("plaintext below the AES-GCM length limit");
        out.extend_from_slice(&tag);
        out
    }

    /// Opens what [`MasterKey::seal`] produced, given the same `ad`.
    pub fn open(&self, ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(AuthError);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let (cipher, gcm_nonce) = self.subkey(&nonce);
        let mut plaintext = ciphertext.to_vec();
        let tag = Tag::<Aes256Gcm>::try_from(tag).map_err(|_| AuthError)?;
        cipher.decrypt_inout_detached(&gcm_nonce, ad, plaintext.as_mut_slice().into(), &tag).map_err(|_| AuthError)?;
        Ok(plaintext)
    }

    fn subkey(&self, nonce: &[u8; NONCE_LEN]) -> (Aes256Gcm, Nonce<Aes256Gcm>) {
        let mut hasher = blake3::Hasher::new_keyed(&self.enc);
        hasher.update(SUBKEY_CONTEXT);
        hasher.update(&nonce[..12]);
        let subkey = hasher.finalize();
        let cipher = Aes256Gcm::new_from_slice(subkey.as_bytes()).expect("32-byte key");
        let gcm_nonce = Nonce::<Aes256Gcm>::try_from(&nonce[12..]).expect("12-byte nonce");
        (cipher, gcm_nonce)
    }
}

/// Seals with a one-off key (a key-encryption key from a passphrase): plain AES-256-GCM with a
/// random 96-bit nonce, fine because each such key seals exactly one object.
pub fn seal_with(key: &[u8; 32], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(key).expect("32-byte key");
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).expect("the OS random source works");
    let mut out = nonce.to_vec();
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_inout_detached(&Nonce::<Aes256Gcm>::from(nonce), ad, (&mut out[12..]).into())
        .expect("small plaintext");
    out.extend_from_slice(&tag);
    out
}

/// Opens what [`seal_with`] produced.
pub fn open_with(key: &[u8; 32], ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
    if sealed.len() < 12 + TAG_LEN {
        return Err(AuthError);
    }
    let cipher = Aes256Gcm::new_from_slice(key).expect("32-byte key");
    let (nonce, rest) = sealed.split_at(12);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| AuthError)?;
    let tag = Tag::<Aes256Gcm>::try_from(tag).map_err(|_| AuthError)?;
    let mut plaintext = ciphertext.to_vec();
    cipher.decrypt_inout_detached(&nonce, ad, plaintext.as_mut_slice().into(), &tag).map_err(|_| AuthError)?;
    Ok(plaintext)
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Id::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected a 64-character hex id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_tamper() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"ad", b"secret data");
        assert_eq!(sealed.len(), 11 + SEAL_OVERHEAD);
        assert_eq!(key.open(b"ad", &sealed).unwrap(), b"secret data");
        assert_eq!(key.open(b"other ad", &sealed), Err(AuthError));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(key.open(b"ad", &bad), Err(AuthError), "flip at {i} must be detected");
        }
        assert_eq!(key.open(b"ad", &sealed[..sealed.len() - 1]), Err(AuthError));
        assert_eq!(MasterKey::generate().open(b"ad", &sealed), Err(AuthError));
        assert_ne!(key.seal(b"ad", b"x"), key.seal(b"ad", b"x"), "nonces are fresh");
    }

    #[test]
    fn chunk_ids_are_keyed() {
        let (a, b) = (MasterKey::generate(), MasterKey::generate());
        assert_eq!(a.chunk_id(b"x"), a.chunk_id(b"x"));
        assert_ne!(a.chunk_id(b"x"), b.chunk_id(b"x"));
        let restored = MasterKey::from_bytes(&a.to_bytes());
        assert_eq!(restored.chunk_id(b"x"), a.chunk_id(b"x"));
    }

    #[test]
    fn one_off_key_round_trip() {
        let key = [7u8; 32];
        let sealed = seal_with(&key, b"k", b"master");
        assert_eq!(open_with(&key, b"k", &sealed).unwrap(), b"master");
        assert!(open_with(&[8u8; 32], b"k", &sealed).is_err());
    }
}

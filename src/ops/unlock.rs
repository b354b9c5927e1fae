//! Reaching and opening a repository: its location, its store's settings and where the secret
//! that opens it comes from (a key file, a password file, a passphrase variable, a KMS key). One
//! place for commands and policy jobs, so a job never re-implements what a command does.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Error, Result};
use crate::aws;
use crate::repo::Repository;
use crate::repo::key::{self, Secret};
use crate::store::{self, S3Options, Store};

/// Where the secret that opens a repository comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A key file made by `drctl key add --new-key-file`: no argon2 run, for commands
    /// PostgreSQL starts once per WAL segment.
    KeyFile(PathBuf),
    /// A file whose first line is the passphrase (a mounted Secret).
    PasswordFile(PathBuf),
    /// An environment variable holding the passphrase.
    PasswordEnv(String),
    /// A passphrase already in hand (typed at a prompt).
    Passphrase(String),
    /// A KMS key: the one named, or the repository's KMS slot.
    Kms(Option<String>),
}

impl SecretSource {
    /// Reads the secret. What cannot be read is a key problem (exit 4), named with its source.
    pub fn secret(&self) -> Result<Secret> {
        let unreadable = |what, path: &Path, e: std::io::Error| Error::UnreadableSecret {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        match self {
            SecretSource::KeyFile(path) => Secret::read_key_file(path).map_err(|e| unreadable("key file", path, e)),
            SecretSource::PasswordFile(path) => read_password_file(path)
                .map(|p| Secret::Passphrase(p.into_bytes()))
                .map_err(|e| unreadable("password file", path, e)),
            SecretSource::PasswordEnv(name) => std::env::var(name)
                .map(|p| Secret::Passphrase(p.into_bytes()))
                .map_err(|_| Error::UnsetSecret { name: name.clone() }),
            SecretSource::Passphrase(p) => Ok(Secret::Passphrase(p.clone().into_bytes())),
            SecretSource::Kms(key) => Ok(kms_secret(key.clone())),
        }
    }
}

/// The secret of a KMS key slot (the key named, or the slot's own), unwrapped by AWS KMS with
/// the ambient credentials.
pub fn kms_secret(key_id: Option<String>) -> Secret {
    Secret::Kms(key_id, &AwsKms)
}

/// AWS KMS as the repository's key slots take it: the repository format names no cloud SDK,
/// and `aws` no repository type.
struct AwsKms;

impl key::Kms for AwsKms {
    fn encrypt(&self, key_id: &str, plaintext: &[u8]) -> std::result::Result<(Vec<u8>, String), key::KmsFailure> {
        Ok(aws::kms::encrypt(key_id, plaintext)?)
    }

    fn decrypt(&self, key_id: &str, ciphertext: &[u8]) -> std::result::Result<Vec<u8>, key::KmsFailure> {
        Ok(aws::kms::decrypt(key_id, ciphertext)?)
    }
}

/// The passphrase a password file holds: its first line.
pub fn read_password_file(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.lines().next().unwrap_or("").to_string())
}

/// How to reach and open one repository.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// A local directory or `s3://bucket/prefix[?region=NAME]`.
    pub location: String,
    /// S3 settings beyond the location (endpoint, path style, storage class, encryption, lock).
    pub s3: S3Options,
    /// `None`: the repository's KMS slot when it has one, else what the caller asks for.
    pub secret: Option<SecretSource>,
    /// How long to wait for a conflicting repository lock.
    pub lock_wait: Duration,
}

impl Access {
    pub fn store(&self) -> Result<Arc<dyn Store>> {
        Ok(Arc::from(store::open(&self.location, &self.s3)?))
    }

    /// Opens the repository with the given secret; without one, with the repository's KMS slot
    /// (and the ambient AWS credentials) when it has one, else with what `ask` returns (a prompt
    /// on a terminal, or the error that no secret was given).
    pub fn open<E: From<Error>>(
        &self,
        ask: impl FnOnce() -> std::result::Result<Secret, E>,
    ) -> std::result::Result<Repository, E> {
        Ok(self.open_with_secret(ask)?.0)
    }

    /// [`Access::open`], also returning the secret that opened the repository (a key rotation
    /// retires every slot it opens).
    pub fn open_with_secret<E: From<Error>>(
        &self,
        ask: impl FnOnce() -> std::result::Result<Secret, E>,
    ) -> std::result::Result<(Repository, Secret), E> {
        let store = self.store()?;
        let secret = match &self.secret {
            Some(source) => source.secret()?,
            None if key::has_kms_slot(store.as_ref()).map_err(Error::from)? => kms_secret(None),
            None => ask()?,
        };
        let mut repo = Repository::open(store, &secret).map_err(Error::from)?;
        repo.set_lock_wait(self.lock_wait);
        Ok((repo, secret))
    }

    /// These settings as `drctl` command-line flags, with absolute paths: for a process started
    /// elsewhere (an async worker, PostgreSQL's restore_command). A passphrase variable is not
    /// a flag: the process inherits it.
    pub fn forward(&self) -> std::io::Result<Vec<OsString>> {
        let location = match self.location.contains("://") {
            true => self.location.clone(),
            false => std::path::absolute(&self.location)?.to_string_lossy().into_owned(),
        };
        let mut args: Vec<OsString> = vec!["--repo".into(), location.into()];
        let s3 = &self.s3;
        if let Some(endpoint) = &s3.endpoint {
            args.extend(["--s3-endpoint".into(), endpoint.into()]);
        }
        if s3.path_style {
            args.push("--s3-path-style".into());
        }
        if let Some(class) = &s3.storage_class {
            args.extend(["--s3-storage-class".into(), class.into()]);
        }
        if let Some(key) = &s3.sse_kms_key_id {
            args.extend(["--s3-sse-kms-key-id".into(), key.into()]);
        }
        if let Some(lock) = &s3.object_lock {
            args.extend(["--s3-object-lock".into(), format!("{}:{}", lock.mode, lock.days).into()]);
        }
        match &self.secret {
            Some(SecretSource::KeyFile(path)) => {
                args.extend(["--key-file".into(), std::path::absolute(path)?.into_os_string()])
            }
            Some(SecretSource::PasswordFile(path)) => {
                args.extend(["--password-file".into(), std::path::absolute(path)?.into_os_string()])
            }
            _ => {}
        }
        Ok(args)
    }
}

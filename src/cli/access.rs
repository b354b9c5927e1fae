//! Where a repository is and how to open it, as every command's flags say: its location, its
//! store's settings and where the secret comes from.

use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use super::parse_duration;
use crate::ops::{
    self,
    unlock::{Access, SecretSource},
};
use crate::repo::key::Secret;
use crate::repo::{self, Repository};
use crate::store;

/// Where the repository is and how to unlock it; shared by every command.
#[derive(Debug, Args)]
pub struct RepoArgs {
    /// Repository location: a local directory or s3://bucket/prefix[?region=NAME] (credentials
    /// and region from the AWS default chain).
    #[arg(long, env = "DRCTL_REPO", value_name = "LOCATION")]
    pub repo: String,
    #[command(flatten)]
    pub access: AccessArgs,
}

impl std::ops::Deref for RepoArgs {
    type Target = AccessArgs;
    fn deref(&self) -> &AccessArgs {
        &self.access
    }
}

impl RepoArgs {
    pub fn access(&self) -> Access {
        self.access.access(&self.repo)
    }

    pub fn store(&self) -> ops::Result<Arc<dyn store::Store>> {
        self.access().store()
    }

    pub fn open(&self) -> ops::Result<Repository> {
        self.access.open(&self.repo)
    }

    /// The repository and the secret that opened it.
    pub fn open_with_secret(&self) -> ops::Result<(Repository, Secret)> {
        self.access.open_with_secret(&self.repo)
    }

    /// These settings as command-line flags, with absolute paths: for a background worker
    /// started from another directory.
    pub fn forward(&self) -> ops::Result<Vec<std::ffi::OsString>> {
        self.access().forward().map_err(ops::Error::io("cannot resolve the repository's path"))
    }
}

/// How to unlock a repository and reach its store: everything but its location.
#[derive(Debug, Args)]
pub struct AccessArgs {
    /// File whose first line is the passphrase (else DRCTL_PASSWORD, else a prompt on a terminal).
    #[arg(long, env = "DRCTL_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Open with a key file (made by `drctl key add --new-key-file`) instead of a passphrase:
    /// no argon2 run, for commands PostgreSQL starts once per WAL segment.
    #[arg(long, env = "DRCTL_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// For s3:// repositories: the endpoint of an S3-compatible service.
    #[arg(long, env = "DRCTL_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// For s3:// repositories: path-style addressing (the bucket in the path), as most
    /// S3-compatible services want.
    #[arg(long, env = "DRCTL_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// For s3:// repositories: the storage class of new objects (STANDARD, STANDARD_IA,
    /// ONEZONE_IA, INTELLIGENT_TIERING, GLACIER_IR; classes that need a thaw are refused).
    #[arg(long, env = "DRCTL_S3_STORAGE_CLASS", value_name = "CLASS")]
    pub s3_storage_class: Option<String>,
    /// For s3:// repositories: server-side encryption of new objects with this KMS key, on top of
    /// drctl's own encryption.
    #[arg(long, env = "DRCTL_S3_SSE_KMS_KEY_ID", value_name = "ARN")]
    pub s3_sse_kms_key_id: Option<String>,
    /// For s3:// repositories in a bucket with Object Lock: retain every new object (locks aside)
    /// for DAYS in MODE governance or compliance, so nobody can delete a backup before then.
    #[arg(long, env = "DRCTL_S3_OBJECT_LOCK", value_name = "MODE:DAYS")]
    pub s3_object_lock: Option<store::ObjectLock>,
    /// Wait up to this long for a conflicting repository lock (a backup while prune runs)
    /// instead of failing at once with exit 6.
    #[arg(long, env = "DRCTL_LOCK_WAIT", value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub lock_wait: chrono::Duration,
}

impl AccessArgs {
    /// Where these flags (and DRCTL_PASSWORD) say the secret comes from: a key file first, then
    /// a password file, then the variable; `None` leaves it to a KMS slot or a prompt.
    pub fn secret_source(&self) -> Option<SecretSource> {
        if let Some(path) = &self.key_file {
            return Some(SecretSource::KeyFile(path.clone()));
        }
        if let Some(path) = &self.password_file {
            return Some(SecretSource::PasswordFile(path.clone()));
        }
        std::env::var_os("DRCTL_PASSWORD").map(|_| SecretSource::PasswordEnv("DRCTL_PASSWORD".into()))
    }

    /// The repository at `location` as these flags reach it.
    pub fn access(&self, location: &str) -> Access {
        Access {
            location: location.to_string(),
            s3: self.s3_options(),
            secret: self.secret_source(),
            lock_wait: self.lock_wait.to_std().unwrap_or_default(),
        }
    }

    pub fn store(&self, location: &str) -> ops::Result<Arc<dyn store::Store>> {
        self.access(location).store()
    }

    /// How a policy's repositories are reached with these flags (their S3 settings and lock
    /// wait; the key slots come from the policy).
    pub fn reach(&self) -> crate::ops::policy_repos::Reach {
        crate::ops::policy_repos::Reach {
            s3: self.s3_options(),
            lock_wait: self.lock_wait.to_std().unwrap_or_default(),
        }
    }

    /// The S3 settings of these flags.
    pub fn s3_options(&self) -> store::S3Options {
        store::S3Options {
            endpoint: self.s3_endpoint.clone(),
            path_style: self.s3_path_style,
            storage_class: self.s3_storage_class.as_ref().map(|c| c.to_ascii_uppercase()),
            sse_kms_key_id: self.s3_sse_kms_key_id.clone(),
            object_lock: self.s3_object_lock.clone(),
            retry: Some(crate::aws::sdk::retry_config()),
            timeout: Some(crate::aws::sdk::timeout_config()),
        }
    }

    /// The secret these flags give, else a passphrase typed at a terminal (twice with `confirm`).
    pub fn secret(&self, confirm: bool) -> ops::Result<Secret> {
        match self.secret_source() {
            Some(source) => source.secret(),
            None => Ok(Secret::Passphrase(prompt_passphrase(confirm)?.into_bytes())),
        }
    }

    /// Whether a key file or passphrase is given (else a KMS slot or a prompt opens).
    pub fn secret_given(&self) -> bool {
        self.secret_source().is_some()
    }

    pub fn open(&self, location: &str) -> ops::Result<Repository> {
        Ok(self.open_with_secret(location)?.0)
    }

    /// The repository at `location` and the secret that opened it.
    pub fn open_with_secret(&self, location: &str) -> ops::Result<(Repository, Secret)> {
        self.access(location).open_with_secret(|| Ok(Secret::Passphrase(prompt_passphrase(false)?.into_bytes())))
    }
}

/// A passphrase typed at a terminal; without one, the error that no secret was given.
fn prompt_passphrase(confirm: bool) -> ops::Result<String> {
    if !std::io::stderr().is_terminal() {
        return Err(repo::Error::NoPassword.into());
    }
    ask("repository passphrase: ", confirm.then_some("repeat passphrase: "))
}

/// Asks at the terminal with `prompt`, and again with `repeat` if given: both must agree.
pub fn ask(prompt: &str, repeat: Option<&str>) -> ops::Result<String> {
    let read = |prompt| rpassword::prompt_password(prompt).map_err(ops::Error::io("cannot read the passphrase"));
    let first = read(prompt)?;
    if let Some(repeat) = repeat
        && read(repeat)? != first
    {
        return Err(ops::Error::Usage("the two passphrases differ".into()));
    }
    Ok(first)
}

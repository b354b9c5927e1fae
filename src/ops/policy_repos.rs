//! The repositories a policy names, reached and opened as the policy says: its primary and its
//! copies, each by the key slot the policy names for it, and a copy brought up to date.

use super::Error;
use super::copy::{self, Copied};
use super::unlock::{Access, SecretSource};
use crate::policy::{self, KeySlot};
use crate::progress::NoProgress;
use crate::repo::key::Secret;
use crate::repo::{self, Repository};
use crate::store;

/// What reaching a repository needs beyond the policy: S3 settings it does not hold (endpoint,
/// path style, storage class…) and how long to wait for a conflicting lock.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    pub s3: store::S3Options,
    pub lock_wait: std::time::Duration,
}

/// A repository's location with the policy's region in it, as `--repo` takes it.
pub fn location_of(repository: &policy::Repository) -> String {
    match &repository.region {
        Some(region) if repository.location.starts_with("s3://") && !repository.location.contains("region=") => {
            let separator = if repository.location.contains('?') { '&' } else { '?' };
            format!("{}{separator}region={region}", repository.location)
        }
        _ => repository.location.clone(),
    }
}

/// How one of the policy's repositories is reached, opened by the key slot the policy names.
pub fn access_of(repository: &policy::Repository, reach: &Reach) -> Access {
    Access {
        location: location_of(repository),
        s3: reach.s3.clone(),
        secret: Some(secret_source(&repository.key)),
        lock_wait: reach.lock_wait,
    }
}

/// Where the secret of the key slot the policy names comes from.
fn secret_source(slot: &KeySlot) -> SecretSource {
    match slot {
        KeySlot::PasswordEnv(name) => SecretSource::PasswordEnv(name.clone()),
        KeySlot::PasswordFile(path) => SecretSource::PasswordFile(path.clone()),
        KeySlot::KeyFile(path) => SecretSource::KeyFile(path.clone()),
        KeySlot::Kms(key) => SecretSource::Kms(Some(key.clone())),
    }
}

/// The secret of the key slot the policy names. What cannot be read is a key problem (exit 4).
fn secret_of(slot: &KeySlot) -> Result<Secret, Error> {
    secret_source(slot).secret()
}

/// Opens a repository of the policy with the key slot the policy names.
pub fn open(repository: &policy::Repository, reach: &Reach) -> Result<Repository, Error> {
    access_of(repository, reach).open(|| Err(repo::Error::NoPassword.into()))
}

/// Opens an existing copy of `primary`; another repository at the copy's location is an error,
/// so retention never judges snapshots that are not the policy's.
pub fn open_copy_of(primary: &Repository, copy: &policy::Repository, reach: &Reach) -> Result<Repository, Error> {
    let target = open(copy, reach)?;
    if target.config().id != primary.config().id {
        return Err(Error::Usage(format!(
            "{} is not a copy of the primary repository {}: its retention is left alone (fix the copy's location \
             in the policy)",
            location_of(copy),
            primary.store().location()
        )));
    }
    Ok(target)
}

/// Brings `copy` up to date with `primary` as `options` select; an empty location becomes a copy,
/// opened by the key slot the policy names for it.
pub fn copy_to(
    primary: &Repository,
    copy: &policy::Repository,
    reach: &Reach,
    options: &copy::Options,
) -> Result<Copied, Error> {
    let target = copy::Target {
        store: access_of(copy, reach).store()?,
        open: &|store| Ok(Repository::open(store, &secret_of(&copy.key)?)?),
        new_secret: &|| secret_of(&copy.key),
        lock_wait: reach.lock_wait,
    };
    copy::copy(primary, target, options, &NoProgress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_joins_the_location() {
        let repo = |location: &str, region: Option<&str>| policy::Repository {
            location: location.into(),
            region: region.map(String::from),
            key: KeySlot::Kms("k".into()),
        };
        assert_eq!(location_of(&repo("s3://b/p", Some("us-west-2"))), "s3://b/p?region=us-west-2");
        assert_eq!(location_of(&repo("s3://b/p?region=eu-west-1", Some("us-west-2"))), "s3://b/p?region=eu-west-1");
        assert_eq!(location_of(&repo("/var/backups", Some("us-west-2"))), "/var/backups");
    }
}

//! The user-facing side of errors: every failure becomes one paragraph (the cause, then a hint
//! saying what to do) and a documented exit code that scripts and CronJobs can act on.

use crate::ops;
use crate::pg;
use crate::repo;
use crate::runbook;
use crate::store;

/// Documented exit codes (README.md, "Exit codes"). Changing a number breaks scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    Ok = 0,
    Internal = 1,
    Usage = 2,
    Damaged = 3,
    Key = 4,
    Repository = 5,
    Locked = 6,
    Source = 7,
    Storage = 8,
    Target = 9,
    NoSnapshot = 10,
    WalConflict = 11,
    Database = 12,
    OutOfReach = 13,
    Rds = 14,
    Refused = 15,
    Check = 16,
}

/// The exit code and the hint for an error of the command line, found by looking through its
/// cause chain.
pub fn classify(err: &anyhow::Error) -> (ExitCode, String) {
    // `downcast_ref` also finds errors attached as context, which `chain()` hides in a wrapper.
    if let Some(e) = err.downcast_ref::<repo::Error>() {
        return classify_repo(e);
    }
    if let Some(e) = err.downcast_ref::<ops::Error>() {
        return classify_ops(e);
    }
    classify_cause(err.as_ref())
}

/// The exit code and the hint for an error and its causes: the first cause drctl knows decides.
pub fn classify_cause(err: &(dyn std::error::Error + 'static)) -> (ExitCode, String) {
    let chain = || std::iter::successors(Some(err), |e| e.source());
    if chain().any(|cause| cause.is::<crate::aws::rds::RdsError>()) {
        return (
            ExitCode::Rds,
            "fix the cause above and run again: check rds.instance, rds.region and rds.dr_region in the policy and \
             the AWS credentials (default chain: environment, profile, web identity); the role needs \
             rds:CreateDBSnapshot, rds:CopyDBSnapshot, rds:DeleteDBSnapshot, rds:DescribeDBSnapshots, \
             rds:ListTagsForResource and rds:AddTagsToResource"
                .into(),
        );
    }
    for cause in chain() {
        if let Some(e) = cause.downcast_ref::<runbook::Error>() {
            match e {
                runbook::Error::Usage(_) => return usage(),
                runbook::Error::Check(_) => {
                    return (
                        ExitCode::Check,
                        "the step's check, command or approval said no (above); fix what it names and run the \
                         runbook again"
                            .into(),
                    );
                }
                runbook::Error::Busy(_) => {
                    return (
                        ExitCode::Locked,
                        "wait for the other run to end (see `drctl runbook audit`); if it was killed, take it up with \
                         --resume RUN once its lock is released"
                            .into(),
                    );
                }
                runbook::Error::Audit(..) => {
                    return (
                        ExitCode::Storage,
                        "give --audit-log (DRCTL_AUDIT_LOG) a file on a writable disk; the run did not start".into(),
                    );
                }
                // The cause below decides (a boxed error is not itself in the chain).
                runbook::Error::Action(inner) => return classify_cause(inner.as_ref()),
                runbook::Error::Step { source, .. } | runbook::Error::Precondition(_, source) => {
                    return classify_cause(source.as_ref());
                }
            }
        }
        if let Some(e) = cause.downcast_ref::<ops::Error>() {
            return classify_ops(e);
        }
        if let Some(e) = cause.downcast_ref::<repo::Error>() {
            return classify_repo(e);
        }
        if let Some(e) = cause.downcast_ref::<pg::Error>() {
            return classify_pg(e);
        }
        if let Some(e) = cause.downcast_ref::<store::Error>() {
            return classify_store(e);
        }
    }
    internal()
}

fn internal() -> (ExitCode, String) {
    (ExitCode::Internal, "this is unexpected; run again with -v and report the output".into())
}

fn usage() -> (ExitCode, String) {
    (ExitCode::Usage, "see `drctl help` for the command's usage".into())
}

fn target() -> (ExitCode, String) {
    (ExitCode::Target, "restore into a new or empty directory on a disk with enough free space".into())
}

fn classify_ops(e: &ops::Error) -> (ExitCode, String) {
    match e {
        // Not opening at all is what a missing secret means, and has the same fix.
        ops::Error::UnreadableSecret { .. } | ops::Error::UnsetSecret { .. } => classify_repo(&repo::Error::NoPassword),
        ops::Error::Context { source, .. } => classify_ops(source),
        ops::Error::Io { .. } => internal(),
        ops::Error::Usage(_) | ops::Error::UnreadableWal { .. } => usage(),
        ops::Error::Source { .. } => (
            ExitCode::Source,
            "make the path readable by the user running drctl (or leave it out of --path); no snapshot was written"
                .into(),
        ),
        ops::Error::Target { .. } => target(),
        ops::Error::Refused { .. } => (
            ExitCode::Refused,
            "nothing was changed: fix what each refusing gate above names (its measured value and fix are printed \
             with it), or run with --dry-run to see every gate without acting"
                .into(),
        ),
        ops::Error::Promotion(_) => (
            ExitCode::Database,
            "the server is promoted and takes writes; what is named above still needs fixing: see the server log \
             and pg_stat_archiver on the new primary"
                .into(),
        ),
        ops::Error::PartlyRestored { .. } => (
            ExitCode::Damaged,
            "every other file was restored and verified, and nothing unverified was written; get the listed files from \
             a copy of the repository or an older snapshot, and run `drctl check --read-data` to see what is damaged"
                .into(),
        ),
        ops::Error::Repo(e) => classify_repo(e),
        ops::Error::Store(e) => classify_store(e),
        ops::Error::Pg(e) => classify_pg(e),
        ops::Error::Rds(_) | ops::Error::Dns(_) => (
            ExitCode::Rds,
            "fix the cause above and run again: check the identifiers and the region, and the AWS credentials \
             (default chain: environment, profile, web identity); a runbook run takes up where it stopped with --resume"
                .into(),
        ),
    }
}

fn classify_store(e: &store::Error) -> (ExitCode, String) {
    let (code, hint) = match e {
        store::Error::NoSpace { .. } => (
            ExitCode::Storage,
            "free space on the repository's disk (or move the repository to a larger one) and run the command again; \
             nothing incomplete was recorded",
        ),
        store::Error::PermissionDenied { .. } => (
            ExitCode::Storage,
            "run drctl as a user that may write the repository directory, or fix its ownership and permissions",
        ),
        // An object the repository refers to is gone or cut short: that is damage, not an outage.
        store::Error::NotFound { .. } | store::Error::OutOfRange { .. } => {
            (ExitCode::Damaged, "the repository is damaged; run `drctl check --read-data` to see what is affected")
        }
        store::Error::InvalidLocation { .. } => return usage(),
        store::Error::UnsupportedScheme { .. } => {
            (ExitCode::Repository, "give a local directory path or s3://bucket/prefix as the repository")
        }
        store::Error::Io { .. } => {
            (ExitCode::Storage, "check the disk or mount holding the repository and run the command again")
        }
        store::Error::Retained { .. } => (
            ExitCode::Storage,
            "Object Lock keeps it until then (a COMPLIANCE retention cannot be lifted by anyone; GOVERNANCE only with \
             s3:BypassGovernanceRetention); run the command again after that date",
        ),
        store::Error::Remote { .. } => (
            ExitCode::Storage,
            "check the bucket, its region (AWS_REGION), the credentials (AWS default chain: environment, profile, \
             web identity) and --s3-endpoint / --s3-path-style for S3-compatible services; nothing incomplete was \
             recorded",
        ),
    };
    (code, hint.into())
}

fn classify_pg(e: &pg::Error) -> (ExitCode, String) {
    use pg::Error as P;
    let (code, hint) = match e {
        P::Sql { .. } => (
            ExitCode::Database,
            "check the connection string (host, port, user, password or PG* variables, ~/.pgpass, sslmode) and that \
             the server is running and lets this user connect",
        ),
        P::Database { .. } => (
            ExitCode::Database,
            "check the connection string (host, port, user, password or PG* variables), that the server is running, \
             and that the user may connect for replication (REPLICATION role and a pg_hba.conf replication entry)",
        ),
        P::ArchivingOff { .. } => (
            ExitCode::Database,
            "set archive_mode = on (always on a standby) and archive_command = 'drctl wal-push %p' with DRCTL_REPO and \
             DRCTL_KEY_FILE in the server's environment, restart PostgreSQL, then back up again",
        ),
        P::ArchiveStalled { .. } => (
            ExitCode::Database,
            "archive_command is failing: see pg_stat_archiver (last_failed_wal) and the server log, fix it, then back \
             up again; no snapshot was written",
        ),
        P::MissingProgram { .. } => (
            ExitCode::Database,
            "install that PostgreSQL version's programs (Debian and Ubuntu: postgresql-client-N for the clients, \
             postgresql-N for the server, from apt.postgresql.org; RHEL: PGDG's postgresqlN and postgresqlN-server) or \
             point --pg-bin (DRCTL_PG_BIN) at the folder holding them; nothing was written",
        ),
        P::OutOfReach { .. } => (
            ExitCode::OutOfReach,
            "choose a time inside the recoverable window `drctl snapshots` shows: after the end of a base backup and \
             before the newest archived WAL",
        ),
        P::DataDirectory { .. } => return target(),
    };
    (code, hint.into())
}

fn classify_repo(e: &repo::Error) -> (ExitCode, String) {
    use repo::Error as E;
    let (code, hint) = match e {
        E::NotARepository { .. } => {
            (ExitCode::Repository, "check --repo / DRCTL_REPO; create a repository with `drctl init --repo LOCATION`")
        }
        E::AlreadyExists { .. } => (ExitCode::Repository, "choose a new or empty location for `drctl init`"),
        E::NotACopyTarget { .. } => (
            ExitCode::Repository,
            "give --to a new or empty location (a folder or bucket prefix), or an existing copy of the same \
             repository, which `drctl copy` brings up to date; nothing was written",
        ),
        E::KeyFileExists { .. } => (
            ExitCode::Usage,
            "drctl never overwrites a key file (it may open this or another repository): give --new-key-file a path \
             that does not exist yet, or open with the existing one through --key-file / DRCTL_KEY_FILE",
        ),
        E::UnsupportedVersion { .. } => (
            ExitCode::Repository,
            "upgrade drctl to a release that reads this repository format; the repository was not changed",
        ),
        E::NoPassword => (
            ExitCode::Key,
            "set DRCTL_PASSWORD or DRCTL_PASSWORD_FILE (a file whose first line is the passphrase), or DRCTL_KEY_FILE \
             (a key file from `drctl key add --new-key-file`), or run on a terminal to be asked",
        ),
        E::EmptyPassphrase => (
            ExitCode::Key,
            "an empty passphrase is never accepted: it usually means an unset variable or a Secret that was not \
             mounted; set DRCTL_PASSWORD / DRCTL_PASSWORD_FILE (DRCTL_NEW_PASSWORD for `key add`) to the real \
             passphrase; nothing was changed",
        ),
        E::WrongPassword { .. } => (
            ExitCode::Key,
            "check DRCTL_PASSWORD / DRCTL_PASSWORD_FILE / DRCTL_KEY_FILE; it must match one of the repository's key \
             slots (`drctl key list`)",
        ),
        E::Kms(_) => (
            ExitCode::Key,
            "the repository's KMS key slot could not be used (cause above); fix the key or the credentials, or open \
             the repository with another slot (DRCTL_PASSWORD / DRCTL_KEY_FILE); nothing was changed",
        ),
        E::Corrupt { .. } | E::Missing { .. } => (
            ExitCode::Damaged,
            "the repository is damaged. Run `drctl check --read-data` to list every damaged object and the snapshots \
             that depend on it, and restore from a copy of the repository",
        ),
        E::Damaged { .. } => (
            ExitCode::Damaged,
            "a snapshot listed under a damaged object (\"affects snapshots\") cannot be fully restored: restore it from a \
             copy of the repository, and take a new backup so the newest state is protected; an object that lists no \
             snapshot affects none of them",
        ),
        E::Unindexed { .. } => (
            ExitCode::Damaged,
            "run `drctl repair index` (it lists every pack again from the pack's own header), then prune again; \
             nothing was deleted",
        ),
        E::Locked { .. } => (
            ExitCode::Locked,
            "wait for the other command to finish; a lock whose process died is removed automatically (at once by a \
             command on the same host and in the same PID namespace, else 30 minutes after its last refresh)",
        ),
        E::BadSnapshotQuery { .. } => {
            (ExitCode::Usage, "copy the id (or its first 8 characters) from `drctl snapshots`, or give `latest`")
        }
        E::SnapshotNotFound { .. } | E::AmbiguousSnapshot { .. } | E::NoSnapshots => {
            (ExitCode::NoSnapshot, "list snapshots with `drctl snapshots` and give a longer id prefix, or `latest`")
        }
        E::Pg(e) => return classify_pg(e),
        E::WalConflict { .. } => (
            ExitCode::WalConflict,
            "another cluster (or a restored copy on the same timeline) is archiving into this repository; give each \
             cluster its own repository, and do not remove the archived file: it may be needed for a restore",
        ),
        E::TimelineFork { .. } => (
            ExitCode::WalConflict,
            "a test or drill copy must not archive here: set archive_mode = off in it (`drctl restore` does unless \
             given --archive-mode keep); if this cluster is the new primary after a point-in-time restore, let its \
             archive_command accept the new timeline with `--allow-fork TLI` (or DRCTL_ALLOW_FORK=TLI), with TLI the \
             timeline number the file name starts with",
        ),
        E::InvalidRequest(_) => return usage(),
        E::Store(s) => return classify_store(s),
    };
    (code, hint.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rds_error_exits_with_its_own_code() {
        let err = crate::aws::rds::RdsError {
            region: "us-east-1".into(),
            what: "CreateDBSnapshot".into(),
            detail: "x".into(),
        };
        let (code, hint) = classify(&anyhow::Error::new(err).context("taking the RDS snapshot"));
        assert_eq!(code, ExitCode::Rds);
        assert!(hint.contains("rds:CreateDBSnapshot"), "{hint}");
    }
}

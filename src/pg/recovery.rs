//! Turning a restored base backup into a data directory PostgreSQL recovers by itself:
//! recovery.signal, restore_command = drctl wal-fetch, and the recovery target.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::Error;

/// Where recovery stops.
#[derive(Debug, Clone)]
pub enum RecoveryTarget {
    /// The end of the base backup: the earliest consistent point.
    Immediate,
    /// The end of the archived WAL: everything the archive holds.
    End,
    /// Every transaction committed at or before this time.
    Time(chrono::DateTime<chrono::Utc>),
    /// Up to and including this WAL position ("0/5000028").
    Lsn(String),
    /// Up to and including the commit of this transaction id.
    Xid(u64),
}

/// Where recovery stops, and on which timeline.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub target: RecoveryTarget,
    /// The timeline to follow; the newest one in the archive when `None`.
    pub timeline: Option<u32>,
    /// Keep the backup's archive settings; else the restored cluster never archives. A restore
    /// (a test, a drill) that archived into the repository it came from would put a new timeline
    /// there, which a later restore of the original cluster could follow.
    pub keep_archiving: bool,
}

/// How the server reaches the archive.
pub struct ArchiveAccess<'a> {
    pub drctl: &'a Path,
    /// The repository flags for `wal-fetch` (`--repo LOCATION`, `--key-file FILE`, S3 settings),
    /// with absolute paths. Without a key file or password file in them, the server's
    /// environment must provide DRCTL_KEY_FILE (or a passphrase), or the repository a KMS slot.
    pub repo_args: &'a [String],
}

/// Quotes a word for /bin/sh, which runs restore_command.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A string value in postgresql.conf syntax.
fn conf_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub fn restore_command(access: &ArchiveAccess) -> String {
    let mut cmd = format!("{} wal-fetch", shell_quote(&access.drctl.to_string_lossy()));
    for arg in access.repo_args {
        let _ = write!(cmd, " {}", if arg.starts_with("--") { arg.clone() } else { shell_quote(arg) });
    }
    cmd.push_str(" %f %p");
    cmd
}

/// Prepares `dir` (a restored base backup) for recovery. As root, the directory gets the owner
/// of its files (the server's user) and mode 0700, as PostgreSQL requires.
pub fn prepare(dir: &Path, access: &ArchiveAccess, recovery: &Recovery) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::DataDirectory { path: dir.to_path_buf(), reason: e.to_string() };
    let owner = fs::metadata(dir.join("PG_VERSION")).map_err(io)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(dir, Some(owner.uid()), Some(owner.gid())).map_err(io)?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
    for sub in ["pg_wal", "pg_wal/archive_status"] {
        let path = dir.join(sub);
        if !path.exists() {
            fs::create_dir(&path).map_err(io)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).map_err(io)?;
            if unsafe { libc::geteuid() } == 0 {
                std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).map_err(io)?;
            }
        }
    }
    let mut settings = String::from("\n# Added by drctl restore: recover from the drctl WAL archive.\n");
    let _ = writeln!(settings, "restore_command = {}", conf_string(&restore_command(access)));
    match &recovery.target {
        RecoveryTarget::Immediate => settings.push_str("recovery_target = 'immediate'\n"),
        RecoveryTarget::End => {}
        RecoveryTarget::Time(t) => {
            let _ = writeln!(settings, "recovery_target_time = '{}'", t.format("%Y-%m-%d %H:%M:%S%.6f+00"));
        }
        RecoveryTarget::Lsn(lsn) => {
            let _ = writeln!(settings, "recovery_target_lsn = {}", conf_string(lsn));
        }
        RecoveryTarget::Xid(xid) => {
            let _ = writeln!(settings, "recovery_target_xid = '{xid}'");
        }
    }
    if !matches!(recovery.target, RecoveryTarget::Immediate | RecoveryTarget::End) {
        settings.push_str("recovery_target_inclusive = on\n");
    }
    match recovery.timeline {
        Some(tli) => _ = writeln!(settings, "recovery_target_timeline = '{tli}'"),
        None => settings.push_str("recovery_target_timeline = 'latest'\n"),
    }
    settings.push_str("recovery_target_action = 'promote'\n");
    if !recovery.keep_archiving {
        // postgresql.auto.conf is read last, so this wins over the backup's postgresql.conf.
        settings.push_str("# Restored clusters do not archive (restore --archive-mode keep leaves it on).\n");
        settings.push_str("archive_mode = off\n");
    }
    if has_in_place_tablespaces(dir) {
        // Local-mode backups bring tablespaces back as directories inside pg_tblspc, so a
        // restore never overwrites the original locations (which may still be in use).
        settings.push_str("# Tablespaces were restored inside pg_tblspc; PostgreSQL needs this to accept them.\n");
        settings.push_str("allow_in_place_tablespaces = on\n");
    }
    let auto_conf = dir.join("postgresql.auto.conf");
    let mut conf = fs::read_to_string(&auto_conf).unwrap_or_default();
    conf.push_str(&settings);
    fs::write(&auto_conf, conf).map_err(io)?;
    // A backup taken from a standby may carry its standby.signal, which would win over
    // recovery.signal and make the restored server follow the original primary.
    match fs::remove_file(dir.join("standby.signal")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let signal = dir.join("recovery.signal");
    fs::write(&signal, b"").map_err(io)?;
    if unsafe { libc::geteuid() } == 0 {
        for path in [&auto_conf, &signal] {
            std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid())).map_err(io)?;
        }
    }
    Ok(())
}

fn has_in_place_tablespaces(dir: &Path) -> bool {
    fs::read_dir(dir.join("pg_tblspc")).into_iter().flatten().flatten().any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_command_quotes_for_the_shell_and_the_config() {
        let args: Vec<String> =
            ["--repo", "/backups/it's here", "--key-file", "/etc/drctl/key"].map(String::from).to_vec();
        let access = ArchiveAccess { drctl: Path::new("/usr/bin/drctl"), repo_args: &args };
        let cmd = restore_command(&access);
        assert_eq!(cmd, r"'/usr/bin/drctl' wal-fetch --repo '/backups/it'\''s here' --key-file '/etc/drctl/key' %f %p");
        assert_eq!(conf_string("a'b"), "'a''b'");
    }
}

//! Running a restored data directory through recovery, privately: no TCP listener, a socket in
//! a temporary folder, archiving off. drctl watches the server until it has promoted (PostgreSQL
//! removes recovery.signal at the end of recovery) or failed, reports what the log says it
//! recovered, and shuts it down cleanly, leaving a promoted data directory for the operator.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Error;
use super::basebackup::find_program;

/// What recovery reached, from the server log.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// "recovery stopping before commit of transaction …, time …", when a target stopped it.
    pub stop: Option<String>,
    /// "last completed transaction was at log time …".
    pub last_transaction: Option<String>,
}

fn log_line(log: &str, marker: &str) -> Option<String> {
    log.lines().rev().find_map(|l| l.find(marker).map(|i| l[i..].trim().to_string()))
}

/// The major version in `postgres --version` output ("postgres (PostgreSQL) 15.18 (Debian …)").
pub fn major_version(version_output: &str) -> Option<String> {
    let number = version_output.split(") ").nth(1)?.split_whitespace().next()?;
    Some(number.split('.').next()?.to_string())
}

/// Refuses to run recovery with a server of another major version than the backup's: it would
/// fail on the data directory, or worse, half-start.
pub fn check_version(backup_version: &str) -> Result<(), Error> {
    let program = find_program("postgres");
    let out = Command::new(&program)
        .arg("--version")
        .output()
        .map_err(|e| Error::Database { detail: format!("cannot run {}: {e}", program.display()) })?;
    let text = String::from_utf8_lossy(&out.stdout);
    match major_version(&text) {
        Some(found) if found == backup_version => Ok(()),
        found => Err(Error::Database {
            detail: format!(
                "the backup is PostgreSQL {backup_version} but {} is {}; install the PostgreSQL {backup_version} \
                 server binaries (or put them first on PATH)",
                program.display(),
                found.map_or_else(|| format!("unrecognised ({})", text.trim()), |v| format!("PostgreSQL {v}"))
            ),
        }),
    }
}

/// Runs recovery to its end; `Err(OutOfReach)` when PostgreSQL reports that the target lies
/// beyond what the archive holds.
pub fn recover(dir: &Path, timeout: Duration) -> Result<Recovered, Error> {
    let fail = |detail: String| Error::Database { detail };
    let owner = fs::metadata(dir).map_err(|e| fail(e.to_string()))?;
    let sockets = std::env::temp_dir().join(format!("drctl-recovery-{}", std::process::id()));
    fs::create_dir_all(&sockets).map_err(|e| fail(e.to_string()))?;
    std::os::unix::fs::chown(&sockets, Some(owner.uid()), Some(owner.gid())).map_err(|e| fail(e.to_string()))?;
    let log_path = sockets.join("postgres.log");
    let log = fs::File::create(&log_path).map_err(|e| fail(e.to_string()))?;
    let port = 50000 + (std::process::id() % 10000);
    let mut server = Command::new(find_program("postgres"));
    server
        .arg("-D")
        .arg(dir)
        .args(["-c", "listen_addresses=", "-c", &format!("port={port}"), "-c", "archive_mode=off"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", sockets.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .current_dir(dir);
    // SAFETY: geteuid has no preconditions. PostgreSQL refuses to run as root.
    if unsafe { libc::geteuid() } == 0 {
        server.uid(owner.uid()).gid(owner.gid());
    }
    let mut child = server.spawn().map_err(|e| fail(format!("cannot start postgres: {e}")))?;
    let read_log = || fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + timeout;
    let result = loop {
        if let Some(status) = child.try_wait().map_err(|e| fail(e.to_string()))? {
            let log = read_log();
            break Err(if log.contains("recovery ended before configured recovery target was reached") {
                let last = log_line(&log, "last completed transaction was at log time")
                    .map(|l| format!(" (the {l})"))
                    .unwrap_or_default();
                tracing::debug!(log = %tail(&log), "recovery ended early");
                Error::OutOfReach {
                    detail: format!(
                        "the WAL archive ends before the recovery target{last}; for a transaction id older than the \
                         base backup used, name an older SNAPSHOT"
                    ),
                }
            } else {
                fail(format!("postgres stopped during recovery ({status}):\n{}", tail(&log)))
            });
        }
        // Promotion is over when the control file says so. recovery.signal goes earlier, and
        // the server answers connections (hot standby) earlier still: a shutdown in between
        // leaves it "shut down in recovery", and its next start replays, with no target, the WAL
        // past the target.
        let promoted = !dir.join("recovery.signal").exists() && cluster_state(dir).as_deref() == Some("in production");
        if promoted {
            let log = read_log();
            break Ok(Recovered {
                stop: log_line(&log, "recovery stopping"),
                last_transaction: log_line(&log, "last completed transaction was at log time"),
            });
        }
        if Instant::now() >= deadline {
            break Err(fail(format!("recovery did not finish within {} s:\n{}", timeout.as_secs(), tail(&read_log()))));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // A clean (fast) shutdown either way; the promoted directory is then ready to start.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let _ = child.wait();
    let _ = fs::remove_dir_all(&sockets);
    if result.is_ok() {
        queue_for_archiving(dir, &owner)
            .map_err(|e| fail(format!("cannot mark the new timeline for archiving: {e}")))?;
    }
    result
}

/// The "Database cluster state" pg_controldata reads from the control file.
fn cluster_state(dir: &Path) -> Option<String> {
    let out = Command::new(find_program("pg_controldata")).arg(dir).env("LC_ALL", "C").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find_map(|l| l.strip_prefix("Database cluster state:"))?;
    Some(line.trim().to_string())
}

/// Recovery ran with archiving off, so PostgreSQL did not queue the new timeline's history file
/// (nor the old timeline's last, partial segment) for archiving. Marking them `.ready` lets the
/// server archive them once it runs with its own archive settings: a later point-in-time restore
/// onto the new timeline needs that history file. A copy that never archives (a drill) is
/// unaffected.
fn queue_for_archiving(dir: &Path, owner: &fs::Metadata) -> std::io::Result<()> {
    let status = dir.join("pg_wal/archive_status");
    for entry in fs::read_dir(dir.join("pg_wal"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let queued = ["ready", "done"].iter().any(|s| status.join(format!("{name}.{s}")).exists());
        if (name.ends_with(".history") || name.ends_with(".partial")) && !queued {
            let marker = status.join(format!("{name}.ready"));
            fs::write(&marker, b"")?;
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                std::os::unix::fs::chown(&marker, Some(owner.uid()), Some(owner.gid()))?;
            }
        }
    }
    Ok(())
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn major_version_from_postgres_version() {
        assert_eq!(
            super::major_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n").as_deref(),
            Some("15")
        );
        assert_eq!(super::major_version("postgres (PostgreSQL) 17beta1").as_deref(), Some("17beta1"));
        assert_eq!(super::major_version("garbage"), None);
    }
}

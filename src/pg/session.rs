//! One SQL session held open across a local-mode base backup. `pg_backup_start` and
//! `pg_backup_stop` must run on the same connection, with the files copied in between; psql
//! serves as the client, so every libpq connection setting (service files, .pgpass, sslmode,
//! PG* variables) works exactly as with the other PostgreSQL tools. If drctl dies, psql's
//! connection closes and the server aborts the backup by itself.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::Duration;

use super::Error;
use super::basebackup::collect_stderr;

/// Printed after each statement, so a multi-line answer has a clear end.
const END: &str = "--drctl-end-of-answer--";

pub struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// The server's major version: before 15 the backup functions have other names.
    major: u32,
}

/// What `pg_backup_stop` returns: the end of the backup's WAL range and the files a restore needs.
#[derive(Debug, Clone)]
pub struct BackupStop {
    pub lsn: String,
    pub backup_label: String,
    pub tablespace_map: String,
    /// WAL files (the last segment, the backup history file) the server did not wait to be
    /// archived: the backup is restorable once they are ([`super::archiver::wait_archived`]).
    pub archive_pending: Vec<String>,
}

impl Session {
    pub fn connect(conn: &super::Conn) -> Result<Session, Error> {
        let mut child = conn
            .client(&super::programs::psql())
            .args(["-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d", &conn.dsn])
            .env("PGAPPNAME", "drctl")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Database { detail: format!("cannot run psql: {e}") })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let stderr = Some(collect_stderr(&mut child));
        let mut session = Session { child, stdin, stdout, stderr, major: 0 };
        let version = session.query("SHOW server_version_num")?;
        session.major = version.trim().parse::<u32>().map_err(|_| unexpected("server_version_num", &version))? / 10000;
        // The session idles while files are copied: no server-side timeout may end it.
        if session.major >= 14 {
            session.query("SET idle_session_timeout = 0")?;
        }
        session.query("SET statement_timeout = 0")?;
        Ok(session)
    }

    /// Runs one statement; returns its unaligned, tuples-only output.
    pub fn query(&mut self, sql: &str) -> Result<String, Error> {
        let sent = writeln!(self.stdin, "{sql};\n\\echo {END}").and_then(|_| self.stdin.flush());
        let mut answer = String::new();
        loop {
            let mut line = String::new();
            let read = match sent {
                Ok(()) => self.stdout.read_line(&mut line),
                Err(ref e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            match read {
                Ok(0) | Err(_) => return Err(self.failure(sql)),
                Ok(_) if line.trim_end() == END => return Ok(answer.trim_end_matches('\n').to_string()),
                Ok(_) => answer.push_str(&line),
            }
        }
    }

    /// The session ended (psql stops at the first error): its stderr names the cause.
    fn failure(&mut self, sql: &str) -> Error {
        let _ = self.child.wait();
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        let detail = match stderr.trim() {
            "" => format!("the SQL session ended during {sql:?}"),
            text => text.to_string(),
        };
        Error::Database { detail }
    }

    /// Starts a non-exclusive backup with an immediate checkpoint; returns the start LSN.
    pub fn backup_start(&mut self, label: &str) -> Result<String, Error> {
        let label = label.replace('\'', "''");
        match self.major {
            15.. => self.query(&format!("SELECT pg_backup_start('{label}', true)")),
            _ => self.query(&format!("SELECT pg_start_backup('{label}', true, false)")),
        }
    }

    /// Ends the backup. The server's own wait for its last WAL segment to be archived looks
    /// once a second, which cost every backup most of a second; so on a primary, when the
    /// caller can see the server's `pg_wal` (`can_wait`), the backup ends without it and
    /// [`BackupStop::archive_pending`] names what to wait for. Otherwise, and on a standby
    /// (where the server waits only with archive_mode = always), the server waits, and gives
    /// up after `archive_timeout` (archive_command failing), which aborts the backup.
    pub fn backup_stop(&mut self, can_wait: bool, archive_timeout: Duration) -> Result<BackupStop, Error> {
        let settings = self.query("SELECT pg_is_in_recovery(), current_setting('archive_mode')")?;
        let (standby, archiving) = match settings.trim().split_once('|') {
            Some((standby, mode)) => (standby == "t", mode != "off"),
            None => return Err(unexpected("the backup settings", &settings)),
        };
        let own_wait = can_wait && !standby && archiving;
        let wait = if own_wait { "false" } else { "true" };
        self.query(&format!("SET statement_timeout = {}", archive_timeout.as_millis()))?;
        let function = match self.major {
            15.. => format!("pg_backup_stop({wait})"),
            _ => format!("pg_stop_backup(false, {wait})"),
        };
        let answer = self
            .query(&format!(
                "SELECT lsn, encode(convert_to(labelfile, 'UTF8'), 'hex'), \
                 encode(convert_to(coalesce(spcmapfile, ''), 'UTF8'), 'hex') FROM {function}"
            ))
            .map_err(|e| match e {
                Error::Database { detail } if detail.contains("statement timeout") => {
                    Error::ArchiveStalled { seconds: archive_timeout.as_secs() }
                }
                other => other,
            })?;
        let fields: Vec<&str> = answer.trim().split('|').collect();
        let text = |h: &str| hex::decode(h).ok().and_then(|b| String::from_utf8(b).ok());
        let mut stop = match fields.as_slice() {
            [lsn, label, map] => BackupStop {
                lsn: lsn.to_string(),
                backup_label: text(label).ok_or_else(|| unexpected("pg_backup_stop", &answer))?,
                tablespace_map: text(map).ok_or_else(|| unexpected("pg_backup_stop", &answer))?,
                archive_pending: Vec::new(),
            },
            _ => return Err(unexpected("pg_backup_stop", &answer)),
        };
        if own_wait {
            // The names the server's wait checks: the segment holding the byte before the stop
            // LSN, and the backup history file named after the start LSN.
            let start = super::basebackup::parse_backup_label(&stop.backup_label)
                .ok_or_else(|| unexpected("pg_backup_stop", &stop.backup_label))?
                .start_lsn;
            for lsn in [&start, &stop.lsn] {
                super::wal::parse_lsn(lsn).ok_or_else(|| unexpected("pg_backup_stop", lsn))?;
            }
            let names = self.query(&format!(
                "SELECT pg_walfile_name('{lsn}'), file_name || '.' || lpad(upper(to_hex(file_offset)), 8, '0') \
                 || '.backup' FROM pg_walfile_name_offset('{start}')",
                lsn = stop.lsn
            ))?;
            stop.archive_pending = names.trim().split('|').map(str::to_string).collect();
            if stop.archive_pending.len() != 2 || stop.archive_pending.iter().any(|n| n.is_empty() || n.contains('/')) {
                return Err(unexpected("pg_backup_stop", &names));
            }
        }
        Ok(stop)
    }
}

fn unexpected(what: &str, answer: &str) -> Error {
    Error::Database { detail: format!("unexpected answer from {what}: {answer:?}") }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! PostgreSQL servers drctl runs itself, privately ([`Private`]: no TCP listener, a socket in a
//! private folder, archiving off): recovery of a restored data directory, watched until the
//! server has promoted (PostgreSQL removes recovery.signal at the end of recovery) or failed,
//! then shut down cleanly, leaving a promoted data directory for the operator; and the scratch
//! clusters drills open, check and remove.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Error;
use super::programs;

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

/// A server run privately on a data directory: no TCP listener, its socket in a fresh folder
/// only its owner can enter, archiving off, SSL off (the backup's certificate paths need not
/// exist here), and its own pg_hba.conf trusting local connections only, so drctl can connect to
/// a restored cluster whatever roles and passwords it holds. Stopped (fast) when dropped.
pub struct Private {
    child: std::process::Child,
    sockets: std::path::PathBuf,
    port: u16,
    owner: fs::Metadata,
    major: u32,
}

impl Private {
    /// Starts `postgres` on `dir`; `env` are variables the server (and the commands it runs) get.
    pub fn start(dir: &Path, env: &[(String, String)]) -> Result<Private, Error> {
        let fail = |what: &str, e: std::io::Error| Error::Database { detail: format!("{what}: {e}") };
        let owner = fs::metadata(dir).map_err(|e| fail(&format!("cannot read {}", dir.display()), e))?;
        let (postgres, major) = programs::for_data_directory("postgres", dir)?;
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).map_err(|e| Error::Database { detail: format!("no randomness: {e}") })?;
        let tag = hex::encode(random);
        let sockets = std::env::temp_dir().join(format!("drctl-pg-{tag}"));
        let made = (|| {
            fs::create_dir(&sockets)?;
            fs::set_permissions(&sockets, fs::Permissions::from_mode(0o700))?;
            fs::write(
                sockets.join("pg_hba.conf"),
                "# drctl: a private server, reached by its socket only\nlocal all all trust\n",
            )?;
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                for path in [sockets.clone(), sockets.join("pg_hba.conf")] {
                    std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid()))?;
                }
            }
            fs::File::create(sockets.join("postgres.log"))
        })();
        let log = made.map_err(|e| fail(&format!("cannot prepare {}", sockets.display()), e))?;
        let port = 40000 + u16::from_le_bytes([random[0], random[1]]) % 20000;
        let mut server = Command::new(postgres);
        server.arg("-D").arg(dir);
        let hba = format!("hba_file={}", sockets.join("pg_hba.conf").display());
        let socket_dir = format!("unix_socket_directories={}", sockets.display());
        let port_setting = format!("port={port}");
        for setting in ["listen_addresses=", &port_setting, &socket_dir, &hba, "archive_mode=off", "ssl=off"] {
            server.arg("-c").arg(setting);
        }
        server.envs(env.iter().map(|(k, v)| (k, v)));
        server.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).current_dir(dir);
        if unsafe { libc::geteuid() } == 0 {
            server.uid(owner.uid()).gid(owner.gid());
        }
        let child = match server.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = fs::remove_dir_all(&sockets);
                return Err(fail("cannot start postgres", e));
            }
        };
        Ok(Private { child, sockets, port, owner, major })
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.sockets.join("postgres.log")).unwrap_or_default()
    }

    /// The last lines of the log, for messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log())
    }

    /// The exit status, once the server has stopped by itself.
    pub fn exited(&mut self) -> Result<Option<std::process::ExitStatus>, Error> {
        self.child.try_wait().map_err(|e| Error::Database { detail: format!("cannot watch postgres: {e}") })
    }

    /// A connection to `database` as `user` through the private socket.
    pub fn conn(&self, user: &str, database: &str) -> super::Conn {
        super::Conn::new(super::conninfo(&[
            ("host", Some(self.sockets.display().to_string())),
            ("port", Some(self.port.to_string())),
            ("user", Some(user.to_string())),
            ("dbname", Some(database.to_string())),
        ]))
    }

    /// The environment a client program reaches this server as `user` with.
    pub fn client_env(&self, user: &str) -> Vec<(&'static str, String)> {
        vec![("PGHOST", self.sockets.display().to_string()), ("PGPORT", self.port.to_string()), ("PGUSER", user.into())]
    }

    /// Waits until the server accepts connections, then connects as its bootstrap superuser
    /// (whatever its name: the roles in `candidates` are tried, any one that exists will do to
    /// ask), to template1, which every cluster has. Returns the superuser's name and the session.
    pub fn superuser_session(
        &mut self,
        candidates: &[String],
        timeout: Duration,
    ) -> Result<(String, super::sql::Session), Error> {
        use super::sql::{CONNECT_TIMEOUT, Reach, Session, reach};
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        loop {
            if let Some(status) = self.exited()? {
                return Err(Error::database(format!("postgres stopped ({status}):\n{}", self.log_tail())));
            }
            for user in candidates {
                match reach(&self.conn(user, "template1"), CONNECT_TIMEOUT)? {
                    Reach::Connected(mut session) => {
                        let superuser: String = session.value("SELECT rolname::text FROM pg_roles WHERE oid = 10")?;
                        if &superuser == user {
                            return Ok((superuser, session));
                        }
                        let session = Session::connect(&self.conn(&superuser, "template1"), CONNECT_TIMEOUT)?;
                        return Ok((superuser, session));
                    }
                    Reach::Refused(why) | Reach::Unreachable(why) => last = why,
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::database(format!(
                    "the server did not accept a connection within {} s (as {}): {last}\n{}",
                    timeout.as_secs(),
                    candidates.join(", "),
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The owner of the data directory (the server's user).
    /// The server's major version.
    pub fn major(&self) -> u32 {
        self.major
    }

    pub fn owner(&self) -> &fs::Metadata {
        &self.owner
    }

    /// A fast shutdown (SIGINT: sessions ended, a checkpoint, a clean stop), waited for.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
            let _ = self.child.wait();
        }
        let _ = fs::remove_dir_all(&self.sockets);
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Creates a new, empty cluster in `dir` (which must not exist) for a scratch restore, its
/// superuser `postgres`, with the newest PostgreSQL installed (a dump restores into a newer
/// server, never an older one). PostgreSQL refuses to run as root: as root, the cluster belongs
/// to, and runs as, the system user `postgres`.
pub fn init_scratch(dir: &Path) -> Result<(), Error> {
    let fail = |detail: String| Error::Database { detail };
    let (initdb, _) = programs::newest_server_program("initdb", "a scratch cluster for a dump")?;
    fs::create_dir(dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| fail(e.to_string()))?;
    let mut initdb = Command::new(initdb);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = system_user("postgres").ok_or_else(|| {
            fail(
                "a scratch cluster cannot run as root and there is no `postgres` user to run it as; run drctl as \
                  an unprivileged user"
                    .into(),
            )
        })?;
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| fail(e.to_string()))?;
        initdb.uid(uid).gid(gid).current_dir("/");
    }
    let out = initdb
        .args(["--username=postgres", "--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C", "-D"])
        .arg(dir)
        .output()
        .map_err(|e| fail(format!("cannot run initdb: {e}")))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(fail(format!("initdb failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))),
    }
}

/// The system users of /etc/passwd: name, uid, gid.
fn system_users() -> Vec<(String, u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entry = |line: &str| {
        let fields: Vec<&str> = line.split(':').collect();
        Some((fields.first()?.to_string(), fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
    };
    passwd.lines().filter_map(entry).collect()
}

/// The uid and gid of the system user `name`.
fn system_user(name: &str) -> Option<(u32, u32)> {
    system_users().into_iter().find(|(n, ..)| n == name).map(|(_, uid, gid)| (uid, gid))
}

/// The name of the system user `uid`.
pub fn user_name(uid: u32) -> Option<String> {
    system_users().into_iter().find(|(_, u, _)| *u == uid).map(|(name, ..)| name)
}

/// Runs recovery to its end; `Err(OutOfReach)` when PostgreSQL reports that the target lies
/// beyond what the archive holds.
pub fn recover(dir: &Path, timeout: Duration, env: &[(String, String)]) -> Result<Recovered, Error> {
    let fail = |detail: String| Error::Database { detail };
    let mut server = Private::start(dir, env)?;
    let deadline = Instant::now() + timeout;
    let result = loop {
        if let Some(status) = server.exited()? {
            let log = server.log();
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
        let promoted = !dir.join("recovery.signal").exists() && in_production(dir);
        if promoted {
            let log = server.log();
            break Ok(Recovered {
                stop: log_line(&log, "recovery stopping"),
                last_transaction: log_line(&log, "last completed transaction was at log time"),
            });
        }
        if Instant::now() >= deadline {
            break Err(fail(format!("recovery did not finish within {} s:\n{}", timeout.as_secs(), server.log_tail())));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // A clean (fast) shutdown either way; the promoted directory is then ready to start.
    let owner = server.owner().clone();
    server.stop();
    if result.is_ok() {
        queue_for_archiving(dir, &owner)
            .map_err(|e| fail(format!("cannot mark the new timeline for archiving: {e}")))?;
    }
    result
}

/// Whether the control file says the cluster is in production (promoted): `state`, the third
/// field of `ControlFileData` after two u64/u32 pairs, is `DB_IN_PRODUCTION` (6) in every version
/// drctl supports. Read directly: the data directory's own pg_controldata may not be installed.
fn in_production(dir: &Path) -> bool {
    control_in_production(&fs::read(dir.join("global/pg_control")).unwrap_or_default())
}

/// [`in_production`] on the bytes of a pg_control file.
pub(crate) fn control_in_production(control: &[u8]) -> bool {
    const STATE_OFFSET: usize = 16;
    const DB_IN_PRODUCTION: u32 = 6;
    let state = control.get(STATE_OFFSET..STATE_OFFSET + 4).map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")));
    state == Some(DB_IN_PRODUCTION)
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

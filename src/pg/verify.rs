//! Verifying a restored cluster with PostgreSQL's own tools: `pg_amcheck` on a running server
//! (every table's pages, and with `--heapallindexed` every index against its table) and
//! `pg_checksums --check` on a stopped one (every page's checksum, when the cluster has them).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use super::Error;
use super::programs;

/// What a verification found: `Ok(summary)` when clean, `Err(what it saw)` otherwise.
pub type Verdict = Result<String, String>;

/// Refuses, before a drill restores anything, a machine that lacks a program the drill of a
/// PostgreSQL `major` base backup runs: that version's postgres, pg_controldata and pg_checksums,
/// and a pg_amcheck at least as new.
pub fn require_programs(major: u32) -> Result<(), Error> {
    let purpose = format!("a drill of a PostgreSQL {major} base backup");
    for name in ["postgres", "pg_controldata", "pg_checksums"] {
        programs::server(name, major, &purpose)?;
    }
    programs::client("pg_amcheck", major, &purpose)?;
    Ok(())
}

/// `pg_amcheck --all --heapallindexed` through the connection `env` describes (PGHOST, PGPORT,
/// PGUSER) to a server of version `major`, installing the amcheck extension where it is missing
/// (a scratch cluster only).
pub fn amcheck(env: &[(&str, String)], major: u32, jobs: usize) -> Result<Verdict, Error> {
    let program = programs::client("pg_amcheck", major, &format!("checking a PostgreSQL {major} cluster"))?;
    let mut command = Command::new(&program);
    command.args([
        "--all",
        "--heapallindexed",
        "--install-missing",
        "--no-password",
        "--jobs",
        &jobs.max(1).to_string(),
    ]);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().map_err(|e| Error::database(format!("cannot run {}: {e}", program.display())))?;
    Ok(verdict(&out, "every table and index of every database is intact"))
}

/// Whether the stopped cluster in `dir` has data checksums (pg_controldata's "Data page checksum
/// version" is not 0).
pub fn has_checksums(dir: &Path) -> Result<bool, Error> {
    let out = as_owner(
        Command::new(programs::for_data_directory("pg_controldata", dir)?.0).arg(dir).env("LC_ALL", "C"),
        dir,
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.lines().find_map(|l| l.strip_prefix("Data page checksum version:")).map(str::trim);
    match version {
        Some(v) => Ok(v != "0"),
        None => Err(Error::database(format!("pg_controldata cannot read {}: {}", dir.display(), said(&out)))),
    }
}

/// `pg_checksums --check` on the stopped cluster in `dir`.
pub fn checksums(dir: &Path) -> Result<Verdict, Error> {
    let out = as_owner(
        Command::new(programs::for_data_directory("pg_checksums", dir)?.0).arg("--check").arg("-D").arg(dir),
        dir,
    )?;
    Ok(verdict(&out, "every page's checksum matches"))
}

/// Runs `command` as the owner of `dir` (PostgreSQL's tools refuse root, and the files are the
/// server user's).
fn as_owner(command: &mut Command, dir: &Path) -> Result<Output, Error> {
    let owner = std::fs::metadata(dir).map_err(|e| Error::database(format!("cannot read {}: {e}", dir.display())))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        command.uid(owner.uid()).gid(owner.gid());
    }
    let program = command.get_program().to_string_lossy().into_owned();
    command.output().map_err(|e| Error::database(format!("cannot run {program}: {e}")))
}

fn verdict(out: &Output, clean: &str) -> Verdict {
    match out.status.success() {
        true => Ok(clean.to_string()),
        false => Err(format!("{} ({})", said(out), out.status)),
    }
}

/// What a tool said on both streams, at most 20 lines.
fn said(out: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let shown = lines.iter().take(20).copied().collect::<Vec<_>>().join("; ");
    match lines.len() > 20 {
        true => format!("{shown}; … {} more line(s)", lines.len() - 20),
        false => shown,
    }
}

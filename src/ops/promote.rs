//! Promoting a streaming standby, behind safety gates that refuse to lose data nobody said may be
//! lost: it must be a standby, replaying, of the cluster the repository archives; the old
//! primary must be fenced; its replay lag within bounds; and the archive whole up to where it
//! replayed, so the new timeline continues a recoverable history. Then `pg_promote`, the first
//! write, the timeline one higher, and the new timeline's history file in the repository.

use std::time::{Duration, Instant};

use super::policy_repos::{self, Reach, location_of};
use super::{Error, Result, copy};
use crate::pg::sql::{CONNECT_TIMEOUT, Session};
use crate::pg::standby::{self, Fence, ServerState};
use crate::pg::wal::{WalName, format_lsn};
use crate::pg::window::Archive;
use crate::pg::{Conn, sql};
use crate::repo::snapshot::PgBackup;
use crate::repo::{Repository, wal};

/// What to promote and how careful to be.
#[derive(Debug, Clone)]
pub struct PromoteOptions {
    /// The standby.
    pub standby: Conn,
    /// The old primary, checked to be fenced; `None`: where the standby streams from.
    pub fence_primary: Option<Conn>,
    /// Take the old primary as fenced without checking (it was shut off by other means).
    pub assume_fenced: bool,
    /// The most WAL the standby may have received but not replayed.
    pub max_lag_bytes: u64,
    /// The most time replay may trail the primary's last commit.
    pub max_lag_seconds: Option<f64>,
    /// A planned move: the primary is shut down cleanly first, so wait for replay to catch up
    /// and accept no lag at all.
    pub switchover: bool,
    /// Evaluate every gate, change nothing.
    pub dry_run: bool,
    /// How long catching up, promotion, the first write and the history file may each take.
    pub wait: Duration,
    /// The copies a policy names: the new timeline's history file (and the WAL they lack) is
    /// copied to each, so a restore from any of them follows the new timeline.
    pub copies: Vec<crate::policy::Repository>,
    /// How the copies are reached.
    pub reach: Reach,
}

/// One bound on replay lag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lag {
    Bytes(u64),
    Seconds(f64),
}

/// A lag bound: a duration ("30s", "2m") or a size ("16MiB", "512kB", "1048576").
pub fn parse_lag(text: &str) -> std::result::Result<Lag, String> {
    let text = text.trim();
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(Lag::Seconds(d.as_secs_f64()));
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is neither a size (16MiB) nor a duration (30s)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1000 * 1000,
        "MiB" => 1 << 20,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}: use B, kB, KiB, MB, MiB, GB or GiB")),
    };
    number.checked_mul(scale).map(Lag::Bytes).ok_or_else(|| format!("{text:?} is too large"))
}

/// The size bound among `lags` (16 MiB when none is given).
pub fn lag_bytes(lags: &[Lag]) -> u64 {
    lags.iter().find_map(|l| if let Lag::Bytes(b) = l { Some(*b) } else { None }).unwrap_or(16 << 20)
}

/// The time bound among `lags`, if one is given.
pub fn lag_seconds(lags: &[Lag]) -> Option<f64> {
    lags.iter().find_map(|l| if let Lag::Seconds(s) = l { Some(*s) } else { None })
}

/// One safety gate: what it checks, what it measured, and (when it refuses) how to fix it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Gate {
    pub name: &'static str,
    pub passed: bool,
    pub measured: String,
    pub fix: Option<String>,
}

/// What promotion found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Promotion {
    pub gates: Vec<Gate>,
    pub dry_run: bool,
    pub promoted: bool,
    pub timeline_before: u32,
    pub timeline_after: Option<u32>,
    /// WAL the standby had received but not replayed when promoted (replayed by promotion).
    pub replay_lag_bytes: u64,
    /// How far replay trailed the primary's last commit when promoted.
    pub replay_lag_seconds: f64,
    /// `pg_promote` to the first write accepted: this step's part of the RTO.
    pub promote_seconds: Option<f64>,
    /// The first write to the new timeline's history file in the repository.
    pub history_archived_seconds: Option<f64>,
    /// The policy's copies that hold the history file now, and how long each took.
    pub history_copies: Vec<HistoryCopy>,
    pub total_seconds: f64,
}

/// A copy the new timeline's history file reached.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryCopy {
    pub repository: String,
    pub wal_copied: usize,
    pub seconds: f64,
}

impl Promotion {
    /// The gates that refused.
    pub fn refusals(&self) -> Vec<&Gate> {
        self.gates.iter().filter(|g| !g.passed).collect()
    }
}

/// Evaluates the gates and, unless one refuses or this is a dry run, promotes. A refusal is
/// [`Error::Refused`] after `report` has seen the gates; nothing was changed then.
pub fn promote(repo: &Repository, options: &PromoteOptions, report: &mut dyn FnMut(&Promotion)) -> Result<Promotion> {
    let started = Instant::now();
    let mut session = Session::connect(&options.standby, CONNECT_TIMEOUT)?;
    let mut state = standby::state(&mut session)?;
    let mut promotion = Promotion { dry_run: options.dry_run, timeline_before: state.timeline, ..Default::default() };
    let fenced = fence_gate(options, &state);
    // The repository's base backups, read once for the gates that judge them.
    let backups: Vec<PgBackup> = repo.snapshots()?.into_iter().filter_map(|(_, s)| s.pg).collect();
    if options.switchover && fenced.passed && !options.dry_run {
        state = catch_up(&mut session, state, options.wait)?;
    }
    promotion.gates = vec![
        gate(
            "a standby",
            state.in_recovery,
            format!("pg_is_in_recovery() = {}", state.in_recovery),
            "give --pg the standby's connection string; this server is a primary already",
        ),
        gate(
            "replay running",
            !state.replay_paused,
            format!("pg_is_wal_replay_paused() = {}", state.replay_paused),
            "resume replay with `SELECT pg_wal_replay_resume()` once you know why it was paused (a paused \
             standby may be held back on purpose, e.g. before bad data), then promote again",
        ),
        cluster_gate(&backups, &state),
        fenced,
        lag_gate(options, &state),
        archive_gate(repo, &backups, &state)?,
    ];
    promotion.replay_lag_bytes = state.replay_lag_bytes();
    promotion.replay_lag_seconds = state.replay_lag_seconds;
    if !promotion.refusals().is_empty() || options.dry_run {
        promotion.total_seconds = started.elapsed().as_secs_f64();
        report(&promotion);
        return verdict(&promotion.gates).map(|()| promotion);
    }

    let promote_took = standby::promote(&mut session, options.wait)?;
    promotion.promoted = true;
    promotion.promote_seconds = Some(promote_took.as_secs_f64());
    let after = standby::state(&mut session)?;
    promotion.timeline_after = Some(after.timeline);
    if after.timeline != state.timeline + 1 {
        return Err(Error::Promotion(format!(
            "the server was promoted, but it writes timeline {} where {} was expected",
            after.timeline,
            state.timeline + 1
        )));
    }
    let history = WalName::parse(&format!("{:08X}.history", after.timeline)).expect("a valid history file name");
    let waited = Instant::now();
    while !repo.store().exists(&wal::key_of(&history))? {
        if waited.elapsed() > options.wait {
            return Err(Error::Promotion(format!(
                "the server was promoted to timeline {}, but its history file {history} did not reach the repository \
                 within {:?}: check the new primary's archive_command and pg_stat_archiver",
                after.timeline, options.wait
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    promotion.history_archived_seconds = Some(promote_took.as_secs_f64() + waited.elapsed().as_secs_f64());
    for target in &options.copies {
        promotion.history_copies.push(history_to_copy(repo, target, &options.reach, &history, after.timeline)?);
    }
    promotion.total_seconds = started.elapsed().as_secs_f64();
    report(&promotion);
    Ok(promotion)
}

/// Copies the WAL archive (the new history file with it, no snapshots) to one of the policy's
/// copies, and checks that the history file is there.
fn history_to_copy(
    repo: &Repository,
    target: &crate::policy::Repository,
    reach: &Reach,
    history: &WalName,
    timeline: u32,
) -> Result<HistoryCopy> {
    let started = Instant::now();
    let location = location_of(target);
    let missed = |why: String| {
        Error::Promotion(format!(
            "the server was promoted to timeline {timeline} and its history file {history} is in the repository, \
             but not in the copy {location}: {why}; once that is fixed, the policy's job (`drctl backup --policy`) \
             copies it"
        ))
    };
    let options = copy::Options { snapshots: Some(Vec::new()), wal: true, jobs: 4 };
    let copied = policy_repos::copy_to(repo, target, reach, &options).map_err(|e| missed(super::with_causes(&e)))?;
    let store = policy_repos::access_of(target, reach).store()?;
    if !store.exists(&wal::key_of(history))? {
        return Err(missed("the copy finished without it".into()));
    }
    Ok(HistoryCopy {
        repository: location,
        wal_copied: copied.report.wal_copied,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Nothing, or the refusal of the gates that refused.
pub(super) fn verdict(gates: &[Gate]) -> Result<()> {
    let names: Vec<&'static str> = gates.iter().filter(|g| !g.passed).map(|g| g.name).collect();
    match names.len() {
        0 => Ok(()),
        count => Err(Error::Refused { count, names }),
    }
}

pub(super) fn gate(name: &'static str, passed: bool, measured: String, fix: &str) -> Gate {
    Gate { name, passed, measured, fix: (!passed).then(|| fix.to_string()) }
}

/// The standby belongs to the cluster whose base backups the repository holds.
fn cluster_gate(backups: &[PgBackup], state: &ServerState) -> Gate {
    let mut systems: Vec<String> = backups.iter().map(|pg| pg.system_identifier.clone()).collect();
    systems.sort();
    systems.dedup();
    let passed = systems.contains(&state.system_identifier);
    let measured = match systems.is_empty() {
        true => format!("system identifier {}; the repository holds no base backup", state.system_identifier),
        false => format!(
            "system identifier {}; the repository's base backups: {}",
            state.system_identifier,
            systems.join(", ")
        ),
    };
    gate(
        "the repository's cluster",
        passed,
        measured,
        "give --repo the repository this cluster archives into (and back it up there if it never was): its new \
         timeline must continue a history the repository can restore",
    )
}

/// The old primary cannot take writes any more.
fn fence_gate(options: &PromoteOptions, state: &ServerState) -> Gate {
    let fix = "stop the old primary (or cut it off from clients and make it read-only), or give --assume-fenced if \
               it was shut off by other means; two writable primaries split the data";
    if options.assume_fenced {
        return gate("old primary fenced", true, "assumed (--assume-fenced)".into(), fix);
    }
    let target = options.fence_primary.clone().or_else(|| state.primary_conninfo.clone().map(Conn::new));
    let Some(target) = target else {
        return gate(
            "old primary fenced",
            false,
            "unknown: no --fence-primary and the standby has no primary_conninfo".into(),
            "give --fence-primary DSN of the old primary, or --assume-fenced",
        );
    };
    let (passed, measured) = match standby::fence(&target, Duration::from_secs(5)) {
        Fence::Unreachable(why) => (true, format!("unreachable ({why})")),
        Fence::ReadOnly(why) => (true, format!("read-only: {why}")),
        Fence::Writable => (false, "it answers and accepts writes".into()),
        Fence::Unknown(why) => (false, format!("cannot tell: {why}")),
    };
    let host = sql::parse_conninfo(&target.dsn)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "host" || k == "hostaddr").map(|(_, v)| v))
        .unwrap_or_else(|| "the old primary".into());
    gate("old primary fenced", passed, format!("{host}: {measured}"), fix)
}

/// Replay lag within the bounds (none at all for a switchover).
fn lag_gate(options: &PromoteOptions, state: &ServerState) -> Gate {
    let (bytes, seconds) = (state.replay_lag_bytes(), state.replay_lag_seconds);
    let max_bytes = if options.switchover { 0 } else { options.max_lag_bytes };
    let passed = bytes <= max_bytes && options.max_lag_seconds.is_none_or(|max| seconds <= max);
    gate(
        "replay lag",
        passed,
        format!("{bytes} bytes and {seconds:.1} s behind what it received (at most {max_bytes} bytes allowed)"),
        "let the standby replay what it received (see pg_stat_wal_receiver and the server log), or raise --max-lag \
         if losing that much is acceptable",
    )
}

/// Every WAL segment from the newest base backup (or the oldest archived segment) of the
/// standby's timeline up to the one it replays is in the archive.
fn archive_gate(repo: &Repository, backups: &[PgBackup], state: &ServerState) -> Result<Gate> {
    let names: Vec<WalName> = wal::list(repo.store())?.into_iter().map(|(n, _)| n).collect();
    let archive = Archive::new(&names, state.segment_size);
    let backup_start = backups
        .iter()
        .filter(|pg| pg.system_identifier == state.system_identifier && pg.timeline == state.timeline)
        .filter_map(|pg| crate::pg::wal::parse_lsn(&pg.start_lsn))
        .max();
    let replayed = state.replayed_lsn.unwrap_or(0);
    let upto = replayed - replayed % state.segment_size;
    let Some(from) = backup_start.or_else(|| archive.oldest(state.timeline)) else {
        return Ok(gate(
            "archive gap-free",
            false,
            format!("the archive holds no WAL of timeline {}", state.timeline),
            "set the standby's archive_mode = always (or fix the primary's archive_command) so the WAL it \
             replayed is archived; without it no restore reaches the promotion point",
        ));
    };
    let missing = if upto > from {
        archive.missing_for(state.timeline, &format_lsn(from), &format_lsn(upto))
    } else {
        Vec::new()
    };
    let measured = match missing.as_slice() {
        [] => format!("timeline {} archived from {} up to {}", state.timeline, format_lsn(from), format_lsn(upto)),
        [one] => format!("{one} is not archived"),
        [first, .., last] => format!("{} segments are not archived ({first} .. {last})", missing.len()),
    };
    Ok(gate(
        "archive gap-free",
        missing.is_empty(),
        measured,
        "archive the missing segments first (from the old primary's pg_wal, or the standby's with archive_mode = \
         always: `drctl wal-push` each one); after promotion the new timeline would continue a history no restore \
         can replay",
    ))
}

/// For a switchover: waits until the standby has replayed everything it received.
fn catch_up(session: &mut Session, mut state: ServerState, wait: Duration) -> Result<ServerState> {
    let started = Instant::now();
    while state.replay_lag_bytes() > 0 && !state.replay_paused && started.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(200));
        state = standby::state(session)?;
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_bounds_are_sizes_or_durations() {
        assert_eq!(parse_lag("16MiB"), Ok(Lag::Bytes(16 << 20)));
        assert_eq!(parse_lag("512kB"), Ok(Lag::Bytes(512_000)));
        assert_eq!(parse_lag("4096"), Ok(Lag::Bytes(4096)));
        assert_eq!(parse_lag("30s"), Ok(Lag::Seconds(30.0)));
        assert!(parse_lag("16 parsecs").is_err());
        assert!(parse_lag("lots").is_err());
    }
}

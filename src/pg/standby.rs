//! What a server says about itself as a standby, and its promotion: the facts promotion's safety
//! gates are judged on (PostgreSQL 13 and newer).

use std::time::{Duration, Instant};

use super::sql::{self, Reach, Session};
use super::wal::parse_lsn;
use super::{Conn, Error};

/// One look at a server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerState {
    /// `pg_is_in_recovery()`: a standby (or a cluster still recovering).
    pub in_recovery: bool,
    /// Replay is paused (`pg_wal_replay_pause()`), or a pause was asked for.
    pub replay_paused: bool,
    pub system_identifier: String,
    /// The timeline of the WAL the server is replaying, or writing once promoted.
    pub timeline: u32,
    /// WAL received from the primary (a standby), or written (a primary).
    pub received_lsn: Option<u64>,
    /// WAL replayed (a standby), or written (a primary).
    pub replayed_lsn: Option<u64>,
    /// Seconds since the last transaction replayed committed on the primary, when replay is
    /// behind what was received; 0 when it has replayed everything it received.
    pub replay_lag_seconds: f64,
    /// The standby's `primary_conninfo`, where it streams from.
    pub primary_conninfo: Option<String>,
    /// The server's WAL segment size.
    pub segment_size: u64,
}

impl ServerState {
    /// WAL received but not replayed yet, in bytes.
    pub fn replay_lag_bytes(&self) -> u64 {
        match (self.received_lsn, self.replayed_lsn) {
            (Some(received), Some(replayed)) => received.saturating_sub(replayed),
            _ => 0,
        }
    }
}

/// Reads the state of the server `session` is connected to.
pub fn state(session: &mut Session) -> Result<ServerState, Error> {
    let in_recovery: bool = session.value("SELECT pg_is_in_recovery()")?;
    let system_identifier: String = session.value("SELECT system_identifier::text FROM pg_control_system()")?;
    let segment_size: String = session.value("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")?;
    let segment_size =
        segment_size.parse().map_err(|_| Error::sql("reports a wal_segment_size that is not a number"))?;
    if !in_recovery {
        let written: String = session.value("SELECT pg_current_wal_lsn()::text")?;
        let walfile: String = session.value("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
        return Ok(ServerState {
            in_recovery,
            replay_paused: false,
            system_identifier,
            timeline: timeline_of(&walfile)?,
            received_lsn: parse_lsn(&written),
            replayed_lsn: parse_lsn(&written),
            replay_lag_seconds: 0.0,
            primary_conninfo: None,
            segment_size,
        });
    }
    let (received, replayed, lag, paused, timeline) = session.row(
        "SELECT coalesce(pg_last_wal_receive_lsn()::text, ''), coalesce(pg_last_wal_replay_lsn()::text, ''), \
         CASE WHEN pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 \
         ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8, \
         pg_is_wal_replay_paused(), \
         (SELECT timeline_id FROM pg_control_checkpoint())",
        |row| {
            use sqlx::Row as _;
            Ok((
                row.try_get::<String, _>(0)?,
                row.try_get::<String, _>(1)?,
                row.try_get::<f64, _>(2)?,
                row.try_get::<bool, _>(3)?,
                row.try_get::<i32, _>(4)?,
            ))
        },
    )?;
    // The timeline being replayed: the receiver's, else the last checkpoint's.
    let receiving: Option<i32> =
        session.value("SELECT (SELECT received_tli FROM pg_stat_wal_receiver) AS tli").unwrap_or(None);
    let primary_conninfo: String = session.value("SELECT setting FROM pg_settings WHERE name = 'primary_conninfo'")?;
    Ok(ServerState {
        in_recovery,
        replay_paused: paused,
        system_identifier,
        timeline: receiving.unwrap_or(timeline).max(timeline) as u32,
        received_lsn: parse_lsn(&received),
        replayed_lsn: parse_lsn(&replayed),
        replay_lag_seconds: lag.max(0.0),
        primary_conninfo: (!primary_conninfo.is_empty()).then_some(primary_conninfo),
        segment_size,
    })
}

/// How an old primary stands, as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// It does not answer (stopped, or cut off).
    Unreachable(String),
    /// It answers, but as a standby, or with every transaction read-only.
    ReadOnly(String),
    /// It answers and accepts writes: promoting another server now makes two primaries.
    Writable,
    /// Whether it takes writes cannot be told (it refuses drctl's login, or its connection
    /// string cannot be read).
    Unknown(String),
}

/// Whether the server `conn` names could still take writes. A server that answers but turns the
/// login away is not proven fenced: it may take other clients' writes.
pub fn fence(conn: &Conn, timeout: Duration) -> Fence {
    let mut session = match sql::reach(conn, timeout) {
        Ok(Reach::Connected(session)) => session,
        Ok(Reach::Unreachable(why)) => return Fence::Unreachable(why),
        Ok(Reach::Refused(why)) => return Fence::Unknown(format!("it answers but refused drctl: {why}")),
        Err(e) => return Fence::Unknown(e.to_string()),
    };
    match session.value::<bool>("SELECT pg_is_in_recovery()") {
        Ok(true) => return Fence::ReadOnly("it is in recovery (a standby)".into()),
        Ok(false) => {}
        Err(e) => return Fence::Unknown(e.to_string()),
    }
    match session.value::<String>("SHOW default_transaction_read_only") {
        Ok(read_only) if read_only == "on" => Fence::ReadOnly("default_transaction_read_only is on".into()),
        _ => Fence::Writable,
    }
}

/// Promotes the standby and waits until it accepts a write; returns how long that took.
pub fn promote(session: &mut Session, timeout: Duration) -> Result<Duration, Error> {
    let started = Instant::now();
    let seconds = timeout.as_secs().max(1);
    let promoted: bool = session.value(&format!("SELECT pg_promote(wait => true, wait_seconds => {seconds})"))?;
    if !promoted {
        return Err(Error::sql(format!("did not finish pg_promote within {seconds} s")));
    }
    // Promoted is not yet writable to every session: wait for an xid to be handed out.
    loop {
        match session.value::<String>("SELECT pg_current_xact_id()::text") {
            Ok(_) => return Ok(started.elapsed()),
            Err(e) if started.elapsed() > timeout => {
                return Err(Error::sql(format!("was promoted, but accepted no write within {timeout:?}: {e}")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The timeline of a WAL file name (its first eight hex digits).
fn timeline_of(walfile: &str) -> Result<u32, Error> {
    walfile
        .get(..8)
        .and_then(|t| u32::from_str_radix(t, 16).ok())
        .ok_or_else(|| Error::sql(format!("named {walfile:?} as its WAL file, which is not a WAL file name")))
}

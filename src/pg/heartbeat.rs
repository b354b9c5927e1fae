//! Heartbeats: a row with the primary's clock written on a schedule into the `drctl` schema, so
//! a drill can measure its RPO from what a restore actually recovered (the newest row) rather
//! than from what the archive is believed to hold. Each row also lists the databases and roles
//! the server had then, which the drill holds the restored cluster to.
//!
//! The table (created on the first beat when missing; docs/DRILLS.md shows the statements for a
//! role that may not create schemas):
//!
//! ```sql
//! CREATE SCHEMA IF NOT EXISTS drctl;
//! CREATE TABLE IF NOT EXISTS drctl.heartbeat (
//!     at        timestamptz PRIMARY KEY,
//!     databases text[] NOT NULL,
//!     roles     text[] NOT NULL
//! );
//! ```
//! Rows older than a day are deleted by each beat: only the newest row a restore recovers counts.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::Error;
use super::sql::Session;

/// The statements that create the schema and table (idempotent).
pub const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS drctl;
CREATE TABLE IF NOT EXISTS drctl.heartbeat (
    at        timestamptz PRIMARY KEY,
    databases text[] NOT NULL,
    roles     text[] NOT NULL
);";

/// One beat in one transaction: the row, and the rows past their day removed. `clock_timestamp()`
/// (not the transaction's start) is the moment the row is written; ON CONFLICT keeps two writers
/// in the same microsecond from failing.
const BEAT: &str = "INSERT INTO drctl.heartbeat (at, databases, roles)
SELECT clock_timestamp(),
       ARRAY(SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1),
       ARRAY(SELECT rolname::text FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1)
ON CONFLICT (at) DO NOTHING
RETURNING (extract(epoch FROM at) * 1000000)::int8";

/// A heartbeat row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Beat {
    pub at: DateTime<Utc>,
    pub databases: Vec<String>,
    pub roles: Vec<String>,
}

/// Writes one heartbeat (creating the table first if it is missing) and returns its time.
pub fn beat(session: &mut Session) -> Result<DateTime<Utc>, Error> {
    if !has_table(session)? {
        session.execute(CREATE).map_err(|e| match e {
            Error::Sql { detail } => Error::sql(format!(
                "{detail}; the heartbeat needs the table drctl.heartbeat: create it as the database owner (the \
                 statements are in docs/DRILLS.md) and grant INSERT, SELECT, DELETE on it to drctl's role"
            )),
            e => e,
        })?;
    }
    session.execute("BEGIN")?;
    let written = (|| {
        let at: Option<i64> = session.rows(BEAT, |row| row.try_get(0))?.into_iter().next();
        session.execute("DELETE FROM drctl.heartbeat WHERE at < clock_timestamp() - interval '1 day'")?;
        Ok(at)
    })();
    match written {
        Ok(at) => {
            session.execute("COMMIT")?;
            Ok(at.and_then(DateTime::from_timestamp_micros).unwrap_or_else(Utc::now))
        }
        Err(e) => {
            let _ = session.execute("ROLLBACK");
            Err(e)
        }
    }
}

/// The newest heartbeat written at or before `not_after`; `None` when there is none (or no
/// table: the heartbeat never ran before the backup).
pub fn newest(session: &mut Session, not_after: DateTime<Utc>) -> Result<Option<Beat>, Error> {
    if !has_table(session)? {
        return Ok(None);
    }
    let sql = format!(
        "SELECT (extract(epoch FROM at) * 1000000)::int8, databases, roles FROM drctl.heartbeat WHERE at <= '{}'::timestamptz ORDER BY at DESC LIMIT 1",
        not_after.format("%Y-%m-%d %H:%M:%S%.6f+00")
    );
    let rows = session.rows(&sql, |row| {
        let micros: i64 = row.try_get(0)?;
        Ok((micros, row.try_get(1)?, row.try_get(2)?))
    })?;
    Ok(rows.into_iter().next().map(|(micros, databases, roles)| Beat {
        at: DateTime::from_timestamp_micros(micros).unwrap_or_default(),
        databases,
        roles,
    }))
}

/// Whether the database has the heartbeat table.
fn has_table(session: &mut Session) -> Result<bool, Error> {
    session.value("SELECT to_regclass('drctl.heartbeat') IS NOT NULL")
}

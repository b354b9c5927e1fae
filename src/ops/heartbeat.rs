//! `drctl heartbeat`: one heartbeat row written into the policy's database (see
//! [`crate::pg::heartbeat`]), which drills measure their RPO with.

use chrono::{DateTime, Utc};

use super::{Result, policy_db};
use crate::pg::heartbeat;
use crate::pg::sql::{CONNECT_TIMEOUT, Session};
use crate::policy::Policy;

/// Writes one heartbeat into `policy`'s database; returns the server's time of it.
pub fn beat(policy: &Policy) -> Result<DateTime<Utc>> {
    let conn = policy_db::conn(&policy.database)?;
    let mut session = Session::connect(&conn, CONNECT_TIMEOUT)?;
    Ok(heartbeat::beat(&mut session)?)
}

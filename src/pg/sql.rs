//! SQL sent by drctl itself (promotion; later heartbeats and drills) through sqlx, on a private
//! single-thread runtime so callers stay blocking like the rest of drctl.
//!
//! Connection strings are what libpq takes: a URL, or `keyword=value` pairs (quoted values,
//! backslash escapes). Pairs become the query of a URL, so sqlx applies them as libpq does, with
//! PG* variables for what is not given and ~/.pgpass for the password.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{Connection as _, Row as _};

use super::{Conn, Error};

/// How long connecting may take before the server counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One open connection.
pub struct Session {
    runtime: tokio::runtime::Runtime,
    connection: PgConnection,
}

impl Session {
    /// Connects to the server `conn` names; an unreachable server, a refused login or a
    /// malformed connection string is [`Error::Database`] naming the cause.
    pub fn connect(conn: &Conn, timeout: Duration) -> Result<Session, Error> {
        match reach(conn, timeout)? {
            Reach::Connected(session) => Ok(session),
            Reach::Unreachable(why) | Reach::Refused(why) => {
                Err(Error::sql(format!("at {}: cannot connect: {why}", server_name(&conn.dsn))))
            }
        }
    }
    /// Runs `sql`, which returns one row, and gives it to `read`.
    pub fn row<T>(&mut self, sql: &str, read: impl FnOnce(&PgRow) -> Result<T, sqlx::Error>) -> Result<T, Error> {
        let row = self
            .runtime
            .block_on(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&mut self.connection))
            .map_err(|e| Error::sql(format!("refused `{sql}`: {e}")))?;
        read(&row).map_err(|e| Error::sql(format!("answered `{sql}` with what drctl cannot read: {e}")))
    }

    /// Runs `sql`, which returns no rows (or rows nobody reads).
    pub fn execute(&mut self, sql: &str) -> Result<(), Error> {
        self.runtime
            .block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut self.connection))
            .map(|_| ())
            .map_err(|e| Error::sql(format!("refused `{}`: {e}", first_line(sql))))
    }

    /// Runs `sql` and gives every row to `read`.
    pub fn rows<T>(&mut self, sql: &str, read: impl Fn(&PgRow) -> Result<T, sqlx::Error>) -> Result<Vec<T>, Error> {
        let rows = self
            .runtime
            .block_on(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).fetch_all(&mut self.connection))
            .map_err(|e| Error::sql(format!("refused `{sql}`: {e}")))?;
        rows.iter()
            .map(|row| read(row).map_err(|e| Error::sql(format!("answered `{sql}` with what drctl cannot read: {e}"))))
            .collect()
    }

    /// Runs `sql` with the simple query protocol, which sends every value as text, and returns
    /// the rows as `psql -At` would print them: columns joined by `|`, rows by newlines, NULL as
    /// nothing, booleans as `t` and `f`.
    pub fn text(&mut self, sql: &str) -> Result<String, Error> {
        let rows = self
            .runtime
            .block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).fetch_all(&mut self.connection))
            .map_err(|e| Error::sql(format!("refused `{}`: {e}", first_line(sql))))?;
        let mut lines = Vec::with_capacity(rows.len());
        for row in &rows {
            let columns = (0..row.len())
                .map(|i| row.try_get_unchecked::<Option<String>, _>(i).map(Option::unwrap_or_default))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::sql(format!("answered `{}` with what drctl cannot read: {e}", first_line(sql))))?;
            lines.push(columns.join("|"));
        }
        Ok(lines.join("\n"))
    }

    /// Runs `sql`, which returns one value.
    pub fn value<T>(&mut self, sql: &str) -> Result<T, Error>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        self.row(sql, |row| row.try_get(0))
    }
}

/// The first line of a statement, for messages.
fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}

/// Whether a server answers: fenced-off and stopped servers do not, a server that turns the
/// login away does.
pub enum Reach {
    Connected(Session),
    /// No answer: nothing listens, the network drops it, or no answer within the timeout.
    Unreachable(String),
    /// The server answered and refused (a login, a database, a server starting or stopping).
    Refused(String),
}

/// Tries to connect; only a connection string that cannot be read is an error.
pub fn reach(conn: &Conn, timeout: Duration) -> Result<Reach, Error> {
    let mut options = connect_options(&conn.dsn)?;
    if let Some(password) = &conn.password {
        options = options.password(password);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::sql(format!("client cannot start: {e}")))?;
    let connected =
        runtime.block_on(async { tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await });
    Ok(match connected {
        Ok(Ok(connection)) => Reach::Connected(Session { runtime, connection }),
        Ok(Err(e @ (sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut))) => Reach::Unreachable(e.to_string()),
        Ok(Err(e)) => Reach::Refused(e.to_string()),
        Err(_) => Reach::Unreachable(format!("no answer within {timeout:?}")),
    })
}

/// `host:port` of a connection string, for messages (`the server` when it does not say: PG*
/// variables or the defaults decide then).
pub fn server_name(dsn: &str) -> String {
    let Ok(options) = connect_options(dsn) else { return "the server".into() };
    format!("{}:{}", options.get_host(), options.get_port())
}

/// sqlx's options for a libpq connection string (URL or `keyword=value` pairs).
pub fn connect_options(dsn: &str) -> Result<PgConnectOptions, Error> {
    let url = if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        dsn.to_string()
    } else {
        let pairs = parse_conninfo(dsn)?;
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (keyword, value) in &pairs {
            query.append_pair(keyword, value);
        }
        format!("postgres://?{}", query.finish())
    };
    url.parse().map_err(|e| Error::sql(format!("connection string is not valid: {e}")))
}

/// The `keyword=value` pairs of a libpq connection string: values may be single-quoted, with
/// `\'` and `\\` inside; whitespace around `=` is allowed.
pub fn parse_conninfo(dsn: &str) -> Result<Vec<(String, String)>, Error> {
    let bad = |why: &str| Error::sql(format!("connection string is not valid: {why}"));
    let mut pairs = Vec::new();
    let mut chars = dsn.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut keyword = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            keyword.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad(&format!("{keyword:?} has no `=value`")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.push(chars.next().ok_or_else(|| bad("it ends inside a quoted value"))?),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(bad("a quoted value is not closed")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(if c == '\\' { chars.next().ok_or_else(|| bad("it ends after a backslash"))? } else { c });
            }
        }
        pairs.push((keyword, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_pairs_are_read_as_libpq_reads_them() {
        let pairs = parse_conninfo(r"host=/run/pg port = 5433 user='o\'brien' password='a b\\c' dbname=x").unwrap();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [("host", "/run/pg"), ("port", "5433"), ("user", "o'brien"), ("password", r"a b\c"), ("dbname", "x")]
        );
        assert!(parse_conninfo("host").is_err());
        assert!(parse_conninfo("host='unclosed").is_err());
        assert!(parse_conninfo("").unwrap().is_empty());
    }

    #[test]
    fn both_forms_become_the_same_options() {
        let a = connect_options("host=db.example port=5433 user=app dbname=orders sslmode=require").unwrap();
        let b = connect_options("postgres://app@db.example:5433/orders?sslmode=require").unwrap();
        assert_eq!(format!("{:?}", a.get_host()), format!("{:?}", b.get_host()));
        assert_eq!(a.get_port(), b.get_port());
        assert_eq!(a.get_username(), b.get_username());
        assert_eq!(a.get_database(), b.get_database());
    }
}

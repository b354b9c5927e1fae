//! The database a policy names, reached as the policy says: its connection string and the
//! password from the variable or file the policy names (never from the policy itself).

use crate::ops;
use crate::pg::{self, Conn};
use crate::policy::{self, Connection, Password};

/// A connection to the policy's database, with its password.
pub fn conn(database: &policy::Database) -> Result<Conn, pg::Error> {
    Ok(Conn { dsn: connection_string(&database.connection), password: password(database)? })
}

/// A connection to another server (a drill's scratch RDS instance at `host`:`port`) as the
/// policy's `database` says to connect: its user, sslmode and password, and its database unless
/// `dbname` names another.
pub fn conn_at(database: &policy::Database, host: &str, port: u16, dbname: Option<&str>) -> Result<Conn, pg::Error> {
    let dsn = match &database.connection {
        Connection::Parts { user, dbname: own, sslmode, .. } => connection_string(&Connection::Parts {
            host: host.to_string(),
            port: Some(port),
            user: user.clone(),
            dbname: dbname.map(str::to_string).or_else(|| own.clone()),
            sslmode: sslmode.clone(),
        }),
        Connection::Dsn(dsn) if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") => {
            let mut url = url::Url::parse(dsn)
                .map_err(|e| pg::Error::Database { detail: format!("the policy's dsn is not a valid URL: {e}") })?;
            let set = url
                .set_host(Some(host))
                .and_then(|()| url.set_port(Some(port)).map_err(|()| url::ParseError::InvalidPort));
            set.map_err(|e| pg::Error::Database { detail: format!("cannot point the policy's dsn at {host}: {e}") })?;
            if let Some(dbname) = dbname {
                url.set_path(&format!("/{}", urlencode(dbname)));
            }
            // A host or port in the query would win over the URL's own.
            let query: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| !replaced(k, dbname.is_some()))
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
            url.set_query(None);
            if !query.is_empty() {
                url.query_pairs_mut().extend_pairs(query);
            }
            url.to_string()
        }
        Connection::Dsn(dsn) => {
            let pairs = crate::pg::sql::parse_conninfo(dsn)?;
            let kept = pairs.iter().filter(|(k, _)| !replaced(k, dbname.is_some()));
            let mut all: Vec<(&str, Option<String>)> =
                vec![("host", Some(host.to_string())), ("port", Some(port.to_string()))];
            all.extend(kept.map(|(k, v)| (k.as_str(), Some(v.clone()))));
            all.push(("dbname", dbname.map(str::to_string)));
            crate::pg::conninfo(&all)
        }
    };
    Ok(Conn { dsn, password: password(database)? })
}

/// Whether `conn_at` replaces the connection keyword `keyword`.
fn replaced(keyword: &str, dbname: bool) -> bool {
    matches!(keyword, "host" | "hostaddr" | "port") || (dbname && keyword == "dbname")
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A libpq connection string for the policy's `database`.
pub fn connection_string(connection: &Connection) -> String {
    match connection {
        Connection::Dsn(dsn) => dsn.clone(),
        Connection::Parts { host, port, user, dbname, sslmode } => crate::pg::conninfo(&[
            ("host", Some(host.clone())),
            ("port", port.map(|p| p.to_string())),
            ("user", user.clone()),
            ("dbname", dbname.clone()),
            ("sslmode", sslmode.clone()),
        ]),
    }
}

/// The database password the policy names, if any; an error names the variable or file missing.
pub fn password(database: &policy::Database) -> Result<Option<String>, pg::Error> {
    let database_error = |detail: String| pg::Error::Database { detail };
    match &database.password {
        None => Ok(None),
        Some(Password::Env(name)) => std::env::var(name).map(Some).map_err(|_| {
            database_error(format!(
                "the policy takes the database password from the environment variable {name}, which is not set \
                 (set it, e.g. from a Kubernetes Secret)"
            ))
        }),
        Some(Password::File(path)) => ops::unlock::read_password_file(path)
            .map(Some)
            .map_err(|e| database_error(format!("cannot read the database password file {}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_server_is_reached_as_the_policy_says_at_its_own_address() {
        let at = |connection: Connection| {
            conn_at(&policy::Database { connection, password: None }, "scratch.rds.example", 5433, None).unwrap().dsn
        };
        let parts = Connection::Parts {
            host: "prod".into(),
            port: Some(5432),
            user: Some("drctl".into()),
            dbname: Some("orders".into()),
            sslmode: Some("verify-full".into()),
        };
        assert_eq!(
            at(parts),
            "host='scratch.rds.example' port='5433' user='drctl' dbname='orders' sslmode='verify-full'"
        );
        assert_eq!(
            at(Connection::Dsn("host=prod port=5432 user=drctl dbname=orders".into())),
            "host='scratch.rds.example' port='5433' user='drctl' dbname='orders'"
        );
        assert_eq!(
            at(Connection::Dsn("postgresql://drctl@prod:5432/orders?sslmode=require&host=/tmp".into())),
            "postgresql://drctl@scratch.rds.example:5433/orders?sslmode=require"
        );
        let url = Connection::Dsn("postgres://drctl@prod/orders".into());
        let conn = conn_at(&policy::Database { connection: url, password: None }, "h", 5432, Some("reports"));
        assert_eq!(conn.unwrap().dsn, "postgres://drctl@h:5432/reports");
        let pairs = Connection::Dsn("dbname=orders user=drctl".into());
        let conn = conn_at(&policy::Database { connection: pairs, password: None }, "h", 5432, Some("reports"));
        assert_eq!(conn.unwrap().dsn, "host='h' port='5432' user='drctl' dbname='reports'");
    }

    #[test]
    fn connection_parts_become_a_quoted_conninfo() {
        let parts = Connection::Parts {
            host: "/var/run/postgresql".into(),
            port: Some(5432),
            user: Some("o'brien".into()),
            dbname: None,
            sslmode: Some("verify-full".into()),
        };
        assert_eq!(
            connection_string(&parts),
            r"host='/var/run/postgresql' port='5432' user='o\'brien' sslmode='verify-full'"
        );
    }
}

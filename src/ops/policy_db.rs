//! The database a policy names, reached as the policy says: its connection string and the
//! password from the variable or file the policy names (never from the policy itself).

use crate::ops;
use crate::pg::{self, Conn};
use crate::policy::{self, Connection, Password};

/// A connection to the policy's database, with its password.
pub fn conn(database: &policy::Database) -> Result<Conn, pg::Error> {
    Ok(Conn { dsn: connection_string(&database.connection), password: password(database)? })
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

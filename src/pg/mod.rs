//! PostgreSQL know-how: WAL file names and timelines (base backups and point-in-time restore
//! build on this).

pub mod async_push;
pub mod basebackup;
pub mod datadir;
pub mod pitr;
pub mod prefetch;
pub mod recovery;
pub mod server;
pub mod session;
pub mod spool;
pub mod wal;
pub mod window;

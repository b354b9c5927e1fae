//! drctl: backup and disaster recovery for PostgreSQL-backed services.
//!
//! The library holds all logic; `main.rs` only parses the command line, sets up logging and maps
//! errors to exit codes. Layers, top down (imports point down only):
//! - [`cli`]: one file per command: its arguments, one call into the library, its output;
//! - [`job`], [`schedule`], [`metrics`]: a policy run as a job, on a cron schedule, as metrics;
//! - [`ops`]: the use cases (unlock, backup, restore, copy, retention, WAL, catalog, repair) as
//!   library operations with typed errors;
//! - [`repo`], [`pg`], [`aws`], [`policy`]: the repository format, PostgreSQL know-how, AWS
//!   services, policy files;
//! - [`store`]: where bytes live (a local directory or S3), behind one small trait.

pub mod aws;
pub mod cli;
pub mod drill;
pub mod error;
/// Fuzz targets (built for `cargo fuzz` and for tests only).
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzz;
pub mod job;
pub mod metrics;
pub mod ops;
pub mod pg;
pub mod policy;
pub mod progress;
pub mod redact;
pub mod repo;
pub mod report;
pub mod runbook;
pub mod schedule;
pub mod store;
#[cfg(test)]
mod testing;

//! drctl: backup and disaster recovery for PostgreSQL-backed services.
//!
//! The library holds all logic; `main.rs` only parses the command line, sets up logging and maps
//! errors to exit codes. Layers, bottom up:
//! - [`store`]: where bytes live (a local directory now, S3 later), behind one small trait;
//! - [`repo`]: the repository format: keys, encryption, chunks, packs, index, snapshots, locks, check;
//! - [`backup`] and [`restore`]: the streaming pipelines that turn sources into snapshots and back;
//! - [`policy`], [`job`], [`metrics`], [`schedule`] and [`aws`]: what a policy asks for, run as a job
//!   (sources, RDS snapshots, copies, retention), reported as Prometheus metrics, on a cron schedule;
//! - [`cli`]: one file per command, each a thin layer over the library.

pub mod aws;
pub mod cli;
pub mod error;
pub mod job;
pub mod metrics;
pub mod ops;
pub mod pg;
pub mod policy;
pub mod progress;
pub mod redact;
pub mod repo;
pub mod schedule;
pub mod store;

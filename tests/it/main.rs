//! Integration tests for the `drctl` binary: real files, real processes, no mocks.
//!
//! Run with `cargo test --test it` or `cargo nextest run --test it`.
//!
//! Requirements: run as root (tests chown to / run drctl as the `postgres` user, mount a small
//! tmpfs, and check that restore reproduces owners); the `postgres` user must exist; about
//! 4 GiB free under the temp dir (the 4 GiB stream test stores ~2.5 GiB; scripts/test.sh
//! mounts a tmpfs for it).
//! Tests that use randomness print their seed; set DRCTL_TEST_SEED to reproduce a run.
//!
//! `harness/` holds what the tests share (running drctl, workspaces, generated data and trees,
//! PostgreSQL clusters, moto, the fault proxy, the Pushgateway); every other module is a file of
//! tests, named for what it tests.

mod harness;

mod concurrency;
mod copy;
mod crash;
mod damage;
mod dedup;
mod diskfull;
mod drill;
mod drill_rds;
mod edge;
mod env;
mod errors;
mod failover;
mod faultproxy;
mod hygiene;
mod keys;
mod kms;
mod lockprune;
mod packaging;
mod pgbackup;
mod pgdump;
mod pglocal;
mod pitr;
mod policy;
mod policyjob;
mod promote;
mod rds;
mod report;
mod retention;
mod roundtrip;
mod runbook;
mod s3;
mod s3faults;
mod s3pg;
mod s3scale;
mod schedule;
mod secrets;
mod selftest;
mod standby;
mod store;
mod stream;
mod tamper;
mod timelines;
mod torture;
mod versions;
mod wal;
mod walasync;
mod walblocks;

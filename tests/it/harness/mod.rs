//! Test harness for the drctl integration tests, one idea a file:
//!
//! - [`drctl`]: running the binary ([`Drctl`], [`Running`], [`Output`]) and peak-RSS measurement
//!   through `libc::wait4`;
//! - [`repo`]: a repository and wrappers around the commands on it;
//! - [`workspace`]: a temporary directory per test, users and ownership, a tmpfs mount;
//! - [`data`]: a fast deterministic data generator;
//! - [`tree`]: tree building, scanning and comparison;
//! - [`pg`]: throwaway PostgreSQL 15 clusters, and a primary archiving into a repository;
//! - [`moto`]: moto's S3 and KMS server;
//! - [`faultproxy`]: a fault-injecting HTTP proxy in front of it;
//! - [`pushgateway`]: a Prometheus Pushgateway;
//! - [`standin`]: the stand-in for the protected API service;
//! - [`http`]: GETs against drctl's own listeners, and waiting for what they show.
//!
//! `use crate::harness::*;` brings in the first five; the servers are named by their module
//! (`harness::pg::Cluster`, `harness::moto::Moto`, …).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

mod data;
mod drctl;
mod repo;
mod tree;
mod workspace;

pub mod faultproxy;
pub mod http;
pub mod moto;
pub mod pg;
pub mod pushgateway;
pub mod standin;

pub use data::*;
pub use drctl::*;
pub use repo::*;
pub use tree::*;
pub use workspace::*;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

pub fn fmt_bytes(n: u64) -> String {
    if n >= GIB {
        format!("{:.2} GiB", n as f64 / GIB as f64)
    } else if n >= MIB {
        format!("{:.2} MiB", n as f64 / MIB as f64)
    } else if n >= KIB {
        format!("{:.1} KiB", n as f64 / KIB as f64)
    } else {
        format!("{n} B")
    }
}

pub fn os(s: &[u8]) -> &OsStr {
    OsStr::from_bytes(s)
}

/// The path of a program on PATH.
pub fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|p| p.is_file())
}

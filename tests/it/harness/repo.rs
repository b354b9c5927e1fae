//! A repository directory and wrappers around the drctl commands on it; parsed `backup --json`
//! results; the objects a repository stores.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Drctl, Output};

/// Parsed `backup --json` result.
#[derive(Clone, Debug)]
pub struct BackupInfo {
    pub json: Value,
    pub id: String,
    pub short_id: String,
    pub files: u64,
    pub dirs: u64,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub new_chunks: u64,
}

#[track_caller]
pub fn json_u64(v: &Value, key: &str, ctx: &dyn fmt::Display) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("JSON field {key:?} missing or not an unsigned integer in {v}\n{ctx}"))
}

#[track_caller]
pub fn json_str(v: &Value, key: &str, ctx: &dyn fmt::Display) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| panic!("JSON field {key:?} missing or not a string in {v}\n{ctx}"))
}

impl BackupInfo {
    #[track_caller]
    pub fn parse(out: &Output) -> BackupInfo {
        let json = out.json();
        let id = json_str(&json, "snapshot_id", out);
        let short_id = json_str(&json, "short_id", out);
        assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()), "snapshot_id is not 64 hex chars\n{out}");
        assert_eq!(short_id.len(), 8, "short_id is not 8 chars\n{out}");
        assert!(id.starts_with(&short_id), "short_id is not a prefix of snapshot_id\n{out}");
        let time = json_str(&json, "time", out);
        assert!(chrono::DateTime::parse_from_rfc3339(&time).is_ok(), "time {time:?} is not RFC 3339\n{out}");
        assert!(json.get("duration_seconds").and_then(Value::as_f64).is_some(), "duration_seconds missing\n{out}");
        BackupInfo {
            files: json_u64(&json, "files", out),
            dirs: json_u64(&json, "dirs", out),
            logical_bytes: json_u64(&json, "logical_bytes", out),
            stored_bytes: json_u64(&json, "stored_bytes", out),
            new_chunks: json_u64(&json, "new_chunks", out),
            id,
            short_id,
            json,
        }
    }
}

/// A repository directory plus convenience wrappers around the commands.
#[derive(Clone, Debug)]
pub struct Repo {
    pub path: PathBuf,
}

impl Repo {
    pub fn new(path: impl Into<PathBuf>) -> Repo {
        Repo { path: path.into() }
    }

    pub fn cmd(&self, sub: &str) -> Drctl {
        Drctl::sub(sub, &self.path)
    }

    /// `init`, asserting success.
    #[track_caller]
    pub fn init(&self) -> Output {
        let out = self.cmd("init").run();
        out.ok();
        out
    }

    /// `backup --path P... --json`, asserting success.
    #[track_caller]
    pub fn backup(&self, paths: &[&Path]) -> (BackupInfo, Output) {
        let out = self.backup_cmd(paths).run();
        out.ok();
        (BackupInfo::parse(&out), out)
    }

    pub fn backup_cmd(&self, paths: &[&Path]) -> Drctl {
        let mut d = self.cmd("backup");
        for p in paths {
            d = d.arg("--path").arg(p);
        }
        d.arg("--json")
    }

    pub fn restore_cmd(&self, snap: &str, to: &Path) -> Drctl {
        self.cmd("restore").arg(snap).arg("--to").arg(to)
    }

    pub fn restore(&self, snap: &str, to: &Path) -> Output {
        self.restore_cmd(snap, to).run()
    }

    pub fn check(&self, read_data: bool) -> Output {
        let d = self.cmd("check");
        if read_data { d.arg("--read-data").run() } else { d.run() }
    }

    /// `snapshots --json`, asserting success; returns the array.
    #[track_caller]
    pub fn snapshots(&self) -> Vec<Value> {
        let out = self.cmd("snapshots").arg("--json").run();
        out.ok();
        match out.json() {
            Value::Array(a) => a,
            other => panic!("snapshots --json is not an array: {other}\n{out}"),
        }
    }

    /// Objects under `packs/` (id, path), `index/`, `snapshots/`.
    pub fn packs(&self) -> Vec<Obj> {
        let mut v = Vec::new();
        let dir = self.path.join("packs");
        for sub in read_dir_sorted(&dir) {
            if sub.is_dir() {
                for p in read_dir_sorted(&sub) {
                    v.push(Obj::new(p));
                }
            }
        }
        v
    }

    pub fn indexes(&self) -> Vec<Obj> {
        read_dir_sorted(&self.path.join("index")).into_iter().map(Obj::new).collect()
    }

    pub fn snapshot_files(&self) -> Vec<Obj> {
        read_dir_sorted(&self.path.join("snapshots")).into_iter().map(Obj::new).collect()
    }

    /// Total size of all files under the repository, ignoring `locks/`.
    pub fn total_bytes(&self) -> u64 {
        self.file_set().values().sum()
    }

    /// All files under the repository (relative path -> size), ignoring `locks/`.
    pub fn file_set(&self) -> BTreeMap<PathBuf, u64> {
        let mut m = BTreeMap::new();
        fn walk(base: &Path, dir: &Path, m: &mut BTreeMap<PathBuf, u64>) {
            for p in read_dir_sorted(dir) {
                let rel = p.strip_prefix(base).unwrap().to_path_buf();
                if rel.starts_with("locks") {
                    continue;
                }
                let md = fs::symlink_metadata(&p).unwrap();
                if md.is_dir() {
                    walk(base, &p, m);
                } else {
                    m.insert(rel, md.len());
                }
            }
        }
        walk(&self.path, &self.path, &mut m);
        m
    }
}

/// A stored object (file named by its id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obj {
    pub id: String,
    pub path: PathBuf,
    pub size: u64,
}

impl Obj {
    fn new(path: PathBuf) -> Obj {
        let id = path.file_name().unwrap().to_string_lossy().into_owned();
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Obj { id, path, size }
    }

    pub fn prefix(&self) -> &str {
        &self.id[..8.min(self.id.len())]
    }
}

pub fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// `<target>/<abs src path without leading '/'>`
pub fn restored_path(target: &Path, src_abs: &Path) -> PathBuf {
    assert!(src_abs.is_absolute());
    target.join(src_abs.strip_prefix("/").unwrap())
}

/// Entries directly inside `dir` (names), for "nothing was left behind" checks.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    read_dir_sorted(dir).into_iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

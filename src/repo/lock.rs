//! Repository locks. A backup, restore or check holds a shared lock; maintenance that deletes
//! (prune) holds an exclusive one. A lock is a small sealed object under locks/, refreshed while
//! held. A lock not refreshed for STALE_AFTER is stale and removed by whoever finds it, whatever
//! its host and pid (restic's rule). A missing process makes a lock stale sooner only for a finder
//! in the same kernel boot and PID namespace: containers of one pod share a host name, not PIDs.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Error;
use super::crypto::MasterKey;
use super::format::{self, ObjectType};
use crate::store::Store;

const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
const STALE_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(30);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub exclusive: bool,
    pub hostname: String,
    pub pid: u32,
    pub command: String,
    pub time: chrono::DateTime<chrono::Utc>,
    /// Where `pid` names a process: the holder's kernel boot id and PID namespace. Absent in
    /// locks of older versions, which then go stale by time only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_scope: Option<String>,
}

impl LockInfo {
    pub(crate) fn is_stale(&self) -> bool {
        if chrono::Utc::now() - self.time > STALE_AFTER {
            return true;
        }
        if self.hostname != super::hostname() || self.pid_scope.is_none() || self.pid_scope != pid_scope() {
            return false;
        }
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let failed = unsafe { libc::kill(self.pid as libc::pid_t, 0) } != 0;
        failed && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }

    /// Whether `other` is this same lock as written by its holder (its time aside).
    fn same_holder(&self, other: &LockInfo) -> bool {
        (self.exclusive, &self.hostname, self.pid, &self.command, &self.pid_scope)
            == (other.exclusive, &other.hostname, other.pid, &other.command, &other.pid_scope)
    }
}

/// This process's kernel boot id and PID namespace: two processes that share both see the same
/// process under the same pid. `None` where either cannot be read.
fn pid_scope() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), namespace.display()))
}

/// A held lock; released (deleted) on drop.
pub struct Lock {
    store: Arc<dyn Store>,
    key: MasterKey,
    info: LockInfo,
    name: String,
    stop: Arc<(Mutex<bool>, Condvar)>,
    refresher: Option<JoinHandle<()>>,
}

fn write(store: &dyn Store, key: &MasterKey, name: &str, info: &LockInfo) -> Result<(), Error> {
    let json = serde_json::to_vec(info).expect("locks serialize");
    store.put(name, &format::seal_file(key, ObjectType::Lock, name.as_bytes(), &json))?;
    Ok(())
}

/// A lock's content; `None` when it is gone or not a lock of this repository (foreign, damaged).
/// A store that fails to answer is an error: a lock that could not be read is not a lock that
/// may be removed.
fn read(store: &dyn Store, key: &MasterKey, name: &str) -> Result<Option<LockInfo>, Error> {
    let bytes = match store.get(name) {
        Ok(bytes) => bytes,
        Err(crate::store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Ok(json) = format::open_file(key, ObjectType::Lock, name.as_bytes(), &bytes, name) else { return Ok(None) };
    Ok(serde_json::from_slice(&json).ok())
}

impl Lock {
    pub fn acquire(store: Arc<dyn Store>, key: &MasterKey, exclusive: bool, command: &str) -> Result<Lock, Error> {
        let mut suffix = [0u8; 16];
        getrandom::fill(&mut suffix).expect("the OS random source works");
        let name = format!("{}{}", format::LOCKS_DIR, hex::encode(suffix));
        let info = LockInfo {
            exclusive,
            hostname: super::hostname(),
            pid: std::process::id(),
            command: command.to_string(),
            time: chrono::Utc::now(),
            pid_scope: pid_scope(),
        };
        write(store.as_ref(), key, &name, &info)?;
        let mut lock =
            Lock { store, key: key.clone(), info: info.clone(), name, stop: Arc::default(), refresher: None };
        for other in lock.store.list(format::LOCKS_DIR)? {
            if other.key == lock.name {
                continue;
            }
            match read(lock.store.as_ref(), key, &other.key)? {
                // Unreadable locks (foreign, damaged, or deleted meanwhile) and stale ones go.
                None => {
                    let _ = lock.store.delete(&other.key);
                }
                Some(theirs) if theirs.is_stale() => {
                    tracing::warn!(lock = %other.key, host = %theirs.hostname, pid = theirs.pid, "removing stale lock");
                    let _ = lock.store.delete(&other.key);
                }
                Some(theirs) if exclusive || theirs.exclusive => {
                    return Err(Error::Locked {
                        location: lock.store.location().to_string(),
                        holder: format!(
                            "{} lock held by `{}` (pid {} on {}) since {}",
                            if theirs.exclusive { "an exclusive" } else { "a shared" },
                            theirs.command,
                            theirs.pid,
                            theirs.hostname,
                            theirs.time.to_rfc3339()
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        lock.refresher = Some(lock.spawn_refresher(key.clone(), info));
        Ok(lock)
    }

    /// Fails if this lock is gone or no longer this holder's: another process took it for stale
    /// (a refresh that failed, a clock gone wrong) and may be working on the repository now.
    /// Prune asks before it deletes, a backup before it writes its snapshot; `before` says which.
    pub fn verify(&self, before: &str) -> Result<(), Error> {
        match read(self.store.as_ref(), &self.key, &self.name)? {
            Some(info) if info.same_holder(&self.info) => Ok(()),
            _ => Err(Error::Locked {
                location: self.store.location().to_string(),
                holder: format!(
                    "this command's own lock was removed by another process that took it for stale; stopped before \
                     {before}"
                ),
            }),
        }
    }

    fn spawn_refresher(&self, key: MasterKey, mut info: LockInfo) -> JoinHandle<()> {
        let (store, name, stop) = (self.store.clone(), self.name.clone(), self.stop.clone());
        std::thread::spawn(move || {
            let (stopped, wake) = &*stop;
            let mut stopped = stopped.lock().expect("lock flag");
            loop {
                // `wait_timeout_while` checks the flag first, so a stop before the wait is not missed.
                stopped = wake.wait_timeout_while(stopped, REFRESH_EVERY, |s| !*s).expect("lock flag").0;
                if *stopped {
                    return;
                }
                info.time = chrono::Utc::now();
                if let Err(e) = write(store.as_ref(), &key, &name, &info) {
                    tracing::warn!(error = %e, "could not refresh the repository lock");
                }
            }
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        *self.stop.0.lock().expect("lock flag") = true;
        self.stop.1.notify_all();
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let _ = self.store.delete(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    #[test]
    fn shared_locks_coexist_and_exclusive_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        let key = MasterKey::generate();
        let a = Lock::acquire(store.clone(), &key, false, "backup").unwrap();
        let b = Lock::acquire(store.clone(), &key, false, "restore").unwrap();
        let refused = Lock::acquire(store.clone(), &key, true, "prune");
        assert!(matches!(refused, Err(Error::Locked { .. })), "exclusive must wait for shared locks");
        assert_eq!(store.list(format::LOCKS_DIR).unwrap().len(), 2, "the refused lock is removed again");
        drop((a, b));
        let x = Lock::acquire(store.clone(), &key, true, "prune").unwrap();
        assert!(matches!(Lock::acquire(store.clone(), &key, false, "backup"), Err(Error::Locked { .. })));
        drop(x);
        assert!(store.list(format::LOCKS_DIR).unwrap().is_empty());
    }

    #[test]
    fn stale_locks_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        let key = MasterKey::generate();
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let now = chrono::Utc::now();
        let crashed = LockInfo {
            exclusive: true,
            hostname: crate::repo::hostname(),
            pid: dead_pid,
            command: "prune".into(),
            time: now,
            pid_scope: pid_scope(),
        };
        write(store.as_ref(), &key, "locks/crashed", &crashed).unwrap();
        // The same host name but another PID namespace (a container of the same pod): its pid
        // says nothing here, so only its refresh time counts.
        let other_namespace = LockInfo { pid_scope: Some("other boot/pid:[1]".into()), ..crashed.clone() };
        write(store.as_ref(), &key, "locks/neighbour", &other_namespace).unwrap();
        assert!(matches!(Lock::acquire(store.clone(), &key, true, "prune"), Err(Error::Locked { .. })));
        store.delete("locks/neighbour").unwrap();
        let old = LockInfo { hostname: "elsewhere".into(), pid: 1, time: now - STALE_AFTER * 2, ..crashed.clone() };
        write(store.as_ref(), &key, "locks/old", &old).unwrap();
        let live = LockInfo { hostname: "elsewhere".into(), pid: 1, ..crashed };
        write(store.as_ref(), &key, "locks/live", &live).unwrap();
        assert!(matches!(Lock::acquire(store.clone(), &key, false, "backup"), Err(Error::Locked { .. })));
        store.delete("locks/live").unwrap();
        let lock = Lock::acquire(store.clone(), &key, false, "backup").unwrap();
        let names: Vec<String> = store.list(format::LOCKS_DIR).unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(names, vec![lock.name.clone()], "stale locks were removed");
        lock.verify("testing").unwrap();
        let mut taken = lock.info.clone();
        taken.pid += 1;
        write(store.as_ref(), &key, &lock.name, &taken).unwrap();
        assert!(matches!(lock.verify("testing"), Err(Error::Locked { .. })), "a lock rewritten by another holder");
        store.delete(&lock.name).unwrap();
        assert!(matches!(lock.verify("testing"), Err(Error::Locked { .. })), "a removed lock");
    }
}

//! Where a test works: a temporary directory, the users that own what is in it, a tmpfs mounted
//! in it, a byte of a file flipped.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Repo, walk_paths};

/// A temporary directory for one test (removed on drop).
pub struct Workspace {
    /// Removes the directory when dropped.
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::Builder::new().prefix("drctl-it-").tempdir().expect("tempdir");
        let path = fs::canonicalize(dir.path()).unwrap();
        Workspace { _dir: dir, path }
    }

    /// A workspace directly under the temp dir (TMPDIR), chmod 0755 (reachable by unprivileged
    /// users).
    pub fn new_public() -> Workspace {
        let dir = tempfile::Builder::new().prefix("drctl-it-").tempdir().expect("tempdir");
        let path = fs::canonicalize(dir.path()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        // Every ancestor must be traversable by others.
        let mut p = path.parent();
        while let Some(a) = p {
            let mode = fs::metadata(a).unwrap().permissions().mode();
            assert!(mode & 0o001 != 0, "{} is not traversable by other users (mode {mode:o})", a.display());
            p = a.parent();
        }
        Workspace { _dir: dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// `<ws>/repo` (not created).
    pub fn repo(&self) -> Repo {
        Repo::new(self.join("repo"))
    }

    /// Create and return an empty directory `<ws>/<name>`.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }
}

/// Recursively chown (lchown) a path to uid/gid.
pub fn chown_r(p: &Path, uid: u32, gid: u32) {
    for q in walk_paths(p) {
        std::os::unix::fs::lchown(&q, Some(uid), Some(gid)).unwrap();
    }
}

/// uid/gid of a local user (getpwnam).
pub fn user_ids(name: &str) -> (u32, u32) {
    let c = CString::new(name).unwrap();
    // SAFETY: getpwnam returns NULL or a pointer to a static passwd struct.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    assert!(!pw.is_null(), "user {name} does not exist");
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

pub fn is_root() -> bool {
    // SAFETY: trivial syscall.
    unsafe { libc::geteuid() == 0 }
}

/// Flip (xor 0xff) the byte at `offset` in a file.
pub fn flip_byte(p: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().read(true).write(true).open(p).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0xff;
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
}

/// Unmounts a mount point when dropped.
pub struct MountGuard {
    pub dir: PathBuf,
}

impl MountGuard {
    /// `mount -t tmpfs -o size=<size> tmpfs <dir>` (requires root).
    pub fn tmpfs(dir: &Path, size: &str) -> MountGuard {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs on {} failed: {st}", dir.display());
        MountGuard { dir: dir.to_path_buf() }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let st = Command::new("umount").arg(&self.dir).status();
        if !matches!(st, Ok(s) if s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

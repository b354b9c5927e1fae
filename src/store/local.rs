//! The local-directory backend, the embedded default. Writes go to a temporary file in the target
//! folder, are fsynced, renamed into place and the folder is fsynced, so a crash never leaves a
//! partial object under a real name. Files are 0600 and folders 0700 (as restic's): key slots
//! and everything else stay out of other users' reach.

use super::{Error, ObjectInfo, Result, Store};
use std::collections::HashMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Temporary files carry this prefix; listings skip them and a later `put` may leave a stale one
/// from a crash, which is never read.
const TEMP_PREFIX: &str = ".tmp-";

/// Open read handles kept for ranged reads: a restore reads many chunks from each pack.
const OPEN_READERS: usize = 64;

const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

pub struct LocalStore {
    root: PathBuf,
    location: String,
    readers: Mutex<HashMap<String, Arc<File>>>,
    dirs: DirSync,
}

/// Fsyncs folders; in tests it also records each one, in order, so a test can prove the
/// durability chain.
#[derive(Clone, Default)]
struct DirSync {
    #[cfg(test)]
    synced: Arc<Mutex<Vec<PathBuf>>>,
}

impl DirSync {
    fn sync(&self, dir: &Path) -> std::io::Result<()> {
        #[cfg(test)]
        self.synced.lock().expect("poisoned").push(dir.to_path_buf());
        File::open(dir)?.sync_all()
    }
}

impl LocalStore {
    pub fn new(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref().to_path_buf();
        LocalStore { location: root.display().to_string(), root, readers: Mutex::default(), dirs: DirSync::default() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> Error {
        match source.kind() {
            ErrorKind::StorageFull => Error::NoSpace { path: path.to_path_buf() },
            ErrorKind::PermissionDenied => Error::PermissionDenied { path: path.to_path_buf() },
            _ if source.raw_os_error() == Some(libc::EDQUOT) => Error::NoSpace { path: path.to_path_buf() },
            _ => Error::Io { op, path: path.to_path_buf(), source },
        }
    }

    fn open_for_read(&self, key: &str) -> Result<File> {
        let path = self.path(key);
        File::open(&path).map_err(|e| match e.kind() {
            // A path component that is a file rather than a folder: the object is not there either.
            ErrorKind::NotFound | ErrorKind::NotADirectory => {
                Error::NotFound { location: self.location.clone(), key: key.to_string() }
            }
            _ => Self::io_err("open", &path, e),
        })
    }

    /// Creates the object's folder and every missing ancestor (the repository root included),
    /// each made durable in its parent before the next is made: an object acknowledged as stored
    /// (a WAL segment PostgreSQL then recycles) must not vanish with a folder whose entry was
    /// never synced.
    fn ensure_dir(&self, path: &Path) -> Result<()> {
        let dir = path.parent().expect("object paths always have a parent");
        let mut missing = Vec::new();
        // A relative root ends in "": the current directory, which exists.
        let mut next = Some(dir).filter(|d| !d.as_os_str().is_empty());
        while let Some(d) = next.filter(|d| !d.is_dir()) {
            missing.push(d);
            next = d.parent().filter(|p| !p.as_os_str().is_empty());
        }
        for d in missing.into_iter().rev() {
            match DirBuilder::new().mode(DIR_MODE).create(d) {
                // Made meanwhile by another process, which may not have synced it yet.
                Err(e) if e.kind() == ErrorKind::AlreadyExists && d.is_dir() => {}
                Err(e) => return Err(Self::io_err("mkdir", d, e)),
                Ok(()) => {}
            }
            self.sync_dir(d.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.dirs.sync(dir).map_err(|e| Self::io_err("sync", dir, e))
    }

    fn create_temp(temp: &Path) -> std::io::Result<File> {
        OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(temp)
    }

    fn list_dir(&self, dir: &Path, out: &mut Vec<ObjectInfo>) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Self::io_err("list", dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Self::io_err("list", dir, e))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(TEMP_PREFIX) {
                continue;
            }
            let path = entry.path();
            let meta = entry.metadata().map_err(|e| Self::io_err("stat", &path, e))?;
            if meta.is_dir() {
                self.list_dir(&path, out)?;
            } else if meta.is_file() {
                let key = path.strip_prefix(&self.root).expect("listed below root");
                let modified = meta.modified().ok().map(chrono::DateTime::<chrono::Utc>::from);
                out.push(ObjectInfo { key: key.to_string_lossy().into_owned(), size: meta.len(), modified });
            }
        }
        Ok(())
    }
}

impl Store for LocalStore {
    fn location(&self) -> &str {
        &self.location
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let mut writer = self.create(key)?;
        writer.write(data)?;
        writer.commit()
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        let path = self.path(key);
        self.ensure_dir(&path)?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).expect("the OS random source works");
        let temp = path.with_file_name(format!("{TEMP_PREFIX}{}", hex::encode(suffix)));
        let written = (|| {
            let mut file = Self::create_temp(&temp)?;
            file.write_all(data)?;
            file.sync_all()?;
            // A hard link, unlike a rename, fails if the name is taken.
            match fs::hard_link(&temp, &path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
                Err(e) => return Err(e),
            }
            Ok(true)
        })();
        let _ = fs::remove_file(&temp);
        let linked = written.map_err(|e| Self::io_err("write", &path, e))?;
        if linked {
            self.sync_dir(path.parent().expect("object paths always have a parent"))?;
        }
        Ok(linked)
    }

    fn create(&self, key: &str) -> Result<Box<dyn super::ObjectWriter>> {
        let path = self.path(key);
        self.ensure_dir(&path)?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).expect("the OS random source works");
        let temp = path.with_file_name(format!("{TEMP_PREFIX}{}", hex::encode(suffix)));
        let file = Self::create_temp(&temp).map_err(|e| Self::io_err("create", &temp, e))?;
        Ok(Box::new(LocalWriter { file, temp, path, committed: false, dirs: self.dirs.clone() }))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let mut file = self.open_for_read(key)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(|e| Self::io_err("read", &self.path(key), e))?;
        Ok(data)
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let cached = self.readers.lock().expect("poisoned").get(key).cloned();
        let file = match cached {
            Some(file) => file,
            None => {
                let file = Arc::new(self.open_for_read(key)?);
                let mut readers = self.readers.lock().expect("poisoned");
                if readers.len() >= OPEN_READERS {
                    readers.clear();
                }
                readers.insert(key.to_string(), file.clone());
                file
            }
        };
        let mut data = vec![0u8; len as usize];
        file.read_exact_at(&mut data, offset).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => {
                Error::OutOfRange { location: self.location.clone(), key: key.to_string(), offset, len }
            }
            _ => Self::io_err("read", &self.path(key), e),
        })?;
        Ok(data)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let dir = self.path(prefix.trim_end_matches('/'));
        self.list_dir(&dir, &mut out)?;
        out.retain(|o| o.key.starts_with(prefix));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.readers.lock().expect("poisoned").remove(key);
        let path = self.path(key);
        match fs::remove_file(&path) {
            // Deleting what is not there succeeds, as on S3: a command run again after a kill
            // finds some of its deletions already done.
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io_err("delete", &path, e)),
        }
    }

    fn remove_abandoned(&self, before: std::time::SystemTime) -> Result<usize> {
        self.remove_temp_files(&self.root, before)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key);
        match fs::metadata(&path) {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Self::io_err("stat", &path, e)),
        }
    }
}

impl LocalStore {
    /// Deletes the temporary files below `dir` last modified before `before`: a write that was
    /// killed leaves its `.tmp-*` file, which nothing else would ever remove.
    fn remove_temp_files(&self, dir: &Path, before: std::time::SystemTime) -> Result<usize> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Self::io_err("list", dir, e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| Self::io_err("list", dir, e))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(|e| Self::io_err("stat", &path, e))?;
            if meta.is_dir() {
                removed += self.remove_temp_files(&path, before)?;
            } else if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
                && meta.modified().map_err(|e| Self::io_err("stat", &path, e))? < before
            {
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(Self::io_err("delete", &path, e)),
                }
            }
        }
        Ok(removed)
    }
}

/// A temporary file beside the target: written, fsynced, renamed into place, folder fsynced.
struct LocalWriter {
    file: File,
    temp: PathBuf,
    path: PathBuf,
    committed: bool,
    dirs: DirSync,
}

impl super::ObjectWriter for LocalWriter {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file.write_all(data).map_err(|e| LocalStore::io_err("write", &self.path, e))
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        let dir = self.path.parent().expect("object paths always have a parent");
        let result =
            self.file.sync_all().and_then(|()| fs::rename(&self.temp, &self.path)).and_then(|()| self.dirs.sync(dir));
        result.map_err(|e| LocalStore::io_err("write", &self.path, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conformance checks every backend must pass (S3 will run the same through the test suite).
    #[test]
    fn local_store_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        assert!(!store.exists("packs/ab/x").unwrap());
        store.put("packs/ab/x", b"hello world").unwrap();
        assert!(store.exists("packs/ab/x").unwrap());
        assert_eq!(store.get("packs/ab/x").unwrap(), b"hello world");
        assert_eq!(store.get_range("packs/ab/x", 6, 5).unwrap(), b"world");
        assert!(store.get_range("packs/ab/x", 6, 6).is_err(), "a range past the end is an error");
        store.put("index/i1", b"1").unwrap();
        let mut listed = store.list("packs/").unwrap();
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].key.as_str(), listed[0].size), ("packs/ab/x", 11));
        assert!(listed[0].modified.is_some_and(|t| (chrono::Utc::now() - t).num_seconds().abs() < 60));
        assert!(matches!(store.get("nope"), Err(Error::NotFound { .. })));
        store.delete("packs/ab/x").unwrap();
        store.delete("packs/ab/x").expect("deleting what is not there succeeds, as on S3");
        assert!(store.list("packs/").unwrap().is_empty());
        assert!(store.list("missing/").unwrap().is_empty());
        // A large object appears only when committed; an abandoned one leaves nothing.
        let mut w = store.create("packs/cd/y").unwrap();
        w.write(b"part 1, ").unwrap();
        w.write(b"part 2").unwrap();
        assert!(!store.exists("packs/cd/y").unwrap());
        w.commit().unwrap();
        assert_eq!(store.get("packs/cd/y").unwrap(), b"part 1, part 2");
        drop(store.create("packs/cd/z").unwrap());
        assert_eq!(fs::read_dir(dir.path().join("packs/cd")).unwrap().count(), 1);
        // put_new never replaces what is there.
        assert!(store.put_new("index/new", b"first").unwrap());
        assert!(!store.put_new("index/new", b"second").unwrap());
        assert_eq!(store.get("index/new").unwrap(), b"first");
        store.delete("index/new").unwrap();
        // A stale temporary file from a crashed write is never listed.
        fs::write(dir.path().join("index/.tmp-dead"), b"partial").unwrap();
        assert_eq!(store.list("index/").unwrap().len(), 1);
        // ... and is removed once older than the bound, while a fresh one (a write in progress) stays.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        File::options().write(true).open(dir.path().join("index/.tmp-dead")).unwrap().set_modified(old).unwrap();
        fs::write(dir.path().join("packs/cd/.tmp-live"), b"being written").unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        assert_eq!(store.remove_abandoned(hour_ago).unwrap(), 1);
        assert!(!dir.path().join("index/.tmp-dead").exists());
        assert!(dir.path().join("packs/cd/.tmp-live").exists());
    }

    /// A WAL segment in a repository folder that does not exist yet: every folder made on the
    /// way is durable in its parent, up to the root's own entry, before the write returns.
    #[test]
    fn every_new_folder_is_synced_up_to_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        for put_new in [false, true] {
            let store = LocalStore::new(&root);
            let key = format!("wal/000000010000000{}/000000010000000000000001", put_new as u8);
            if put_new {
                assert!(store.put_new(&key, b"segment").unwrap());
            } else {
                store.put(&key, b"segment").unwrap();
            }
            let synced = store.dirs.synced.lock().unwrap().clone();
            let object_dir = store.path(&key).parent().unwrap().to_path_buf();
            let mut needed = vec![object_dir.parent().unwrap().to_path_buf(), object_dir];
            if !put_new {
                needed.insert(0, root.clone());
                needed.insert(0, dir.path().to_path_buf());
            }
            assert_eq!(synced, needed, "folders synced for {key}");
        }
    }

    #[test]
    fn objects_and_folders_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("repo"));
        store.put("keys/abc", b"slot").unwrap();
        store.put_new("wal/x/y", b"segment").unwrap();
        let mut w = store.create("packs/ab/p").unwrap();
        w.write(b"pack").unwrap();
        w.commit().unwrap();
        let mode = |p: &str| fs::metadata(dir.path().join(p)).unwrap().permissions().mode() & 0o777;
        for folder in ["repo", "repo/keys", "repo/wal/x", "repo/packs/ab"] {
            assert_eq!(mode(folder), 0o700, "{folder}");
        }
        for file in ["repo/keys/abc", "repo/wal/x/y", "repo/packs/ab/p"] {
            assert_eq!(mode(file), 0o600, "{file}");
        }
    }
}

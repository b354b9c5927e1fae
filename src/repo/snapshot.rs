//! Snapshot manifests: what was backed up, when, from where, and the tree's chunk ids. A manifest
//! is written last, so a snapshot exists only once everything it refers to is stored.

use serde::{Deserialize, Serialize};

use super::Error;
use super::crypto::{Id, MasterKey};
use super::format::{self, ObjectType};
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Files and directories (a config snapshot).
    Paths,
    /// One stream read from standard input.
    Stream,
    /// A PostgreSQL physical base backup (the data directory, restorable with the WAL archive).
    #[serde(rename = "pg-base")]
    PgBase,
    /// A logical dump of one database (`pg_dump -Fc`), one stream restored with pg_restore.
    #[serde(rename = "pg-dump")]
    PgDump,
}

/// What a PostgreSQL base backup needs for a restore: where in the WAL it starts and ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgBackup {
    /// How it was taken: "stream" (pg_basebackup over the replication protocol) or "local"
    /// (the data directory read between pg_backup_start and pg_backup_stop).
    pub mode: String,
    /// The cluster's system identifier (from pg_control), as a decimal string.
    pub system_identifier: String,
    /// The server's major version (PG_VERSION), e.g. "15".
    pub pg_version: String,
    pub timeline: u32,
    /// Start and stop WAL positions, as PostgreSQL prints them ("0/2000028").
    pub start_lsn: String,
    pub stop_lsn: String,
    /// The WAL file holding the start position: the first one a restore needs.
    pub start_wal: String,
    /// Bytes per WAL segment, to name the segments between start and stop.
    pub wal_segment_size: u64,
    /// START TIME from backup_label, as PostgreSQL wrote it.
    pub start_time: String,
    /// Local mode: drctl's clock just before pg_backup_start. A later backup reuses a file from
    /// this one only if the file was last modified well before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Local mode: the tablespace_map pg_backup_stop returned (tablespace oid and original
    /// location per line; the contents are stored under pg_tblspc/<oid>). Empty without tablespaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tablespace_map: String,
}

impl PgBackup {
    /// The major version as a number (15 for "15"); `None` for a value no server wrote.
    pub fn major(&self) -> Option<u32> {
        self.pg_version.parse().ok()
    }

    /// What PostgreSQL allows (segments of 1 MiB to 1 GiB, a power of two) and a WAL range that
    /// parses and does not run backwards.
    fn check(&self) -> Result<(), String> {
        let size = self.wal_segment_size;
        if !size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&size) {
            return Err(format!("its WAL segment size {size} is not one PostgreSQL uses"));
        }
        let lsn = |text: &str| {
            crate::pg::wal::parse_lsn(text).ok_or_else(|| format!("its WAL position {text:?} does not parse"))
        };
        if lsn(&self.start_lsn)? > lsn(&self.stop_lsn)? {
            return Err(format!("its WAL range {}..{} runs backwards", self.start_lsn, self.stop_lsn));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of file content in the snapshot.
    pub logical_bytes: u64,
    /// Of those, bytes of files found unchanged since an earlier snapshot and not read again.
    #[serde(default)]
    pub unchanged_bytes: u64,
    /// Bytes this backup added to the repository (packs and index; not the manifest itself).
    pub stored_bytes: u64,
    pub new_chunks: u64,
    /// Of those, chunks stored as deltas against an earlier version of their block.
    #[serde(default)]
    pub delta_chunks: u64,
    pub duration_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub version: u8,
    pub time: chrono::DateTime<chrono::Utc>,
    pub hostname: String,
    pub kind: SnapshotKind,
    /// Source paths as given (absolute), for `Paths` snapshots.
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub stdin_name: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub tree: Vec<Id>,
    pub summary: Summary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg: Option<PgBackup>,
}

impl Snapshot {
    /// A manifest for a backup starting now; the backup fills in the tree, summary and details.
    pub fn new(kind: SnapshotKind, tags: &[String]) -> Snapshot {
        Snapshot {
            version: format::VERSION,
            time: chrono::Utc::now(),
            hostname: super::hostname(),
            kind,
            paths: Vec::new(),
            stdin_name: None,
            tags: tags.to_vec(),
            tree: Vec::new(),
            summary: Summary::default(),
            pg: None,
        }
    }
}

/// The tags a policy job puts on its snapshots: the policy and the source that took them.
pub fn policy_tags(policy: &str, source: &str) -> Vec<String> {
    vec![format!("policy={policy}"), format!("source={source}")]
}

/// The policy and source a snapshot was taken for, from its tags.
pub fn policy_source(tags: &[String]) -> Option<(&str, &str)> {
    let find = |key: &str| tags.iter().find_map(|t| t.strip_prefix(key)?.strip_prefix('='));
    Some((find("policy")?, find("source")?))
}

pub fn key_of(id: Id) -> String {
    format!("{}{id}", format::SNAPSHOTS_DIR)
}

pub fn save(store: &dyn Store, key: &MasterKey, snapshot: &Snapshot) -> Result<Id, Error> {
    let json = serde_json::to_vec(snapshot).expect("snapshots serialize");
    let bytes = format::seal_file(key, ObjectType::Snapshot, b"", &json);
    let id = Id::of_stored(&bytes);
    store.put(&key_of(id), &bytes)?;
    Ok(id)
}

pub fn load(store: &dyn Store, key: &MasterKey, id: Id) -> Result<Snapshot, Error> {
    let object = format!("snapshot {id}");
    decode(&open(store, key, id, &object)?, &object)
}

/// The manifest in the authenticated JSON `json`; `object` names it in errors. A base backup's
/// WAL segment size and positions are checked here, before the archive is named from them.
pub fn decode(json: &[u8], object: &str) -> Result<Snapshot, Error> {
    let snapshot: Snapshot =
        serde_json::from_slice(json).map_err(|e| Error::corrupt(object, format!("it does not parse: {e}")))?;
    if let Some(pg) = &snapshot.pg {
        pg.check().map_err(|reason| Error::corrupt(object, reason))?;
    }
    Ok(snapshot)
}

/// The authenticated JSON of manifest `id`, checked against its name.
fn open(store: &dyn Store, key: &MasterKey, id: Id, object: &str) -> Result<Vec<u8>, Error> {
    let bytes = store.get(&key_of(id)).map_err(|e| Error::missing_or(e, object))?;
    if Id::of_stored(&bytes) != id {
        return Err(Error::corrupt(object, "its content does not match its name"));
    }
    format::open_file(key, ObjectType::Snapshot, b"", &bytes, object)
}

/// Whether manifest `id` is one this repository's key sealed, unchanged: then it is not
/// damage, even if this drctl cannot parse it (a newer release may have written it).
pub fn is_authentic(store: &dyn Store, key: &MasterKey, id: Id) -> Result<bool, Error> {
    match open(store, key, id, "") {
        Ok(_) => Ok(true),
        Err(Error::Store(e)) => Err(Error::Store(e)),
        Err(_) => Ok(false),
    }
}

pub fn list(store: &dyn Store) -> Result<Vec<Id>, Error> {
    Ok(store.list(format::SNAPSHOTS_DIR)?.iter().filter_map(|o| format::id_of_key(&o.key)).collect())
}

/// The snapshots of a repository: those that can be read, oldest first, and those that cannot.
pub struct Loaded {
    pub good: Vec<(Id, Snapshot)>,
    pub unreadable: Vec<(Id, Error)>,
}

/// Every snapshot that can be read, oldest first, and the manifests that cannot (damaged or gone
/// since the listing), each with its error. An outage is an error: it says nothing about the
/// manifests, nor does a manifest of a newer format (this drctl must not judge it).
pub fn load_tolerant(store: &dyn Store, key: &MasterKey) -> Result<Loaded, Error> {
    let (mut good, mut damaged) = (Vec::new(), Vec::new());
    for id in list(store)? {
        match load(store, key, id) {
            Ok(s) => good.push((id, s)),
            Err(e @ (Error::Store(_) | Error::UnsupportedVersion { .. })) => return Err(e),
            Err(e) => damaged.push((id, e)),
        }
    }
    good.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    Ok(Loaded { good, unreadable: damaged })
}

/// Every snapshot that can be read, oldest first. One damaged manifest must not block listing,
/// restoring or retention of the others: it is left out with a warning naming it (`check`
/// reports it, `repair snapshots` removes it). Left out, it is never counted as a kept snapshot.
pub fn load_all(store: &dyn Store, key: &MasterKey) -> Result<Vec<(Id, Snapshot)>, Error> {
    let Loaded { good, unreadable } = load_tolerant(store, key)?;
    for (id, err) in unreadable {
        tracing::warn!(
            "snapshot {id} is skipped: {err}; run `drctl check` for details and `drctl repair snapshots` to remove it"
        );
    }
    Ok(good)
}

/// Resolves `latest` or an id prefix (at least 4 hex characters) to one snapshot.
pub fn find(store: &dyn Store, key: &MasterKey, query: &str) -> Result<(Id, Snapshot), Error> {
    if query == "latest" {
        return load_all(store, key)?.pop().ok_or(Error::NoSnapshots);
    }
    let q = query.to_ascii_lowercase();
    if q.len() < 4 || !q.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::BadSnapshotQuery { query: query.to_string() });
    }
    let matches: Vec<Id> = list(store)?.into_iter().filter(|id| id.to_hex().starts_with(&q)).collect();
    match matches.as_slice() {
        [id] => Ok((*id, load(store, key, *id)?)),
        [] => Err(Error::SnapshotNotFound { query: query.to_string() }),
        many => Err(Error::AmbiguousSnapshot { query: query.to_string(), count: many.len() }),
    }
}

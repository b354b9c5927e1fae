use clap::Args;
use std::path::PathBuf;

use super::job::MetricsArgs;
use super::{AccessArgs, GlobalArgs, RepoArgs, human_bytes};
use crate::ops::backup::{self, BackupOptions, BaseCacheOptions, LocalOptions, Source};
use crate::pg::Conn;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["path", "stdin", "pg", "policy"])))]
pub struct BackupArgs {
    /// Repository location: a local directory or s3://bucket/prefix[?region=NAME] (not with
    /// --policy, whose repositories are in the policy).
    #[arg(long, env = "DRCTL_REPO", value_name = "LOCATION", required_unless_present = "policy")]
    pub repo: Option<String>,
    #[command(flatten)]
    pub access: AccessArgs,
    /// Run what a policy file says: its sources that are due by their schedules (or those
    /// --source names), the RDS snapshot, then the copies to its other repositories and retention.
    /// Exits with the first failed step's code; --json prints every step.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["path", "stdin", "pg"])]
    pub policy: Option<PathBuf>,
    /// With --policy: run this source now, due or not (repeatable; `rds-snapshot` names the RDS
    /// snapshot of a `kind: rds` policy). Without it, every due source runs.
    #[arg(long = "source", value_name = "NAME", requires = "policy")]
    pub sources: Vec<String>,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// A file or directory to back up (repeatable). Stored under its absolute path.
    #[arg(long, value_name = "PATH")]
    pub path: Vec<PathBuf>,
    /// Back up one stream read from standard input.
    #[arg(long, requires = "stdin_name")]
    pub stdin: bool,
    /// Take a PostgreSQL base backup of this server (a libpq connection string or URL; PG*
    /// variables apply) over the replication protocol. WAL must be archived with `drctl wal-push`.
    #[arg(long, value_name = "DSN")]
    pub pg: Option<String>,
    /// With --pg: how the base backup is taken. `stream`: over the replication protocol
    /// (pg_basebackup), from anywhere. `local`: drctl runs beside the server and reads --pgdata
    /// itself, in parallel, skipping files unchanged since the previous local backup.
    #[arg(long, value_enum, default_value = "stream", requires = "pg", conflicts_with = "pg_dump")]
    pub pg_mode: PgMode,
    /// With --pg-mode local: the server's data directory.
    #[arg(long, value_name = "DIR", env = "PGDATA", required_if_eq("pg_mode", "local"))]
    pub pgdata: Option<PathBuf>,
    /// With --pg-mode local: read every file, even those unchanged since the previous backup.
    #[arg(long, requires = "pgdata")]
    pub read_all: bool,
    /// With --pg-mode local into S3: where to keep a local copy of the packs written, from which
    /// the next backup reads the previous versions of changed blocks instead of downloading them
    /// (default: $XDG_CACHE_HOME/drctl, else ~/.cache/drctl). Losing it costs downloads only.
    #[arg(long, value_name = "DIR", env = "DRCTL_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The base cache's size bound in GiB; the packs least recently used go first.
    #[arg(long, value_name = "GIB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_max_gib: u64,
    /// With --pg-mode local: keep no base cache (every delta base is downloaded).
    #[arg(long, requires = "pgdata")]
    pub no_cache: bool,
    /// With --pg: a logical dump of this database (pg_dump -Fc, restored with pg_restore)
    /// instead of a base backup.
    #[arg(long, value_name = "DBNAME", requires = "pg")]
    pub pg_dump: Option<String>,
    /// The file name the stream is stored (and restored) as.
    #[arg(long, value_name = "NAME")]
    pub stdin_name: Option<String>,
    /// A label for the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// zstd level for this backup (default: the repository's).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: Option<i32>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PgMode {
    Stream,
    Local,
}

pub fn run(args: BackupArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    if let Some(path) = &args.policy {
        return super::job::run(path, &args, global);
    }
    let repo = RepoArgs { repo: args.repo.clone().expect("required by clap"), access: args.access }.open()?;
    let base_cache = match (&args.cache_dir, args.no_cache || args.pg_mode != PgMode::Local) {
        (_, true) => None,
        (Some(dir), false) => Some(BaseCacheOptions { dir: dir.clone(), max_bytes: 0 }),
        (None, false) => BaseCacheOptions::default_location(),
    }
    .map(|cache| BaseCacheOptions { max_bytes: args.cache_max_gib << 30, ..cache });
    let options = BackupOptions { tags: args.tags, compression_level: args.compression_level, base_cache };
    let progress = super::progress(global);
    let source = match (args.pg, args.stdin_name) {
        (Some(dsn), _) => match (Conn::new(dsn), args.pg_dump) {
            (conn, Some(database)) => Source::PgDump { conn, database },
            (conn, None) if args.pg_mode == PgMode::Local => {
                let local = LocalOptions { pgdata: args.pgdata.expect("required by clap"), full: args.read_all };
                Source::PgLocal { conn, local }
            }
            (conn, None) => Source::PgStream { conn },
        },
        (None, Some(name)) if args.stdin => Source::Stdin { name },
        _ => Source::Paths(args.path),
    };
    let (id, snapshot) = backup::take(&repo, &source, &options, progress.as_ref())?;
    let s = &snapshot.summary;
    if args.json {
        let out = serde_json::json!({
            "snapshot_id": id.to_hex(),
            "short_id": id.short(),
            "time": snapshot.time,
            "files": s.files,
            "dirs": s.dirs,
            "symlinks": s.symlinks,
            "logical_bytes": s.logical_bytes,
            "unchanged_bytes": s.unchanged_bytes,
            "stored_bytes": s.stored_bytes,
            "new_chunks": s.new_chunks,
            "delta_chunks": s.delta_chunks,
            "duration_seconds": s.duration_seconds,
        });
        println!("{out}");
    } else if !global.quiet {
        println!(
            "snapshot {} saved: {} files, {} dirs, {}{}, {} new in {} chunks, {:.1} s ({:.0} MB/s)",
            id.short(),
            s.files,
            s.dirs,
            human_bytes(s.logical_bytes),
            match s.unchanged_bytes {
                0 => String::new(),
                n => format!(" ({} unchanged, not read)", human_bytes(n)),
            },
            human_bytes(s.stored_bytes),
            s.new_chunks,
            s.duration_seconds,
            s.logical_bytes as f64 / 1e6 / s.duration_seconds.max(1e-9),
        );
    }
    Ok(0)
}

use clap::Args;
use std::path::PathBuf;

use super::{GlobalArgs, RepoArgs, human_bytes};
use crate::backup::{self, BackupOptions, LocalOptions};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["path", "stdin", "pg"])))]
pub struct BackupArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
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

pub fn run(args: BackupArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let repo = args.repo.open()?;
    let options = BackupOptions { tags: args.tags, compression_level: args.compression_level };
    let progress = super::progress(global);
    let (id, snapshot) = match (args.pg, args.stdin_name) {
        (Some(dsn), _) => match &args.pg_dump {
            Some(database) => backup::backup_pg_dump(&repo, &dsn, database, &options, progress.as_ref())?,
            None if args.pg_mode == PgMode::Local => {
                let local = LocalOptions { pgdata: args.pgdata.expect("required by clap"), full: args.read_all };
                backup::backup_pg_local(&repo, &dsn, &local, &options, progress.as_ref())?
            }
            None => backup::backup_pg_stream(&repo, &dsn, &options, progress.as_ref())?,
        },
        (None, Some(name)) if args.stdin => {
            backup::backup_stream(&repo, std::io::stdin(), &name, &options, progress.as_ref())?
        }
        _ => backup::backup_paths(&repo, &args.path, &options, progress.as_ref())?,
    };
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
    Ok(())
}

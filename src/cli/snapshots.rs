use clap::Args;

use super::{RepoArgs, human_bytes};
use crate::repo::snapshot::{self, SnapshotKind};

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Print a JSON array (oldest first) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SnapshotsArgs) -> anyhow::Result<()> {
    let repo = args.repo.open()?;
    let all = snapshot::load_all(repo.store(), repo.key())?;
    if args.json {
        let list: Vec<_> = all
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id.to_hex(),
                    "short_id": id.short(),
                    "time": s.time,
                    "hostname": s.hostname,
                    "kind": s.kind,
                    "paths": s.paths,
                    "stdin_name": s.stdin_name,
                    "tags": s.tags,
                    "summary": s.summary,
                    "pg": s.pg,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<8}  {:<20}  {:<12}  {:>10}  {:>10}  {:<16}  source",
        "id", "time (UTC)", "host", "size", "new", "tags"
    );
    for (id, s) in &all {
        let source = match s.kind {
            SnapshotKind::Paths => s.paths.join(" "),
            SnapshotKind::Stream => format!("stdin:{}", s.stdin_name.as_deref().unwrap_or("")),
            SnapshotKind::PgDump => format!("pg_dump {}", s.stdin_name.as_deref().unwrap_or("")),
            SnapshotKind::PgBase => match &s.pg {
                Some(pg) => format!(
                    "postgres {} base backup, timeline {}, WAL {}..{}",
                    pg.pg_version, pg.timeline, pg.start_lsn, pg.stop_lsn
                ),
                None => "postgres base backup".into(),
            },
        };
        println!(
            "{:<8}  {:<20}  {:<12}  {:>10}  {:>10}  {:<16}  {}",
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            human_bytes(s.summary.logical_bytes),
            human_bytes(s.summary.stored_bytes),
            s.tags.join(","),
            source
        );
    }
    println!("{} snapshot(s)", all.len());
    Ok(())
}

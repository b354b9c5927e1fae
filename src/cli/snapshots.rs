use clap::Args;

use super::{RepoArgs, human_bytes};
use crate::ops::catalog::{Catalog, Window};
use crate::pg::wal::format_lsn;
use crate::repo::snapshot::{Snapshot, SnapshotKind};

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Print a JSON array (oldest first) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SnapshotsArgs) -> anyhow::Result<()> {
    let catalog = Catalog::load(&args.repo.open()?)?;
    if args.json {
        let list: Vec<_> = catalog
            .snapshots
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
                    "missing_wal": catalog.missing_wal(s),
                    "timelines": s.pg.as_ref().map(|pg| catalog.timelines(pg.wal_segment_size)),
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
    for (id, s) in &catalog.snapshots {
        println!(
            "{:<8}  {:<20}  {:<12}  {:>10}  {:>10}  {:<16}  {}",
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            human_bytes(s.summary.logical_bytes),
            human_bytes(s.summary.stored_bytes),
            s.tags.join(","),
            source(s)
        );
    }
    println!("{} snapshot(s)", catalog.snapshots.len());
    for window in catalog.windows() {
        print_window(&window);
    }
    Ok(())
}

/// What a snapshot holds, in a few words.
fn source(s: &Snapshot) -> String {
    match s.kind {
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
    }
}

/// One cluster's point-in-time window: from the end of the oldest restorable base backup to the
/// newest archived WAL, with every gap named.
fn print_window(window: &Window) {
    println!("\nPostgreSQL cluster {}: point-in-time recovery", window.system_identifier);
    match window.oldest_restorable {
        Some((id, s)) => {
            println!("  from {} (end of base backup {})", s.time.format("%Y-%m-%d %H:%M:%S UTC"), id.short())
        }
        None => println!("  no base backup is restorable: their WAL is not archived"),
    }
    for ((id, _), missing) in &window.unrestorable {
        println!("  base backup {} cannot be restored: WAL {} is not archived", id.short(), missing.join(", "));
    }
    for tl in &window.timelines {
        println!("  to the end of WAL {} (timeline {}), the newest archived", tl.newest, tl.timeline);
        for (first, last) in &tl.gaps {
            println!("  gap: WAL {first} to {last} is missing; recovery through it stops before {first}");
        }
    }
    for fork in &window.forks {
        let (tli, parent) = (fork.timeline, fork.parent);
        print!("  timeline {tli} leaves timeline {parent} at {}", format_lsn(fork.at));
        if fork.parent_goes_on {
            print!(
                "; timeline {parent} goes on past it in the archive: two clusters archived here, and \
                 `--point-in-time latest` follows the newest timeline (name another with --target-timeline)"
            );
        }
        println!();
    }
}

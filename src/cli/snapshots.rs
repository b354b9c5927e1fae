use clap::Args;
use std::collections::BTreeMap;

use super::{RepoArgs, human_bytes};
use crate::pg::wal::{WalKind, WalName, format_lsn};
use crate::pg::window::Archive;
use crate::repo::snapshot::{self, Snapshot, SnapshotKind};
use crate::repo::{crypto::Id, wal};

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
    let wal = wal::list(repo.store())?.into_iter().map(|(name, _)| name).collect::<Vec<_>>();
    let histories = load_histories(&repo, &wal);
    // One view of the archive per WAL segment size the base backups use (usually one), not one
    // per snapshot.
    let mut archives = BTreeMap::new();
    for pg in all.iter().filter_map(|(_, s)| s.pg.as_ref()) {
        archives.entry(pg.wal_segment_size).or_insert_with(|| Archive::new(&wal, pg.wal_segment_size));
    }
    // A base backup's WAL range must be archived whole, or it cannot even reach consistency.
    let missing_wal = |s: &Snapshot| {
        s.pg.as_ref().map(|pg| archives[&pg.wal_segment_size].missing_for(pg.timeline, &pg.start_lsn, &pg.stop_lsn))
    };
    if args.json {
        let timelines: BTreeMap<u64, Vec<serde_json::Value>> =
            archives.iter().map(|(size, archive)| (*size, timelines_json(archive, &histories))).collect();
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
                    "missing_wal": missing_wal(s),
                    "timelines": s.pg.as_ref().map(|pg| &timelines[&pg.wal_segment_size]),
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
    print_pitr_window(&all, &wal, &histories, &missing_wal);
    Ok(())
}

/// The archived timeline history files, as (timeline, content). One that cannot be read is
/// left out with a warning: it hides where its timeline forks, nothing else.
fn load_histories(repo: &crate::repo::Repository, wal: &[WalName]) -> Vec<(u32, Vec<u8>)> {
    let histories = wal.iter().filter(|n| n.kind() == WalKind::History);
    histories
        .filter_map(|name| match wal::fetch(repo, name) {
            Ok(content) => Some((name.timeline(), content?)),
            Err(e) => {
                tracing::warn!(wal = %name, error = %e, "cannot read a timeline history file");
                None
            }
        })
        .collect()
}

/// The archive's timelines for `--json`: each with its newest segment and, from its history
/// file, where it leaves its parent and whether the parent goes on past that point.
fn timelines_json(archive: &Archive, histories: &[(u32, Vec<u8>)]) -> Vec<serde_json::Value> {
    let segments = archive.timelines();
    let mut numbers: Vec<u32> = segments.iter().map(|t| t.timeline).chain(histories.iter().map(|h| h.0)).collect();
    numbers.sort();
    numbers.dedup();
    numbers
        .into_iter()
        .map(|tli| {
            let fork = histories.iter().find(|h| h.0 == tli).and_then(|(_, content)| archive.fork(tli, content));
            serde_json::json!({
                "timeline": tli,
                "newest_wal": segments.iter().find(|t| t.timeline == tli).map(|t| t.newest.clone()),
                "parent": fork.as_ref().map(|f| f.parent),
                "fork_lsn": fork.as_ref().map(|f| format_lsn(f.at)),
                "parent_goes_on": fork.as_ref().map(|f| f.parent_goes_on),
            })
        })
        .collect()
}

/// The point-in-time window per PostgreSQL cluster: from the end of the oldest restorable base
/// backup to the newest archived WAL, with every gap named.
fn print_pitr_window(
    all: &[(Id, Snapshot)],
    wal: &[WalName],
    histories: &[(u32, Vec<u8>)],
    missing_wal: &dyn Fn(&Snapshot) -> Option<Vec<String>>,
) {
    let mut clusters: Vec<&str> =
        all.iter().filter_map(|(_, s)| s.pg.as_ref()).map(|pg| pg.system_identifier.as_str()).collect();
    clusters.sort();
    clusters.dedup();
    for system in clusters {
        let backups: Vec<&(Id, Snapshot)> =
            all.iter().filter(|(_, s)| s.pg.as_ref().is_some_and(|pg| pg.system_identifier == system)).collect();
        println!("\nPostgreSQL cluster {system}: point-in-time recovery");
        let mut restorable = backups.iter().filter(|(_, s)| missing_wal(s).is_some_and(|m| m.is_empty()));
        match restorable.next() {
            Some((id, s)) => {
                println!("  from {} (end of base backup {})", s.time.format("%Y-%m-%d %H:%M:%S UTC"), id.short())
            }
            None => println!("  no base backup is restorable: their WAL is not archived"),
        }
        for (id, s) in &backups {
            if let Some(missing) = missing_wal(s).filter(|m| !m.is_empty()) {
                println!("  base backup {} cannot be restored: WAL {} is not archived", id.short(), missing.join(", "));
            }
        }
        let segment_size = backups.iter().find_map(|(_, s)| s.pg.as_ref()).map_or(16 << 20, |pg| pg.wal_segment_size);
        let archive = Archive::new(wal, segment_size);
        for tl in archive.timelines() {
            println!("  to the end of WAL {} (timeline {}), the newest archived", tl.newest, tl.timeline);
            for (first, last) in tl.gaps {
                println!("  gap: WAL {first} to {last} is missing; recovery through it stops before {first}");
            }
        }
        for fork in histories.iter().filter_map(|(tli, content)| archive.fork(*tli, content)) {
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
}

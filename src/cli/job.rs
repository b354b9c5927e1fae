//! A policy job's report as people read it (`backup --policy` without --json).

use super::human_bytes;
use crate::job::JobReport;

pub fn print(report: &JobReport) {
    let failed = report.failures().len();
    let verdict = match failed {
        0 => "every step succeeded".to_string(),
        n => format!("{n} step(s) failed, exit {}", report.exit_code),
    };
    println!("policy {}: job took {:.1} s, {verdict}", report.policy, report.duration_seconds);
    for s in &report.sources {
        let what = match (&s.error, s.ran) {
            (Some(_), _) => "FAILED (below)".to_string(),
            (None, true) => s
                .snapshots
                .iter()
                .map(|t| {
                    format!(
                        "snapshot {} ({}: {}, {} new, {:.1} s)",
                        t.short_id,
                        t.label,
                        human_bytes(t.logical_bytes),
                        human_bytes(t.stored_bytes),
                        t.duration_seconds
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            (None, false) => match s.next_run {
                Some(next) => format!("next run {}", next.format("%Y-%m-%d %H:%M UTC")),
                None => String::new(),
            },
        };
        println!("  source {:<16} {}: {what}", s.name, s.reason);
    }
    if let Some(r) = &report.rds {
        let done = match (&r.error, &r.snapshot) {
            (Some(_), _) => "FAILED (below)".to_string(),
            (None, Some(copy)) => format!("snapshot {} copied to {}", copy.snapshot_id, copy.dr_region),
            (None, None) => r.reason.clone(),
        };
        let expired = r.expired.as_ref().map_or(0, |e| e.deleted.len());
        println!("  RDS {}: {done}; {expired} expired snapshot(s) deleted", r.instance);
    }
    if let Some(w) = &report.wal {
        match (&w.error, &w.last_archived_wal) {
            (Some(_), _) => println!("  WAL archiver: FAILED (below)"),
            (None, Some(name)) => println!(
                "  WAL archiver: last archived {name}, {} complete segment(s) waiting, {} failure(s) since reset",
                w.segments_behind.map_or("?".to_string(), |n| n.to_string()),
                w.failed_count
            ),
            (None, None) => println!("  WAL archiver: nothing archived yet, {} failure(s)", w.failed_count),
        }
    }
    for c in &report.copies {
        match &c.error {
            Some(_) => println!("  copy to {}: FAILED (below)", c.repository),
            None => println!(
                "  copy to {}: {} snapshot(s), {} WAL file(s), {} sent; {} snapshot(s) missing",
                c.repository,
                c.snapshots_copied,
                c.wal_copied,
                human_bytes(c.bytes_copied),
                c.missing_snapshots
            ),
        }
    }
    for r in &report.retention {
        match &r.error {
            Some(_) => println!("  retention in {}: FAILED (below)", r.repository),
            None => println!(
                "  retention in {}: {} snapshot(s) kept, {} removed, {} WAL file(s) removed{}",
                r.repository,
                r.snapshots_kept,
                r.snapshots_removed,
                r.wal_removed,
                if r.pruned {
                    format!(
                        "; prune deleted {} pack(s) ({}), marked {}",
                        r.packs_deleted,
                        human_bytes(r.bytes_deleted),
                        r.packs_marked
                    )
                } else {
                    String::new()
                }
            ),
        }
    }
}

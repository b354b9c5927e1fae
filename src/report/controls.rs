//! The controls: each a pure function of the evidence, the policy and the period, giving PASS,
//! FAIL or NO-EVIDENCE with the evidence behind it. Lists of items (late runs, gaps, missing
//! copies) name every item up to [`LIST_LIMIT`] and count the rest.

use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::gather::{Evidence, Holdings};
use super::{Control, Period, Status, minute, span};
use crate::pg::wal::{WalKind, WalName};
use crate::policy::{Policy, Schedule, SourceKind};
use crate::repo::forget::group_of;
use crate::repo::retention::{self, Item};
use crate::repo::snapshot::{Snapshot, SnapshotKind, policy_source};
use crate::repo::{Id, key::SlotKind};

/// Items a control names one by one before it only counts the rest.
const LIST_LIMIT: usize = 40;
/// The longest a scheduled run may start after its time and still be on time: a quarter of the
/// interval to the next run, at most an hour (CronJobs and the scheduler start within a minute).
fn grace(interval: Duration) -> Duration {
    (interval / 4).min(Duration::hours(1))
}

pub fn all(policy: &Policy, period: &Period, as_of: DateTime<Utc>, ev: &Evidence) -> Vec<Control> {
    let mut controls = Vec::new();
    let from = period.from;
    for source in &policy.sources {
        let runs = runs(policy, &source.name, &source.what, ev);
        let failed = failures(ev, &source.name);
        controls.push(schedule(
            &format!("schedule/{}", source.name),
            &format!("Schedule adherence: {}", source.name),
            &source.schedule,
            &runs,
            &failed,
            from.max(ev.primary.created),
            as_of,
        ));
        controls.push(newest_age(&source.name, &source.schedule, &runs, as_of));
    }
    if policy.archives_wal() {
        controls.push(wal_continuity(policy, from, as_of, &ev.primary));
    }
    controls.push(encryption(ev, as_of, policy.repositories.key_rotation));
    controls.extend(copies(policy, from, as_of, ev));
    controls.extend(object_lock(from, as_of, ev));
    controls.push(retention(policy, from, as_of, ev));
    controls.push(checks(from, as_of, ev));
    controls.push(drills(from, as_of, ev));
    controls.push(runbooks(from, as_of, ev));
    if let Some(rds) = &policy.rds {
        controls.push(rds_snapshots(rds, from.max(ev.primary.created), as_of, ev));
    }
    controls
}

/// One run of a source: a snapshot it took (for a logical dump, one per database).
#[derive(Debug, Clone)]
pub struct Run {
    pub id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub stored_bytes: u64,
}

/// Every run of `source` on record: the snapshots present and those job records name (retention
/// may have removed them since), once each.
pub fn runs(policy: &Policy, source: &str, what: &SourceKind, ev: &Evidence) -> Vec<Run> {
    // A base backup's time is its end; every other snapshot's is its start.
    let ends_at = matches!(what, SourceKind::BaseBackup(_));
    let run = |id: String, time: DateTime<Utc>, seconds: f64, stored_bytes: u64| {
        let d = Duration::milliseconds((seconds * 1000.0) as i64);
        let (start, end) = if ends_at { (time - d, time) } else { (time, time + d) };
        Run { id, start, end, stored_bytes }
    };
    let mut by_id: BTreeMap<String, Run> = BTreeMap::new();
    for job in &ev.jobs {
        for s in job.sources.iter().filter(|s| s.name == source) {
            for t in &s.snapshots {
                by_id.insert(t.id.clone(), run(t.id.clone(), t.time, t.duration_seconds, t.stored_bytes));
            }
        }
    }
    for (id, s, _) in &ev.primary.snapshots {
        if policy_source(&s.tags) == Some((policy.name.as_str(), source)) {
            let r = run(id.to_hex(), s.time, s.summary.duration_seconds, s.summary.stored_bytes);
            by_id.insert(r.id.clone(), r);
        }
    }
    let mut all: Vec<Run> = by_id.into_values().collect();
    all.sort_by_key(|r| r.start);
    all
}

/// Failed attempts of `source` on record: when the job started, and why it failed.
fn failures(ev: &Evidence, source: &str) -> Vec<(DateTime<Utc>, String)> {
    let mut failed = Vec::new();
    for job in &ev.jobs {
        for s in job.sources.iter().filter(|s| s.name == source && s.ran) {
            if let Some(e) = &s.error {
                failed.push((job.started, e.message.clone()));
            }
        }
    }
    failed
}

/// A scheduled run as the report judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    OnTime,
    Late(Duration),
    Missed,
}

/// Each run `schedule` expected in `[from, as_of)` with how it went: on time when a run started
/// within the grace after it, late when one started before the next scheduled time, else missed.
/// A run whose grace has not ended by `as_of` is not judged yet.
pub fn slots(
    schedule: &Schedule,
    starts: &[DateTime<Utc>],
    from: DateTime<Utc>,
    as_of: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, Slot)> {
    let mut out = Vec::new();
    let mut next = schedule.latest_at_or_before(from).filter(|t| *t == from).or_else(|| schedule.next_after(from));
    let mut i = starts.partition_point(|s| *s < from);
    while let Some(at) = next {
        if at >= as_of {
            break;
        }
        let following = schedule.next_after(at);
        let grace = grace(following.map_or(Duration::hours(1), |f| f - at));
        if at + grace > as_of {
            break;
        }
        let end = following.unwrap_or(as_of).min(as_of);
        while i < starts.len() && starts[i] < at {
            i += 1;
        }
        let slot = match starts.get(i) {
            Some(s) if *s < end => match *s - at {
                delay if delay <= grace => Slot::OnTime,
                delay => Slot::Late(delay),
            },
            _ => Slot::Missed,
        };
        out.push((at, slot));
        next = following;
    }
    out
}

fn schedule(
    id: &str,
    title: &str,
    schedule: &Schedule,
    runs: &[Run],
    failed: &[(DateTime<Utc>, String)],
    from: DateTime<Utc>,
    as_of: DateTime<Utc>,
) -> Control {
    let starts: Vec<DateTime<Utc>> = runs.iter().map(|r| r.start).collect();
    let judged = slots(schedule, &starts, from, as_of);
    let mut evidence = vec![format!(
        "{} runs expected from `{}` (UTC) between {} and {}; {} runs on record",
        judged.len(),
        schedule.as_str(),
        minute(from),
        minute(as_of),
        starts.iter().filter(|s| **s >= from && **s < as_of).count()
    )];
    if judged.is_empty() {
        return control(id, title, Status::NoEvidence, "no run was due in the period".into(), evidence);
    }
    let on_time = judged.iter().filter(|(_, s)| *s == Slot::OnTime).count();
    let late: Vec<String> = judged
        .iter()
        .filter_map(|(at, s)| match s {
            Slot::Late(d) => {
                Some(format!("late: the run of {} started {} late", minute(*at), span(d.num_seconds() as f64)))
            }
            _ => None,
        })
        .collect();
    let missed: Vec<String> = judged
        .iter()
        .filter(|(_, s)| *s == Slot::Missed)
        .map(|(at, _)| {
            let next = schedule.next_after(*at).unwrap_or(as_of);
            match failed.iter().find(|(t, _)| t >= at && *t < next) {
                Some((t, why)) => format!("missed: {} (the job of {} failed: {why})", minute(*at), minute(*t)),
                None => format!("missed: {} (no run on record)", minute(*at)),
            }
        })
        .collect();
    let percent = 100.0 * on_time as f64 / judged.len() as f64;
    let finding = format!(
        "{on_time} of {} runs on time ({percent:.1}%), {} late, {} missed",
        judged.len(),
        late.len(),
        missed.len()
    );
    let status = if missed.is_empty() { Status::Pass } else { Status::Fail };
    extend_limited(&mut evidence, missed);
    extend_limited(&mut evidence, late);
    control(id, title, status, finding, evidence)
}

fn newest_age(source: &str, schedule: &Schedule, runs: &[Run], as_of: DateTime<Utc>) -> Control {
    let id = format!("backup-age/{source}");
    let title = format!("Newest backup age: {source}");
    let gap = schedule.longest_gap();
    let limit = gap + grace(gap);
    let Some(newest) = runs.iter().filter(|r| r.end <= as_of).map(|r| r.end).max() else {
        return control(&id, &title, Status::NoEvidence, "no backup of this source on record".into(), vec![]);
    };
    let age = (as_of - newest).num_seconds() as f64;
    let status = if age <= limit.num_seconds() as f64 { Status::Pass } else { Status::Fail };
    let finding = format!(
        "the newest backup ended {} before {} (allowed: {}, the schedule's longest gap and its grace)",
        span(age),
        minute(as_of),
        span(limit.num_seconds() as f64)
    );
    control(&id, &title, status, finding, vec![format!("newest backup ended {}", minute(newest))])
}

/// What the WAL archive proves restorable: per base backup, from its end to the last WAL file
/// written before the first missing segment of its timeline.
pub struct Coverage {
    /// Restorable intervals, merged, within `[window.0, window.1]`.
    pub covered: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// What is judged: from the oldest base backup still held (or the period's start) to `as_of`.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Missing segments per timeline: first and last missing, and when the files around them
    /// were written.
    pub gaps: Vec<WalGap>,
}

/// The last segment of an unbroken run of segments, and when it was written.
type RunEnd = (u64, Option<DateTime<Utc>>);

pub struct WalGap {
    pub timeline: u32,
    pub first_missing: String,
    pub last_missing: String,
    pub count: u64,
    pub after: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
}

pub fn wal_coverage(from: DateTime<Utc>, as_of: DateTime<Utc>, primary: &Holdings) -> Coverage {
    let bases: Vec<&Snapshot> = primary
        .snapshots
        .iter()
        .filter(|(_, s, _)| s.kind == SnapshotKind::PgBase && s.pg.is_some())
        .map(|(_, s, _)| s)
        .collect();
    let segment_size =
        bases.iter().filter_map(|s| s.pg.as_ref()).map(|p| p.wal_segment_size).next().unwrap_or(16 << 20);
    let per_log = 0x1_0000_0000 / segment_size.max(1);
    // timeline -> segment number -> when written
    let mut segments: BTreeMap<u32, BTreeMap<u64, Option<DateTime<Utc>>>> = BTreeMap::new();
    for (name, written) in &primary.wal {
        if name.kind() == WalKind::Segment
            && let Some(n) = name.segment_number(per_log)
        {
            segments.entry(name.timeline()).or_default().insert(n, *written);
        }
    }
    let mut gaps = Vec::new();
    for (&tli, segs) in &segments {
        let numbers: Vec<(&u64, &Option<DateTime<Utc>>)> = segs.iter().collect();
        for w in numbers.windows(2) {
            let ((&a, after), (&b, before)) = (w[0], w[1]);
            if b > a + 1 {
                let name = |n: u64| crate::pg::wal::segment_name(tli, n, segment_size);
                gaps.push(WalGap {
                    timeline: tli,
                    first_missing: name(a + 1),
                    last_missing: name(b - 1),
                    count: b - a - 1,
                    after: *after,
                    before: *before,
                });
            }
        }
    }
    // Each timeline's unbroken runs of segments: first → (last, when the last was written).
    let mut runs: BTreeMap<u32, BTreeMap<u64, RunEnd>> = BTreeMap::new();
    for (&tli, segs) in &segments {
        let of_timeline = runs.entry(tli).or_default();
        let mut current: Option<(u64, u64, Option<DateTime<Utc>>)> = None;
        for (&n, &written) in segs {
            current = match current {
                Some((first, last, _)) if n == last + 1 => Some((first, n, written)),
                Some((first, last, at)) => {
                    of_timeline.insert(first, (last, at));
                    Some((n, n, written))
                }
                None => Some((n, n, written)),
            };
        }
        if let Some((first, last, at)) = current {
            of_timeline.insert(first, (last, at));
        }
    }
    let mut intervals = Vec::new();
    for base in &bases {
        let pg = base.pg.as_ref().expect("filtered");
        let Some(start) = WalName::parse(&pg.start_wal).and_then(|n| n.segment_number(per_log)) else { continue };
        // The run holding the backup's first segment: its WAL reaches as far as that run goes.
        let run = runs.get(&pg.timeline).and_then(|r| r.range(..=start).next_back());
        let reach = match run {
            Some((_, &(last, at))) if last >= start => at,
            _ => None,
        };
        if let Some(reach) = reach.filter(|r| *r >= base.time) {
            intervals.push((base.time, reach));
        }
    }
    intervals.sort();
    let oldest = bases.iter().map(|b| b.time).min();
    let window = oldest.map(|o| (o.max(from), as_of)).filter(|(a, b)| a < b);
    let mut covered: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    if let Some((lo, hi)) = window {
        for (a, b) in intervals {
            let (a, b) = (a.max(lo), b.min(hi));
            if a >= b {
                continue;
            }
            match covered.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => covered.push((a, b)),
            }
        }
    }
    Coverage { covered, window, gaps }
}

impl Coverage {
    /// The uncovered intervals of the window.
    pub fn holes(&self) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let Some((lo, hi)) = self.window else { return vec![] };
        let mut holes = Vec::new();
        let mut at = lo;
        for &(a, b) in &self.covered {
            if a > at {
                holes.push((at, a));
            }
            at = at.max(b);
        }
        if at < hi {
            holes.push((at, hi));
        }
        holes
    }
}

fn wal_continuity(policy: &Policy, from: DateTime<Utc>, as_of: DateTime<Utc>, primary: &Holdings) -> Control {
    let (id, title) = ("wal-continuity", "WAL archive continuity and PITR coverage");
    let cov = wal_coverage(from, as_of, primary);
    let Some((lo, hi)) = cov.window else {
        return control(id, title, Status::NoEvidence, "no base backup held covers the period".into(), vec![]);
    };
    let total = (hi - lo).num_seconds() as f64;
    let covered: f64 = cov.covered.iter().map(|(a, b)| (*b - *a).num_seconds() as f64).sum();
    let holes = cov.holes();
    let longest = holes.iter().map(|(a, b)| (*b - *a).num_seconds()).max().unwrap_or(0) as f64;
    let in_window = |g: &WalGap| g.before.is_none_or(|b| b >= lo) && g.after.is_none_or(|a| a <= hi);
    let gaps: Vec<&WalGap> = cov.gaps.iter().filter(|g| in_window(g)).collect();
    let mut evidence = Vec::new();
    if lo > from {
        evidence.push(format!(
            "judged from {} (the oldest base backup held; earlier WAL and backups were removed by retention)",
            minute(lo)
        ));
    }
    let files = primary.wal.iter().filter(|(n, _)| n.kind() == WalKind::Segment).count();
    evidence.push(format!("{files} WAL segments archived in all"));
    let mut listed = Vec::new();
    for g in &gaps {
        listed.push(format!(
            "gap on timeline {}: {} to {} ({} segments) missing, between {} and {}",
            g.timeline,
            g.first_missing,
            g.last_missing,
            g.count,
            g.after.map_or("?".into(), minute),
            g.before.map_or("?".into(), minute)
        ));
    }
    for (a, b) in holes.iter().filter(|(a, b)| (*b - *a) > policy.targets.rpo) {
        listed.push(format!(
            "not restorable from {} to {} ({})",
            minute(*a),
            minute(*b),
            span((*b - *a).num_seconds() as f64)
        ));
    }
    extend_limited(&mut evidence, listed);
    let status =
        if gaps.is_empty() && longest <= policy.targets.rpo.num_seconds() as f64 { Status::Pass } else { Status::Fail };
    let finding = format!(
        "PITR coverage {:.2}% of {} judged; {} WAL gap(s); the longest stretch not restorable is {} (RPO target {})",
        (100.0 * covered / total.max(1.0)).max(0.0),
        span(total),
        gaps.len(),
        span(longest),
        span(policy.targets.rpo.num_seconds() as f64)
    );
    control(id, title, status, finding, evidence)
}

fn encryption(ev: &Evidence, as_of: DateTime<Utc>, rotation: Duration) -> Control {
    let (id, title) = ("encryption", "Encryption of every object and key slot rotation");
    let mut evidence = Vec::new();
    let mut overdue = Vec::new();
    let held = std::iter::once(&ev.primary).chain(ev.copies.iter().filter_map(|(_, c)| c.as_ref().ok()));
    for h in held {
        let segments = h.wal.len();
        evidence.push(format!(
            "{}: {} snapshot manifests opened and authenticated now (AES-256-GCM under the repository key); {} WAL \
             objects sealed the same way (docs/FORMAT.md §5)",
            h.location,
            h.snapshots.len(),
            segments
        ));
        if let Some(c) = h.checks.iter().filter(|c| c.read_data && c.started <= as_of).max_by_key(|c| c.started) {
            evidence.push(format!(
                "{}: the check --read-data of {} authenticated every pack and {} WAL files",
                h.location,
                minute(c.started),
                c.wal_files
            ));
        }
        for (slot, k) in &h.keys {
            let age = (as_of - k.created).num_seconds() as f64;
            let kind = match k.kind {
                SlotKind::Passphrase => "passphrase",
                SlotKind::KeyFile => "key file",
                SlotKind::Kms => "KMS",
            };
            let line = format!(
                "{}: key slot {} ({kind}) created {}, {} old",
                h.location,
                slot.short(),
                minute(k.created),
                span(age)
            );
            if as_of - k.created > rotation {
                overdue.push(format!(
                    "{line}: rotation due (the policy's key_rotation is {})",
                    span(rotation.num_seconds() as f64)
                ));
            } else {
                evidence.push(line);
            }
        }
    }
    let status = if overdue.is_empty() { Status::Pass } else { Status::Fail };
    let finding = match overdue.len() {
        0 => "every object is encrypted and authenticated; no key slot is due for rotation".to_string(),
        n => format!("every object is encrypted; {n} key slot(s) due for rotation"),
    };
    evidence.extend(overdue);
    control(id, title, status, finding, evidence)
}

/// Copy lag of one snapshot: from the end of the backup to its arrival in the copy.
pub fn copy_lags(
    from: DateTime<Utc>,
    as_of: DateTime<Utc>,
    policy: &Policy,
    primary: &Holdings,
    copy: &Holdings,
) -> (Vec<(DateTime<Utc>, f64)>, Vec<String>) {
    let there: HashMap<Id, Option<DateTime<Utc>>> = copy.snapshots.iter().map(|(id, _, w)| (*id, *w)).collect();
    let mut lags = Vec::new();
    let mut missing = Vec::new();
    for (id, s, _) in &primary.snapshots {
        if s.time < from || s.time >= as_of || policy_source(&s.tags).is_none_or(|(p, _)| p != policy.name) {
            continue;
        }
        match there.get(id) {
            Some(Some(arrived)) => lags.push((s.time, (*arrived - s.time).num_seconds().max(0) as f64)),
            Some(None) => lags.push((s.time, 0.0)),
            None => missing.push(format!("missing: snapshot {} of {}", id.short(), minute(s.time))),
        }
    }
    (lags, missing)
}

fn copies(policy: &Policy, from: DateTime<Utc>, as_of: DateTime<Utc>, ev: &Evidence) -> Vec<Control> {
    if policy.repositories.copies.is_empty() {
        return vec![control(
            "copies",
            "Cross-region copies",
            Status::Fail,
            "the policy keeps no copy of its backups in another repository".into(),
            vec!["add `repositories.copies` to the policy (docs: policies/README.md)".into()],
        )];
    }
    let mut out = Vec::new();
    for (location, held) in &ev.copies {
        let id = format!("copies/{location}");
        let title = format!("Copies complete: {location}");
        let copy = match held {
            Ok(c) => c,
            Err(e) => {
                out.push(control(&id, &title, Status::Fail, format!("the copy cannot be read: {e}"), vec![]));
                continue;
            }
        };
        let (lags, missing) = copy_lags(from, as_of, policy, &ev.primary, copy);
        let in_copy: BTreeSet<&WalName> = copy.wal.iter().map(|(n, _)| n).collect();
        let wal_missing: Vec<&WalName> = ev
            .primary
            .wal
            .iter()
            .filter(|(n, w)| w.is_some_and(|w| w >= from && w < as_of) && !in_copy.contains(n))
            .map(|(n, _)| n)
            .collect();
        if lags.is_empty() && missing.is_empty() {
            out.push(control(
                &id,
                &title,
                Status::NoEvidence,
                "no snapshot of the period is held to compare".into(),
                vec![],
            ));
            continue;
        }
        let mut sorted: Vec<f64> = lags.iter().map(|(_, l)| *l).collect();
        sorted.sort_by(f64::total_cmp);
        let pct = |p: f64| sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
        let finding = format!(
            "{} of {} snapshots copied (lag p50 {}, p95 {}, max {}); {} WAL files missing",
            lags.len(),
            lags.len() + missing.len(),
            span(pct(0.5)),
            span(pct(0.95)),
            span(sorted.last().copied().unwrap_or(0.0)),
            wal_missing.len()
        );
        let mut evidence = vec![format!("{} WAL files in the copy", copy.wal.len())];
        let mut listed = missing.clone();
        listed.extend(wal_missing.iter().map(|n| format!("missing: WAL {}", n.as_str())));
        extend_limited(&mut evidence, listed);
        let status = if missing.is_empty() && wal_missing.is_empty() { Status::Pass } else { Status::Fail };
        out.push(control(&id, &title, status, finding, evidence));
    }
    out
}

/// Per S3 repository: every snapshot manifest of the period under Object Lock retention at least
/// as long as drctl is told to write (`--s3-object-lock MODE:DAYS`), from the backup on.
fn object_lock(from: DateTime<Utc>, as_of: DateTime<Utc>, ev: &Evidence) -> Vec<Control> {
    let held = std::iter::once(&ev.primary).chain(ev.copies.iter().filter_map(|(_, c)| c.as_ref().ok()));
    let mut out = Vec::new();
    for h in held {
        let Some(retention) = &h.retention else { continue };
        let (id, title) = (format!("object-lock/{}", h.location), format!("Object Lock: {}", h.location));
        let Some(lock) = &ev.object_lock else {
            let finding = "Object Lock is not configured for this repository: give the report the --s3-object-lock \
                           MODE:DAYS its jobs run with";
            out.push(control(&id, &title, Status::NoEvidence, finding.into(), vec![]));
            continue;
        };
        let times: HashMap<Id, DateTime<Utc>> = h.snapshots.iter().map(|(i, s, _)| (*i, s.time)).collect();
        let days = Duration::days(lock.days.into());
        let mut short = Vec::new();
        let mut judged = 0;
        for (sid, r) in retention {
            let Some(&time) = times.get(sid).filter(|t| **t >= from && **t < as_of) else { continue };
            judged += 1;
            match r {
                None => short.push(format!("not retained: snapshot {} of {}", sid.short(), minute(time))),
                // A minute of slack: retention is set from the writer's clock as the object is written.
                Some(r) if r.until + Duration::minutes(1) < time + days || !r.mode.eq_ignore_ascii_case(&lock.mode) => {
                    short.push(format!(
                        "retained too briefly: snapshot {} of {}: {} until {}",
                        sid.short(),
                        minute(time),
                        r.mode,
                        minute(r.until)
                    ))
                }
                Some(_) => {}
            }
        }
        if judged == 0 {
            out.push(control(&id, &title, Status::NoEvidence, "no snapshot of the period is held".into(), vec![]));
            continue;
        }
        let status = if short.is_empty() { Status::Pass } else { Status::Fail };
        let finding = format!(
            "{} of {judged} snapshot manifests of the period under {} retention for at least {} days from the backup",
            judged - short.len(),
            lock.mode.to_uppercase(),
            lock.days
        );
        let mut evidence = Vec::new();
        extend_limited(&mut evidence, short);
        out.push(control(&id, &title, status, finding, evidence));
    }
    out
}

fn retention(policy: &Policy, from: DateTime<Utc>, as_of: DateTime<Utc>, ev: &Evidence) -> Control {
    let (id, title) = ("retention", "Retention: nothing removed before the policy allows");
    let jobs: Vec<_> = ev.jobs.iter().filter(|j| j.started >= from && j.started < as_of).collect();
    if jobs.is_empty() {
        return control(id, title, Status::NoEvidence, "no job record in the period".into(), vec![]);
    }
    // Every snapshot of the policy known: held now, or named by a job's removal.
    let mut known: BTreeMap<String, (DateTime<Utc>, String)> = BTreeMap::new();
    for (sid, s, _) in &ev.primary.snapshots {
        if policy_source(&s.tags).is_some_and(|(p, _)| p == policy.name) {
            known.insert(sid.to_hex(), (s.time, group_of(s)));
        }
    }
    let mut removals: Vec<(DateTime<Utc>, &str, &crate::job::RemovedSnapshot)> = Vec::new();
    for j in &ev.jobs {
        // Retention runs last in a job: judge it with what the job had taken by then.
        let at = j.started + Duration::milliseconds((j.duration_seconds * 1000.0) as i64);
        for r in &j.retention {
            for s in &r.removed {
                known.entry(s.id.clone()).or_insert((s.time, s.group.clone()));
                removals.push((at, r.repository.as_str(), s));
            }
        }
    }
    removals.sort_by_key(|(t, _, _)| *t);
    let mut early = Vec::new();
    let mut removed_before: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    let mut judged = 0;
    for (at, repository, group) in removals.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1).map(|c| (c[0].0, c[0].1, c)) {
        let gone = removed_before.entry(repository).or_default();
        let items: Vec<Item> = known
            .iter()
            .filter(|(sid, (t, _))| *t <= at && !gone.contains(sid.as_str()))
            .filter_map(|(sid, (t, g))| {
                Some(Item { id: Id::from_hex(sid)?, time: *t, group: g.clone(), restorable_from: Some(*t), good: true })
            })
            .collect();
        let verdicts = retention::decide(&policy.retention, &items, at);
        for (_, _, s) in group {
            if at >= from && at < as_of {
                judged += 1;
                if let Some(v) = verdicts.iter().find(|v| v.id.to_hex() == s.id && v.keep) {
                    early.push(format!(
                        "removed early: snapshot {} of {} from {} on {}, while the policy keeps it ({})",
                        &s.id[..8],
                        minute(s.time),
                        repository,
                        minute(at),
                        v.reasons.join(", ")
                    ));
                }
            }
            gone.insert(s.id.as_str());
        }
    }
    // Snapshots a job took that are neither held nor removed by a job: deleted by other means.
    let removed: BTreeSet<&str> = removals.iter().map(|(_, _, s)| s.id.as_str()).collect();
    let held: BTreeSet<String> = ev.primary.snapshots.iter().map(|(i, _, _)| i.to_hex()).collect();
    let mut vanished = Vec::new();
    for j in &jobs {
        for s in j.sources.iter().flat_map(|s| &s.snapshots) {
            if !held.contains(&s.id) && !removed.contains(s.id.as_str()) && s.time < as_of {
                vanished.push(format!(
                    "vanished: snapshot {} of {} was removed by no policy job",
                    s.short_id,
                    minute(s.time)
                ));
            }
        }
    }
    let mut evidence = vec![format!(
        "{} job records in the period; {judged} removals judged against the policy's rules as they stood when each \
         was made",
        jobs.len()
    )];
    let status = if early.is_empty() && vanished.is_empty() { Status::Pass } else { Status::Fail };
    let finding = match (early.len(), vanished.len()) {
        (0, 0) => format!("{judged} snapshot removals, each made only once the policy no longer kept it"),
        (e, v) => format!("{e} snapshot(s) removed before the policy allows, {v} removed outside retention"),
    };
    extend_limited(&mut evidence, early);
    extend_limited(&mut evidence, vanished);
    control(id, title, status, finding, evidence)
}

fn checks(from: DateTime<Utc>, as_of: DateTime<Utc>, ev: &Evidence) -> Control {
    let (id, title) = ("check-read-data", "Every stored byte read back (check --read-data)");
    let mut evidence = Vec::new();
    let (mut clean, mut damaged, mut unchecked) = (0, 0, 0);
    let held: Vec<&Holdings> =
        std::iter::once(&ev.primary).chain(ev.copies.iter().filter_map(|(_, c)| c.as_ref().ok())).collect();
    for h in &held {
        let in_period: Vec<_> = h.checks.iter().filter(|c| c.started >= from && c.started < as_of).collect();
        let full: Vec<_> = in_period.iter().filter(|c| c.read_data).collect();
        match full.iter().max_by_key(|c| c.started) {
            None => {
                unchecked += 1;
                evidence.push(format!(
                    "{}: no check --read-data in the period ({} check(s) without it)",
                    h.location,
                    in_period.len()
                ));
            }
            Some(c) if c.damaged.is_empty() => {
                clean += 1;
                evidence.push(format!(
                    "{}: {} full check(s); the newest, {}, read {} and found no damage",
                    h.location,
                    full.len(),
                    minute(c.started),
                    crate::progress::human_bytes(c.bytes_read)
                ));
            }
            Some(c) => {
                damaged += 1;
                evidence.push(format!(
                    "{}: the newest full check, {}, found {} damaged object(s): {}",
                    h.location,
                    minute(c.started),
                    c.damaged.len(),
                    c.damaged.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
                ));
            }
        }
    }
    let status = match (damaged, unchecked) {
        (0, 0) => Status::Pass,
        (0, _) => Status::NoEvidence,
        _ => Status::Fail,
    };
    let finding = format!("{clean} of {} repositories read back in full without damage in the period", held.len());
    control(id, title, status, finding, evidence)
}

fn drills(from: DateTime<Utc>, as_of: DateTime<Utc>, ev: &Evidence) -> Control {
    let (id, title) = ("drills", "DR drills: RTO and RPO measured against the targets");
    let drills: Vec<_> = ev.drills.iter().filter(|d| d.started >= from && d.started < as_of).collect();
    let Some(newest) = drills.last() else {
        return control(id, title, Status::NoEvidence, "no drill in the period".into(), vec![]);
    };
    let opt = |s: Option<f64>| s.map_or("not measured".to_string(), span);
    let evidence = drills
        .iter()
        .map(|d| {
            format!(
                "{} {} ({}): {}; RTO {} (target {}), RPO {} (target {}){}",
                minute(d.started),
                d.id,
                d.mode,
                if d.passed { "PASS" } else { "FAIL" },
                opt(d.rto_seconds),
                span(d.targets.rto_seconds),
                opt(d.rpo_seconds),
                span(d.targets.rpo_seconds),
                match d.failures.is_empty() {
                    true => String::new(),
                    false => format!(": {}", d.failures.join("; ")),
                }
            )
        })
        .collect();
    let failed = drills.iter().filter(|d| !d.passed).count();
    let status = if newest.passed { Status::Pass } else { Status::Fail };
    let finding = format!(
        "{} drill(s), {failed} failed; the newest {} with RTO {} and RPO {}",
        drills.len(),
        if newest.passed { "passed" } else { "failed" },
        opt(newest.rto_seconds),
        opt(newest.rpo_seconds)
    );
    control(id, title, status, finding, evidence)
}

fn runbooks(from: DateTime<Utc>, as_of: DateTime<Utc>, ev: &Evidence) -> Control {
    let (id, title) = ("runbooks", "Runbook runs on record (audit log)");
    let records = match &ev.audit {
        Ok(r) => r,
        Err(e) => return control(id, title, Status::Fail, format!("the audit records fail verification: {e}"), vec![]),
    };
    let text = |r: &serde_json::Map<String, serde_json::Value>, k: &str| {
        r.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string()
    };
    let time = |r: &serde_json::Map<String, serde_json::Value>| {
        DateTime::parse_from_rfc3339(&text(r, "time")).ok().map(|t| t.with_timezone(&Utc))
    };
    let mut runs: BTreeMap<String, (DateTime<Utc>, String, String)> = BTreeMap::new();
    for r in records {
        let Some(t) = time(r) else { continue };
        let entry = runs.entry(text(r, "run")).or_insert((t, text(r, "runbook"), "did not finish".into()));
        if text(r, "event") == "run-end" {
            entry.2 = format!("ended {}", text(r, "result"));
        }
    }
    let in_period: Vec<_> = runs.iter().filter(|(_, (t, _, _))| *t >= from && *t < as_of).collect();
    if in_period.is_empty() {
        return control(id, title, Status::NoEvidence, "no runbook ran in the period".into(), vec![]);
    }
    let evidence =
        in_period.iter().map(|(run, (t, book, end))| format!("{} {book} (run {run}): {end}", minute(*t))).collect();
    let finding =
        format!("{} runbook run(s) in the period, every audit record authenticated and chained", in_period.len());
    control(id, title, Status::Pass, finding, evidence)
}

fn rds_snapshots(rds: &crate::policy::Rds, from: DateTime<Utc>, as_of: DateTime<Utc>, ev: &Evidence) -> Control {
    let id = "rds-snapshots";
    let title = format!("RDS snapshots of {} and their copies in {}", rds.instance, rds.dr_region);
    let steps: Vec<_> = ev.jobs.iter().filter_map(|j| j.rds.as_ref().map(|r| (j.started, r))).collect();
    if steps.is_empty() {
        return control(id, &title, Status::NoEvidence, "no job record of an RDS snapshot".into(), vec![]);
    }
    let taken: Vec<DateTime<Utc>> = steps.iter().filter_map(|(_, r)| r.snapshot.as_ref().map(|s| s.created)).collect();
    let judged = slots(&rds.snapshot_schedule, &taken, from, as_of);
    let missed: Vec<String> = judged
        .iter()
        .filter(|(_, s)| *s == Slot::Missed)
        .map(|(at, _)| {
            let next = rds.snapshot_schedule.next_after(*at).unwrap_or(as_of);
            match steps.iter().find(|(t, r)| t >= at && *t < next && r.error.is_some()) {
                Some((t, r)) => format!(
                    "missed: {} (the job of {} failed: {})",
                    minute(*at),
                    minute(*t),
                    r.error.as_ref().map(|e| e.message.as_str()).unwrap_or_default()
                ),
                None => format!("missed: {} (no snapshot and copy on record)", minute(*at)),
            }
        })
        .collect();
    let mut copy_times: Vec<f64> = steps
        .iter()
        .filter_map(|(_, r)| r.snapshot.as_ref())
        .filter(|s| s.created >= from && s.created < as_of)
        .map(|s| s.duration_seconds)
        .collect();
    copy_times.sort_by(f64::total_cmp);
    let on_time = judged.iter().filter(|(_, s)| *s == Slot::OnTime).count();
    let finding = format!(
        "{on_time} of {} scheduled snapshots taken on time and copied to {}; {} missed; slowest copy {}",
        judged.len(),
        rds.dr_region,
        missed.len(),
        span(copy_times.last().copied().unwrap_or(0.0))
    );
    let mut evidence = vec![format!(
        "snapshots expected from `{}` (UTC); each is a manual snapshot tagged drctl-policy and copied to {}",
        rds.snapshot_schedule.as_str(),
        rds.dr_region
    )];
    let status = if missed.is_empty() && !judged.is_empty() {
        Status::Pass
    } else if judged.is_empty() {
        Status::NoEvidence
    } else {
        Status::Fail
    };
    extend_limited(&mut evidence, missed);
    control(id, &title, status, finding, evidence)
}

fn control(id: &str, title: &str, status: Status, finding: String, evidence: Vec<String>) -> Control {
    Control { id: id.into(), title: title.into(), status, finding, evidence }
}

fn extend_limited(evidence: &mut Vec<String>, items: Vec<String>) {
    let more = items.len().saturating_sub(LIST_LIMIT);
    evidence.extend(items.into_iter().take(LIST_LIMIT));
    if more > 0 {
        evidence.push(format!("… and {more} more"));
    }
}

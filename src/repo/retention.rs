//! Retention: which snapshots a set of rules keeps, and why. Pure logic over snapshot times, so
//! it can be tested against a reference model on random histories.
//!
//! Snapshots are judged per group (one source: a cluster's base backups, one database's dumps,
//! one set of paths), newest first, as restic does:
//! - `keep_last N`: the N newest;
//! - `keep_hourly/daily/weekly/monthly/yearly N`: the newest snapshot of each of the N newest
//!   hours (days, ISO weeks, months, years) that have one;
//! - `keep_within D`: every snapshot taken within D of the group's newest (not of now: if
//!   backups stop, the last ones stay);
//! - the newest good snapshot (a base backup whose WAL is complete) is always kept;
//! - `pitr_window W` (base backups): the newest good base backup that ended at or before
//!   now − W, so every moment of the window has a base backup to start from. WAL from that
//!   backup on is kept by the caller.

use chrono::{DateTime, Datelike, Duration, Utc};
use std::collections::{BTreeMap, BTreeSet};

use super::crypto::Id;

/// Retention rules; a snapshot stays if any rule keeps it, and the newest good one always does.
///
/// One type for `drctl forget`'s flags (the doc comments below are their help), a policy's
/// `retention` section (same names as keys) and `decide`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Rules {
    /// Keep the N newest snapshots of each source.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// … of each of the N newest days.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// … of each of the N newest ISO weeks.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// … of each of the N newest months.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// … of each of the N newest years.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every snapshot taken within this long of the newest (e.g. 7d, 36h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_within: Option<Duration>,
    /// Keep base backups and WAL so that any moment of the last DURATION can be restored.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub pitr_window: Option<Duration>,
}

/// A duration as people write it (90s, 15m, 36h, 7d, 2w): retention flags and every other
/// duration flag.
pub fn parse_duration(text: &str) -> Result<chrono::Duration, String> {
    let std = humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 90m, 36h, 7d, 2w)"))?;
    chrono::Duration::from_std(std).map_err(|_| "too long".to_string())
}

/// A snapshot as retention sees it.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: Id,
    pub time: DateTime<Utc>,
    /// Snapshots compete only within their group (their source).
    pub group: String,
    /// Base backups: when they ended, the earliest moment they can be recovered to.
    pub restorable_from: Option<DateTime<Utc>>,
    /// False for a base backup whose WAL is incomplete: it can never be restored.
    pub good: bool,
}

/// Whether a snapshot stays, with every rule that keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub id: Id,
    pub keep: bool,
    pub reasons: Vec<String>,
}

type Bucket = fn(&DateTime<Utc>) -> String;

const CALENDAR: [(&str, Bucket); 5] = [
    ("hourly", |t| t.format("%Y-%m-%d %H:00").to_string()),
    ("daily", |t| t.format("%Y-%m-%d").to_string()),
    ("weekly", |t| {
        let week = t.iso_week();
        format!("{}-W{:02}", week.year(), week.week())
    }),
    ("monthly", |t| t.format("%Y-%m").to_string()),
    ("yearly", |t| t.format("%Y").to_string()),
];

impl Rules {
    /// No rule given: only each source's newest good snapshot would stay. Both `forget` and a
    /// policy refuse it, each in its own words.
    pub fn is_empty(&self) -> bool {
        *self == Rules::default()
    }

    fn calendar_counts(&self) -> [u32; 5] {
        [self.keep_hourly, self.keep_daily, self.keep_weekly, self.keep_monthly, self.keep_yearly]
    }
}

/// Judges every item; the result is in the order of `items`.
pub fn decide(rules: &Rules, items: &[Item], now: DateTime<Utc>) -> Vec<Verdict> {
    let mut reasons: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        groups.entry(&item.group).or_default().push(i);
    }
    for members in groups.values_mut() {
        // Newest first; ties broken by id so the result does not depend on input order.
        members.sort_by(|&a, &b| items[b].time.cmp(&items[a].time).then(items[b].id.cmp(&items[a].id)));
        let mut keep = |i: usize, why: String| reasons.entry(i).or_default().push(why);
        for &i in members.iter().take(rules.keep_last as usize) {
            keep(i, format!("last {}", rules.keep_last));
        }
        for ((name, bucket), count) in CALENDAR.iter().zip(rules.calendar_counts()) {
            let mut seen = BTreeSet::new();
            for &i in members.iter() {
                let key = bucket(&items[i].time);
                if seen.len() < count as usize && seen.insert(key.clone()) {
                    keep(i, format!("{name} {key}"));
                }
            }
        }
        if let Some(within) = rules.keep_within {
            let newest = items[members[0]].time;
            for &i in members.iter().filter(|&&i| items[i].time >= newest - within) {
                keep(i, "within".into());
            }
        }
        if let Some(&i) = members.iter().find(|&&i| items[i].good) {
            keep(i, "newest good".into());
        }
        if let Some(window) = rules.pitr_window {
            let anchor = now - window;
            let bases: Vec<usize> =
                members.iter().copied().filter(|&i| items[i].good && items[i].restorable_from.is_some()).collect();
            // The newest that ended by the window's start; while the window is younger than the
            // oldest backup, that oldest one is as far back as a restore can go.
            let base = bases.iter().find(|&&i| items[i].restorable_from.is_some_and(|t| t <= anchor)).or(bases.last());
            if let Some(&i) = base {
                keep(i, "pitr window".into());
            }
        }
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let why = reasons.remove(&i).unwrap_or_default();
            Verdict { id: item.id, keep: !why.is_empty(), reasons: why }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + secs, 0).unwrap()
    }

    /// Snapshots: (seconds after a fixed origin, group, a base backup?, good?).
    fn history() -> impl Strategy<Value = Vec<(i64, u8, bool, bool)>> {
        prop::collection::vec((0i64..400 * 86_400, 0u8..3, any::<bool>(), prop::bool::weighted(0.9)), 0..60)
    }

    fn rules() -> impl Strategy<Value = Rules> {
        (0u32..4, 0u32..4, 0u32..8, 0u32..5, 0u32..4, 0u32..3, prop::option::of(0i64..30), prop::option::of(0i64..30))
            .prop_map(|(last, hourly, daily, weekly, monthly, yearly, within, window)| Rules {
                keep_last: last,
                keep_hourly: hourly,
                keep_daily: daily,
                keep_weekly: weekly,
                keep_monthly: monthly,
                keep_yearly: yearly,
                keep_within: within.map(Duration::days),
                pitr_window: window.map(Duration::days),
            })
    }

    fn items(history: &[(i64, u8, bool, bool)]) -> Vec<Item> {
        history
            .iter()
            .enumerate()
            .map(|(n, &(secs, group, base, good))| Item {
                id: Id(*blake3::hash(&n.to_le_bytes()).as_bytes()),
                time: at(secs),
                group: format!("g{group}"),
                restorable_from: base.then(|| at(secs + 600)),
                good: good || !base,
            })
            .collect()
    }

    /// The reference model: each rule written out directly, per group, over a sorted copy.
    fn model(rules: &Rules, items: &[Item], now: DateTime<Utc>) -> BTreeSet<Id> {
        let mut kept = BTreeSet::new();
        let groups: BTreeSet<&str> = items.iter().map(|i| i.group.as_str()).collect();
        for group in groups {
            let mut g: Vec<&Item> = items.iter().filter(|i| i.group == group).collect();
            g.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
            kept.extend(g.iter().take(rules.keep_last as usize).map(|i| i.id));
            for ((_, bucket), count) in CALENDAR.iter().zip(rules.calendar_counts()) {
                // The newest snapshot of each bucket, for the `count` newest buckets.
                let mut newest_of: BTreeMap<String, &Item> = BTreeMap::new();
                for item in &g {
                    newest_of.entry(bucket(&item.time)).or_insert(item);
                }
                let mut buckets: Vec<&&Item> = newest_of.values().collect();
                buckets.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
                kept.extend(buckets.iter().take(count as usize).map(|i| i.id));
            }
            if let (Some(d), Some(newest)) = (rules.keep_within, g.first()) {
                kept.extend(g.iter().filter(|i| newest.time - i.time <= d).map(|i| i.id));
            }
            kept.extend(g.iter().find(|i| i.good).map(|i| i.id));
            if let Some(w) = rules.pitr_window {
                let good: Vec<&&Item> = g.iter().filter(|i| i.good && i.restorable_from.is_some()).collect();
                let pick = good.iter().find(|i| i.restorable_from.unwrap() <= now - w).or(good.last());
                kept.extend(pick.map(|i| i.id));
            }
        }
        kept
    }

    proptest! {
        #[test]
        fn retention_matches_the_model_and_keeps_what_restores_need(history in history(), rules in rules()) {
            let items = items(&history);
            let now = at(401 * 86_400);
            let verdicts = decide(&rules, &items, now);
            let kept: BTreeSet<Id> = verdicts.iter().filter(|v| v.keep).map(|v| v.id).collect();
            prop_assert_eq!(&kept, &model(&rules, &items, now));
            for v in &verdicts {
                prop_assert_eq!(v.keep, !v.reasons.is_empty());
            }
            let groups: BTreeSet<&str> = items.iter().map(|i| i.group.as_str()).collect();
            for group in groups {
                let g: Vec<&Item> = items.iter().filter(|i| i.group == group).collect();
                // The newest good snapshot of every group stays.
                if let Some(newest) = g.iter().filter(|i| i.good).max_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id))) {
                    prop_assert!(kept.contains(&newest.id));
                }
                // Every moment of the PITR window has a kept good base backup ending before it
                // (as far as any good base backup reaches back at all).
                if let Some(w) = rules.pitr_window {
                    let anchor = now - w;
                    let reachable = g.iter().any(|i| i.good && i.restorable_from.is_some_and(|t| t <= anchor));
                    let covered = g.iter().any(|i| {
                        kept.contains(&i.id) && i.good && i.restorable_from.is_some_and(|t| t <= anchor)
                    });
                    prop_assert_eq!(reachable, covered);
                }
                // keep_last: the N newest, whatever else.
                let mut by_time = g.clone();
                by_time.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
                for i in by_time.iter().take(rules.keep_last as usize) {
                    prop_assert!(kept.contains(&i.id));
                }
            }
        }
    }

    #[test]
    fn reasons_name_the_rules() {
        let items: Vec<Item> = (0..5)
            .map(|d| Item {
                id: Id([d as u8; 32]),
                time: at(d * 86_400),
                group: "pg".into(),
                restorable_from: Some(at(d * 86_400 + 60)),
                good: true,
            })
            .collect();
        let rules = Rules { keep_daily: 2, pitr_window: Some(Duration::days(3)), ..Rules::default() };
        let verdicts = decide(&rules, &items, at(5 * 86_400));
        let kept: Vec<(u8, Vec<String>)> =
            verdicts.into_iter().filter(|v| v.keep).map(|v| (v.id.0[0], v.reasons)).collect();
        assert_eq!(
            kept,
            vec![
                (1, vec!["pitr window".to_string()]),
                (3, vec!["daily 2025-06-18".to_string()]),
                (4, vec!["daily 2025-06-19".to_string(), "newest good".to_string()]),
            ]
        );
    }
}

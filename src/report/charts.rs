//! What the report's charts draw (kept in the JSON as `series`), and the charts themselves as
//! inline SVG: the backup timeline heat-map, backup sizes, the WAL coverage bar, copy lag and
//! RTO/RPO over drills. No script, no external asset: the HTML stays one file.

use chrono::{DateTime, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

use super::controls::{self, Slot};
use super::gather::Evidence;
use super::{Period, span};
use crate::policy::Policy;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Series {
    pub sources: Vec<SourceSeries>,
    /// PITR coverage, for a policy whose WAL drctl archives.
    pub wal: Option<WalSeries>,
    pub copies: Vec<CopySeries>,
    pub drills: Vec<DrillPoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceSeries {
    pub source: String,
    /// Every scheduled run judged: its time and `on-time`, `late` or `missed`.
    pub slots: Vec<(DateTime<Utc>, String)>,
    /// Every run in the period: when it ended and the bytes it added to the repository.
    pub stored: Vec<(DateTime<Utc>, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WalSeries {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub covered: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopySeries {
    pub repository: String,
    /// Per snapshot: when the backup ended, and seconds until it was in the copy.
    pub lag: Vec<(DateTime<Utc>, f64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillPoint {
    pub started: DateTime<Utc>,
    pub passed: bool,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
}

pub fn series(policy: &Policy, period: &Period, as_of: DateTime<Utc>, ev: &Evidence) -> Series {
    let from = period.from.max(ev.primary.created);
    let sources = policy
        .sources
        .iter()
        .map(|s| {
            let runs = controls::runs(policy, &s.name, &s.what, ev);
            let starts: Vec<DateTime<Utc>> = runs.iter().map(|r| r.start).collect();
            let slots = controls::slots(&s.schedule, &starts, from, as_of)
                .into_iter()
                .map(|(at, slot)| {
                    let word = match slot {
                        Slot::OnTime => "on-time",
                        Slot::Late(_) => "late",
                        Slot::Missed => "missed",
                    };
                    (at, word.to_string())
                })
                .collect();
            let stored = runs
                .iter()
                .filter(|r| r.end >= period.from && r.end < as_of)
                .map(|r| (r.end, r.stored_bytes))
                .collect();
            SourceSeries { source: s.name.clone(), slots, stored }
        })
        .collect();
    let wal = policy.archives_wal().then(|| {
        let cov = controls::wal_coverage(period.from, as_of, &ev.primary);
        WalSeries { from: period.from, to: as_of, covered: cov.covered }
    });
    let copies = ev
        .copies
        .iter()
        .filter_map(|(location, held)| {
            let copy = held.as_ref().ok()?;
            let (lag, _) = controls::copy_lags(period.from, as_of, policy, &ev.primary, copy);
            Some(CopySeries { repository: location.clone(), lag })
        })
        .collect();
    let drills = ev
        .drills
        .iter()
        .filter(|d| d.started >= period.from && d.started < as_of)
        .map(|d| DrillPoint {
            started: d.started,
            passed: d.passed,
            rto_seconds: d.rto_seconds,
            rpo_seconds: d.rpo_seconds,
        })
        .collect();
    Series { sources, wal, copies, drills }
}

const WIDTH: f64 = 960.0;
const GREEN: &str = "#2e7d32";
const AMBER: &str = "#f9a825";
const RED: &str = "#c62828";
const GREY: &str = "#e0e0e0";
const BLUE: &str = "#1565c0";

/// Where a time falls across the chart's width.
struct Axis {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    left: f64,
    width: f64,
}

impl Axis {
    fn x(&self, t: DateTime<Utc>) -> f64 {
        let total = (self.to - self.from).num_seconds().max(1) as f64;
        self.left + self.width * ((t - self.from).num_seconds() as f64 / total).clamp(0.0, 1.0)
    }

    /// Date labels along the bottom at `y`: about six, at midnights.
    fn labels(&self, svg: &mut String, y: f64) {
        let days = (self.to - self.from).num_days().max(1);
        let step = (days / 6).max(1);
        let mut t = self.from.date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        while t <= self.to {
            // A label needs about 40 px: none that would run off the right edge.
            if t >= self.from && self.x(t) < self.left + self.width - 40.0 {
                let _ =
                    write!(svg, r#"<text x="{:.1}" y="{y}" font-size="10">{}</text>"#, self.x(t), t.format("%m-%d"));
            }
            t += Duration::days(step);
        }
    }
}

fn open(svg: &mut String, height: f64, title: &str) {
    let _ = write!(
        svg,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" aria-label="{}"><title>{}</title>"#,
        super::html::escape(title),
        super::html::escape(title)
    );
}

/// Per source: days across, hours down; each cell the worst of its scheduled runs.
pub fn heatmap(series: &Series, period: &Period, as_of: DateTime<Utc>) -> String {
    let days = ((as_of - period.from).num_hours() as f64 / 24.0).ceil().max(1.0) as i64;
    let (left, row) = (110.0, 2.0);
    let cell = ((WIDTH - left - 10.0) / days as f64).min(120.0);
    let band = 24.0 * row + 18.0;
    let height = band * series.sources.len().max(1) as f64 + 20.0;
    let mut svg = String::new();
    open(&mut svg, height, "Backup timeline: scheduled runs on time (green), late (amber), missed (red)");
    for (i, s) in series.sources.iter().enumerate() {
        let top = i as f64 * band + 14.0;
        let _ = write!(
            svg,
            r#"<text x="0" y="{:.1}" font-size="11">{}</text>"#,
            top + 12.0,
            super::html::escape(&s.source)
        );
        let mut worst: std::collections::BTreeMap<(i64, u32), u8> = Default::default();
        for (at, word) in &s.slots {
            let rank = match word.as_str() {
                "missed" => 3,
                "late" => 2,
                _ => 1,
            };
            let key = ((*at - period.from).num_days(), at.hour());
            let w = worst.entry(key).or_insert(0);
            *w = (*w).max(rank);
        }
        let _ = write!(
            svg,
            r#"<rect x="{left}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{GREY}"/>"#,
            cell * days as f64,
            24.0 * row
        );
        for ((day, hour), rank) in worst {
            let color = [GREY, GREEN, AMBER, RED][rank as usize];
            let _ = write!(
                svg,
                r#"<rect x="{:.2}" y="{:.1}" width="{:.2}" height="{row}" fill="{color}"/>"#,
                left + day as f64 * cell,
                top + hour as f64 * row,
                cell.max(0.5)
            );
        }
    }
    let axis = Axis { from: period.from, to: period.from + Duration::days(days), left, width: cell * days as f64 };
    axis.labels(&mut svg, height - 4.0);
    svg.push_str("</svg>");
    svg
}

/// Bytes each run added, per source, as bars along time.
pub fn sizes(series: &Series, period: &Period, as_of: DateTime<Utc>) -> String {
    let height = 180.0;
    let axis = Axis { from: period.from, to: as_of, left: 60.0, width: WIDTH - 70.0 };
    let max = series.sources.iter().flat_map(|s| s.stored.iter().map(|(_, b)| *b)).max().unwrap_or(0).max(1) as f64;
    let mut svg = String::new();
    open(&mut svg, height, "Bytes stored per backup run");
    let _ = write!(svg, r#"<text x="0" y="12" font-size="10">{}</text>"#, crate::progress::human_bytes(max as u64));
    let palette = [BLUE, GREEN, AMBER, "#6a1b9a", "#00838f"];
    for (i, s) in series.sources.iter().enumerate() {
        let color = palette[i % palette.len()];
        for (t, b) in &s.stored {
            let h = 150.0 * (*b as f64 / max);
            let _ = write!(
                svg,
                r#"<rect x="{:.2}" y="{:.1}" width="1.5" height="{h:.1}" fill="{color}"/>"#,
                axis.x(*t),
                160.0 - h
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.0}" y="12" font-size="10" fill="{color}">{}</text>"#,
            120.0 + i as f64 * 140.0,
            super::html::escape(&s.source)
        );
    }
    axis.labels(&mut svg, height - 4.0);
    svg.push_str("</svg>");
    svg
}

/// The period as one bar: restorable (green), not (red), before the evidence held (grey).
pub fn wal_bar(wal: &WalSeries, period: &Period) -> String {
    let height = 60.0;
    let axis = Axis { from: period.from, to: wal.to, left: 10.0, width: WIDTH - 20.0 };
    let mut svg = String::new();
    open(&mut svg, height, "PITR coverage: restorable (green), not restorable (red), no longer held (grey)");
    let judged_from = wal.covered.first().map_or(wal.to, |(a, _)| *a).min(wal.to);
    let _ = write!(svg, r#"<rect x="10" y="8" width="{:.1}" height="28" fill="{GREY}"/>"#, WIDTH - 20.0);
    let _ = write!(
        svg,
        r#"<rect x="{:.2}" y="8" width="{:.2}" height="28" fill="{RED}"/>"#,
        axis.x(judged_from),
        axis.x(wal.to) - axis.x(judged_from)
    );
    for (a, b) in &wal.covered {
        let _ = write!(
            svg,
            r#"<rect x="{:.2}" y="8" width="{:.2}" height="28" fill="{GREEN}"/>"#,
            axis.x(*a),
            (axis.x(*b) - axis.x(*a)).max(0.5)
        );
    }
    axis.labels(&mut svg, height - 6.0);
    svg.push_str("</svg>");
    svg
}

/// Seconds from a backup's end to its arrival in the copy, per snapshot.
pub fn copy_lag(copy: &CopySeries, period: &Period, as_of: DateTime<Utc>) -> String {
    let height = 160.0;
    let axis = Axis { from: period.from, to: as_of, left: 60.0, width: WIDTH - 70.0 };
    let max = copy.lag.iter().map(|(_, l)| *l).fold(1.0, f64::max);
    let mut svg = String::new();
    open(&mut svg, height, &format!("Copy lag to {}", copy.repository));
    let _ = write!(svg, r#"<text x="0" y="12" font-size="10">{}</text>"#, span(max));
    for (t, l) in &copy.lag {
        let _ = write!(
            svg,
            r#"<circle cx="{:.2}" cy="{:.1}" r="2" fill="{BLUE}"/>"#,
            axis.x(*t),
            140.0 - 125.0 * (l / max)
        );
    }
    axis.labels(&mut svg, height - 4.0);
    svg.push_str("</svg>");
    svg
}

/// RTO and RPO of each drill, with the targets as dashed lines.
pub fn drills(points: &[DrillPoint], targets: &crate::drill::record::Targets) -> String {
    let height = 200.0;
    let (left, width) = (60.0, WIDTH - 80.0);
    let max = points
        .iter()
        .flat_map(|d| [d.rto_seconds, d.rpo_seconds])
        .flatten()
        .chain([targets.rto_seconds, targets.rpo_seconds])
        .fold(1.0, f64::max);
    let y = |s: f64| 170.0 - 150.0 * (s / max);
    let x = |i: usize| left + width * (i as f64 + 0.5) / points.len().max(1) as f64;
    let mut svg = String::new();
    open(&mut svg, height, "Drills: RTO (blue) and RPO (amber) against their targets (dashed)");
    for (target, color, name) in [(targets.rto_seconds, BLUE, "RTO target"), (targets.rpo_seconds, AMBER, "RPO target")]
    {
        let _ = write!(
            svg,
            r#"<line x1="{left}" x2="{:.0}" y1="{:.1}" y2="{:.1}" stroke="{color}" stroke-dasharray="6 4"/><text x="0" y="{:.1}" font-size="10">{name} {}</text>"#,
            left + width,
            y(target),
            y(target),
            y(target) + 3.0,
            span(target)
        );
    }
    for (i, d) in points.iter().enumerate() {
        for (value, color) in [(d.rto_seconds, BLUE), (d.rpo_seconds, AMBER)] {
            if let Some(v) = value {
                let _ = write!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{color}"/>"#, x(i), y(v));
            }
        }
        let mark = if d.passed { GREEN } else { RED };
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="192" font-size="10" text-anchor="middle" fill="{mark}">{}</text>"#,
            x(i),
            d.started.format("%m-%d")
        );
    }
    svg.push_str("</svg>");
    svg
}

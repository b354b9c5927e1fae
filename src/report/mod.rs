//! `drctl report`: a compliance report of one policy over a period, built only from evidence the
//! repositories hold (snapshots, WAL, key slots, copies, and job, check, drill and runbook
//! records) and judged against the policy: each control PASS, FAIL or NO-EVIDENCE, with the
//! evidence behind it.
//!
//! - `gather`: reads the evidence, once, from the primary repository and each copy;
//! - `controls`: the controls, pure functions of the evidence, the policy and the period;
//! - `markdown`, `html` (with inline SVG `charts`): the report as people read it; JSON is the
//!   [`Report`] itself (docs/report.schema.json);
//! - `seal`: a MAC under a key derived from the repository key, so `report verify` proves a file
//!   unedited.
//!
//! A report depends on nothing but the evidence and the period: the moment it describes is the
//! period's end, or the time it is built while the period runs. A report of a past period is
//! byte-identical for the same evidence.

mod charts;
mod controls;
pub mod gather;
mod html;
mod markdown;
pub mod seal;
#[cfg(test)]
mod tests;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::ops;
use crate::ops::policy_repos::Reach;
use crate::policy::Policy;

/// The format a report is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Md,
    Html,
    Json,
}

/// The interval a report covers: `[from, to)`, as asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// As given: `2026-Q3`, `2026-11`, `2026-11-20`, `2026`, or `FROM..TO`.
    pub label: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Period {
    /// `2026-Q3`, `2026-11`, `2026-11-20` (a day), `2026`, or `FROM..TO` where each end is a date
    /// (`TO` included whole) or a time ("2026-07-01 00:00:00+00").
    pub fn parse(text: &str) -> Result<Period, String> {
        let day = |y: i32, m: u32| NaiveDate::from_ymd_opt(y, m, 1).map(midnight);
        let bad = || {
            format!(
                "`{text}` is not a period: write a quarter (2026-Q3), a month (2026-11), a day (2026-11-20), a year (2026) or FROM..TO \
                 (2026-07-01..2026-09-30, dates included whole, or times)"
            )
        };
        let (from, to) = if let Some((from, to)) = text.split_once("..") {
            let from = end_point(from.trim(), false).ok_or_else(bad)?;
            let to = end_point(to.trim(), true).ok_or_else(bad)?;
            (from, to)
        } else if let Some((y, q)) = text.split_once("-Q") {
            let (y, q): (i32, u32) = (y.parse().map_err(|_| bad())?, q.parse().map_err(|_| bad())?);
            if !(1..=4).contains(&q) {
                return Err(bad());
            }
            let to = if q == 4 { day(y + 1, 1) } else { day(y, q * 3 + 1) };
            (day(y, q * 3 - 2).ok_or_else(bad)?, to.ok_or_else(bad)?)
        } else if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            (midnight(d), midnight(d.succ_opt().ok_or_else(bad)?))
        } else if let Some((y, m)) = text.split_once('-') {
            let (y, m): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            let to = if m == 12 { day(y + 1, 1) } else { day(y, m + 1) };
            (day(y, m).ok_or_else(bad)?, to.ok_or_else(bad)?)
        } else {
            let y: i32 = text.parse().map_err(|_| bad())?;
            (day(y, 1).ok_or_else(bad)?, day(y + 1, 1).ok_or_else(bad)?)
        };
        if from >= to {
            return Err(format!("period `{text}` ends before it starts"));
        }
        Ok(Period { label: text.to_string(), from, to })
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

/// One end of `FROM..TO`: a date (an end date counts whole: up to the next midnight) or a time.
fn end_point(text: &str, end: bool) -> Option<DateTime<Utc>> {
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(midnight(if end { d.succ_opt()? } else { d }));
    }
    ops::restore::select::parse_time(text).ok()
}

/// A control's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
    /// The repositories hold nothing to judge it by.
    #[serde(rename = "NO-EVIDENCE")]
    NoEvidence,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::NoEvidence => "NO-EVIDENCE",
        }
    }
}

/// One control: what it asks, the verdict, one sentence saying why, and the evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Control {
    /// Stable, e.g. `schedule/base`, `wal-continuity`, `copies/s3://…`.
    pub id: String,
    pub title: String,
    pub status: Status,
    pub finding: String,
    /// The evidence, one item per line: what was counted, and each late, missed, missing or
    /// failed item by name.
    pub evidence: Vec<String>,
}

/// The report as written in JSON (and the source of the other formats).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// `drctl-report/1`.
    pub format: String,
    pub policy: String,
    /// `self-managed` or `rds`.
    pub kind: String,
    pub period: Period,
    /// The moment judged: the period's end, or the time of building while the period runs.
    pub as_of: DateTime<Utc>,
    /// The primary repository: its id (from its config) and location.
    pub repository: RepositoryRef,
    pub targets: crate::drill::record::Targets,
    pub summary: Summary,
    pub controls: Vec<Control>,
    /// What the charts draw.
    pub series: charts::Series,
    pub drctl_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepositoryRef {
    pub id: String,
    pub location: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub no_evidence: usize,
}

/// Builds the report of `policy` over `period` from its repositories' evidence; `now` bounds a
/// period that has not ended.
pub fn build(policy: &Policy, period: &Period, reach: &Reach, now: DateTime<Utc>) -> Result<Built, ops::Error> {
    let as_of = period.to.min(now);
    if as_of <= period.from {
        return Err(ops::Error::Usage(format!(
            "period {} has not started yet: report on a period that began before now",
            period.label
        )));
    }
    let (evidence, repo) = gather::gather(policy, reach, period)?;
    let repository = RepositoryRef { id: repo.config().id.clone(), location: evidence.primary.location.clone() };
    let report = assemble(policy, period, as_of, &evidence, repository);
    Ok(Built { report, repo })
}

/// The report of `policy` over `period` as of `as_of`, judged from `evidence`.
pub fn assemble(
    policy: &Policy,
    period: &Period,
    as_of: DateTime<Utc>,
    evidence: &gather::Evidence,
    repository: RepositoryRef,
) -> Report {
    let controls = controls::all(policy, period, as_of, evidence);
    let mut summary = Summary::default();
    for c in &controls {
        *match c.status {
            Status::Pass => &mut summary.pass,
            Status::Fail => &mut summary.fail,
            Status::NoEvidence => &mut summary.no_evidence,
        } += 1;
    }
    Report {
        format: "drctl-report/1".into(),
        policy: policy.name.clone(),
        kind: match policy.kind {
            crate::policy::Kind::SelfManaged => "self-managed".into(),
            crate::policy::Kind::Rds => "rds".into(),
        },
        period: period.clone(),
        as_of,
        repository,
        targets: crate::drill::record::Targets {
            rto_seconds: policy.targets.rto.num_seconds() as f64,
            rpo_seconds: policy.targets.rpo.num_seconds() as f64,
        },
        summary,
        series: charts::series(policy, period, as_of, evidence),
        controls,
        drctl_version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// A report and the repository whose key seals it.
pub struct Built {
    pub report: Report,
    pub repo: crate::repo::Repository,
}

impl Built {
    /// The report in `format`, sealed.
    pub fn render(&self, format: Format) -> String {
        let text = match format {
            Format::Json => {
                let mut json = serde_json::to_value(&self.report).expect("reports serialize");
                json["seal"] = seal::PLACEHOLDER.into();
                serde_json::to_string_pretty(&json).expect("reports serialize") + "\n"
            }
            Format::Md => markdown::render(&self.report),
            Format::Html => html::render(&self.report),
        };
        seal::seal(&text, &self.report.repository.id, |d| self.repo.report_mac(d))
    }
}

/// A time as reports print it: to the minute, UTC.
fn minute(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// A duration in the largest unit that keeps it readable (`45 s`, `12 min`, `3.5 h`, `9 d`).
fn span(seconds: f64) -> String {
    match seconds.abs() {
        s if s < 120.0 => format!("{seconds:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", seconds / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", seconds / 3600.0),
        _ => format!("{:.1} d", seconds / 86400.0),
    }
}

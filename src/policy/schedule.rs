//! Cron schedules as policies write them: the 5-field crontab form that Kubernetes CronJobs use
//! (minute, hour, day of month, month, day of week; in UTC) and its `@` shorthands, so the
//! schedule in a policy and the CronJob that runs it can be the same string.
//!
//! The `cron` crate wants a seconds field first, counts days of the week from 1 (Sunday) instead
//! of 0, and requires both day fields to match where crontab needs either; the conversion below
//! bridges the first two and refuses the third rather than change what a schedule means.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Timelike, Utc};
use cron::TimeUnitSpec;
use std::collections::BTreeSet;
use std::str::FromStr;

/// A parsed schedule, with the text it was written as.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: cron::Schedule,
}

/// Why a schedule does not parse, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub message: String,
    pub hint: String,
}

const FIVE_FIELDS: &str = "write 5 fields, minute hour day-of-month month day-of-week, in UTC (e.g. `0 2 * * *` daily \
                           at 02:00), or @hourly, @daily, @weekly, @monthly, @yearly";

const SHORTHANDS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Where the gap between runs is measured: eight years from a Monday, 1 January of a leap year,
/// so leap days and every weekday of every month occur.
const SCAN_FROM: (i32, u32, u32) = (2024, 1, 1);
const SCAN_DAYS: i64 = 8 * 365 + 2;

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let bad = |why: String| ScheduleError {
            message: format!("bad cron schedule `{text}`: {why}"),
            hint: FIVE_FIELDS.into(),
        };
        let cron_text = to_cron_crate(text).map_err(bad)?;
        let cron = cron::Schedule::from_str(&cron_text).map_err(|e| {
            // The crate's message repeats the expression with a caret line; its last line says why,
            // naming the field's inclusive maximum as what a value "must be less than".
            let why =
                e.to_string().lines().last().unwrap_or_default().trim().replace("must be less than", "must be at most");
            bad(why)
        })?;
        let schedule = Schedule { text: text.to_string(), cron };
        if schedule.active_days(schedule.times_of_day()[0]).next().is_none() {
            return Err(ScheduleError {
                message: format!(
                    "cron schedule `{text}` never runs (a day that does not exist, like 30 February), or not once in eight years"
                ),
                hint: FIVE_FIELDS.into(),
            });
        }
        Ok(schedule)
    }

    /// The schedule as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The longest time between two consecutive runs: how old the newest result of this
    /// schedule can get.
    ///
    /// Every day a schedule runs, it runs at the same times, so this is the larger of the longest
    /// gap within a day and the longest from one running day's last run to the next one's first.
    pub fn longest_gap(&self) -> Duration {
        let times = self.times_of_day();
        let (first, last) = (times[0], times[times.len() - 1]);
        let within_day = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(Duration::zero());
        let days: Vec<NaiveDate> = self.active_days(first).collect();
        let between_days = days.windows(2).map(|w| (w[1] - w[0]) - (last - first)).max();
        // A schedule with a single running day in the scan (1 February when it is a Monday, say)
        // waits at least as long as the scan.
        between_days.map_or(Duration::days(SCAN_DAYS), |gap| gap.max(within_day))
    }

    /// The first run strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.after(&t).next()
    }

    /// The latest run at or before `t`: a source whose newest snapshot is older than this has
    /// missed a run and is due.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The crate's iterator runs backwards from just after `t` (in whole seconds, which is
        // all it compares); a run exactly at `t` counts.
        let whole = t.with_nanosecond(0).unwrap_or(t);
        self.cron.after(&(whole + Duration::seconds(1))).next_back()
    }

    /// The times of day the schedule runs at, earliest first (never empty).
    fn times_of_day(&self) -> Vec<NaiveTime> {
        let mut times = Vec::new();
        for hour in self.cron.hours().iter() {
            times.extend(self.cron.minutes().iter().filter_map(|minute| NaiveTime::from_hms_opt(hour, minute, 0)));
        }
        times
    }

    /// The days of the scanned period on which the schedule runs (checked at `time`, one of its
    /// times of day).
    fn active_days(&self, time: NaiveTime) -> impl Iterator<Item = NaiveDate> + '_ {
        let (year, month, day) = SCAN_FROM;
        let start = NaiveDate::from_ymd_opt(year, month, day).expect("a valid date");
        (0..SCAN_DAYS)
            .map(move |n| start + Duration::days(n))
            .filter(move |day| self.cron.includes(DateTime::<Utc>::from_naive_utc_and_offset(day.and_time(time), Utc)))
    }
}

/// A policy schedule in the `cron` crate's syntax: seconds `0` first, the day of week as names.
fn to_cron_crate(text: &str) -> Result<String, String> {
    let text = text.trim();
    let expanded =
        if text.starts_with('@') {
            SHORTHANDS.iter().find(|(name, _)| *name == text).map(|(_, fields)| *fields).ok_or_else(|| {
                format!("unknown shorthand `{text}` (Kubernetes CronJobs know only the ones named below)")
            })?
        } else {
            text
        };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let [minute, hour, day_of_month, month, day_of_week] = fields.as_slice() else {
        return Err(match fields.len() {
            6 | 7 => format!("{} fields: policies use crontab's 5, without seconds or years", fields.len()),
            n => format!("{n} fields instead of 5"),
        });
    };
    let restricted = |field: &str| !field.starts_with('*') && !field.starts_with('?');
    if restricted(day_of_month) && restricted(day_of_week) {
        return Err("both day of month and day of week are restricted, which crontab reads as either one; \
                    restrict only one of them"
            .into());
    }
    Ok(format!("0 {minute} {hour} {day_of_month} {month} {}", day_of_week_names(day_of_week)?))
}

/// Crontab's day-of-week field (0-7, 0 and 7 both Sunday, or names; lists, ranges, steps) as
/// the list of day names the `cron` crate reads the same way.
fn day_of_week_names(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let mut days = BTreeSet::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                (range, step.parse::<usize>().ok().filter(|&s| s > 0).ok_or(format!("bad step `{step}` in `{item}`"))?)
            }
            None => (item, 1),
        };
        let (low, high) = match range.split_once('-') {
            _ if range == "*" || range == "?" => (0, 6),
            Some((low, high)) => (day_number(low)?, day_number(high)?),
            // `5/2`, as Kubernetes reads it: from Friday to the end of the week, every second day.
            None if step > 1 => (day_number(range)?, 6),
            None => (day_number(range)?, day_number(range)?),
        };
        if low > high {
            return Err(format!("day-of-week range `{range}` runs backwards"));
        }
        days.extend((low..=high).step_by(step).map(|day| day % 7));
    }
    Ok(days.into_iter().map(|day| DAY_NAMES[day]).collect::<Vec<_>>().join(","))
}

/// A day of the week, 0 (Sunday) to 7 (Sunday again), from a number or a three-letter name.
fn day_number(text: &str) -> Result<usize, String> {
    if let Some(day) = DAY_NAMES.iter().position(|name| name.eq_ignore_ascii_case(text)) {
        return Ok(day);
    }
    text.parse::<usize>().ok().filter(|&day| day <= 7).ok_or(format!("bad day of week `{text}` (0-7 or SUN-SAT)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_before_and_after_a_moment() {
        let at = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc);
        let daily = Schedule::parse("0 2 * * *").unwrap();
        assert_eq!(daily.latest_at_or_before(at("2026-11-20T02:00:00Z")), Some(at("2026-11-20T02:00:00Z")));
        assert_eq!(daily.latest_at_or_before(at("2026-11-20T01:59:59.900Z")), Some(at("2026-11-19T02:00:00Z")));
        assert_eq!(daily.latest_at_or_before(at("2026-11-20T14:03:00.5Z")), Some(at("2026-11-20T02:00:00Z")));
        assert_eq!(daily.next_after(at("2026-11-20T02:00:00Z")), Some(at("2026-11-21T02:00:00Z")));
        assert_eq!(daily.next_after(at("2026-11-20T01:59:59.5Z")), Some(at("2026-11-20T02:00:00Z")));
    }

    #[test]
    fn crontab_fields_become_the_cron_crates() {
        for (crontab, cron) in [
            ("0 2 * * *", "0 0 2 * * *"),
            ("*/15 * * * *", "0 */15 * * * *"),
            ("30 1 1 * *", "0 30 1 1 * *"),
            ("0 3 * * 0", "0 0 3 * * SUN"),
            ("0 3 * * 7", "0 0 3 * * SUN"),
            ("0 3 * * 1-5", "0 0 3 * * MON,TUE,WED,THU,FRI"),
            ("0 3 * * 5-7", "0 0 3 * * SUN,FRI,SAT"),
            ("0 3 * * */2", "0 0 3 * * SUN,TUE,THU,SAT"),
            ("0 3 * * 1-5/2", "0 0 3 * * MON,WED,FRI"),
            ("0 3 * * 5/2", "0 0 3 * * FRI"),
            ("0 3 * * sat,Sun", "0 0 3 * * SUN,SAT"),
            ("0 3 * JAN-MAR ?", "0 0 3 * JAN-MAR ?"),
            ("@daily", "0 0 0 * * *"),
            ("@weekly", "0 0 0 * * SUN"),
            ("  @hourly ", "0 0 * * * *"),
        ] {
            assert_eq!(to_cron_crate(crontab).as_deref(), Ok(cron), "{crontab}");
        }
    }

    #[test]
    fn days_of_week_mean_what_crontab_means() {
        // 1 is Monday in crontab (the cron crate alone would read Sunday): 3 March 2025 was one.
        let monday = Schedule::parse("0 6 * * 1").unwrap();
        let after = DateTime::parse_from_rfc3339("2025-03-01T00:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(monday.cron.after(&after).next().unwrap().to_rfc3339(), "2025-03-03T06:00:00+00:00");
    }

    #[test]
    fn other_forms_are_refused_with_the_reason() {
        for (text, why) in [
            ("0 0 2 * * *", "6 fields"),
            ("0 2 * *", "4 fields"),
            ("61 * * * *", "Minutes must be at most 59"),
            ("0 2 1 * 1", "both day of month and day of week"),
            ("0 2 * * 8", "bad day of week `8`"),
            ("0 2 * * 5-1", "runs backwards"),
            ("0 2 * * */0", "bad step"),
            ("@every 1h", "unknown shorthand"),
            ("0 0 30 2 *", "never runs"),
        ] {
            let err = Schedule::parse(text).unwrap_err();
            assert!(err.message.contains(why), "{text}: {err:?}");
        }
    }

    #[test]
    fn the_longest_gap_is_the_worst_wait_for_the_next_run() {
        for (text, gap) in [
            ("*/15 * * * *", Duration::minutes(15)),
            ("0 */6 * * *", Duration::hours(6)),
            ("0 2 * * *", Duration::days(1)),
            ("0 1,23 * * *", Duration::hours(22)),
            // Weekdays at 09:00: Friday to Monday.
            ("0 9 * * 1-5", Duration::days(3)),
            ("0 0 1 * *", Duration::days(31)),
            // 29 February: four years from one to the next.
            ("0 0 29 2 *", Duration::days(4 * 365 + 1)),
        ] {
            assert_eq!(Schedule::parse(text).unwrap().longest_gap(), gap, "{text}");
        }
    }
}

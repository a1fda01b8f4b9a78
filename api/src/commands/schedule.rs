//! Weekly schedules (seed 003 FR4): a device runs at `fanSpeed` every `day` from `startTime`
//! to `endTime`, wall-clock time in `timezone`.
//!
//! A schedule is a rule of local time; its occurrences are instants, found with `chrono-tz`
//! week by week, so 09:00 stays 09:00 across a daylight-saving change (08:00 UTC in winter,
//! 07:00 in summer in Berlin). A local time that a change skips (02:30 on the spring-forward
//! night) starts when the clock reaches it again after the gap (03:30); one that it repeats
//! (02:30 on the fall-back night) starts at its first occurrence. An `endTime` before the
//! `startTime` ends the next day. Two schedules of one device overlap when any of their
//! occurrences in the coming year do, whatever their time zones: such a schedule is refused.

use chrono::{DateTime, Datelike, Duration as Days, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Weeks ahead in which overlaps are looked for (a year and a day: every DST rule comes round).
const OVERLAP_WEEKS: i64 = 53;

/// What `POST /api/v1/schedules` and `PUT /api/v1/schedules/{id}` take and answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub device: String,
    pub day: String,
    pub start_time: String,
    pub end_time: String,
    pub fan_speed: u64,
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn utc() -> String {
    "UTC".to_owned()
}

fn enabled() -> bool {
    true
}

/// A checked schedule, ready to give its occurrences.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub spec: ScheduleSpec,
    pub day: Weekday,
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub tz: Tz,
}

/// One run of a schedule, in epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Occurrence {
    pub start: i64,
    pub end: i64,
}

fn parse_time(field: &str, text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text, "%H:%M")
        .map_err(|_| format!("`{field}`: a time as HH:MM (24 hours), not {text:?}"))
}

fn parse_day(text: &str) -> Result<Weekday, String> {
    let day: Weekday = text
        .parse()
        .map_err(|_| format!("`day`: a day of the week (monday to sunday), not {text:?}"))?;
    Ok(day)
}

impl Schedule {
    /// Checks a spec: a known day, times as HH:MM, a speed from 1 to 5, an IANA time zone.
    pub fn check(spec: ScheduleSpec) -> Result<Self, String> {
        aemos_ingest::validate::check_device(&spec.device).map_err(|e| format!("`device`: {e}"))?;
        let day = parse_day(&spec.day)?;
        let start = parse_time("startTime", &spec.start_time)?;
        let end = parse_time("endTime", &spec.end_time)?;
        if start == end {
            return Err("`endTime`: the same as `startTime`; a schedule runs for a while".into());
        }
        if !(1..=5).contains(&spec.fan_speed) {
            return Err(format!(
                "`fanSpeed`: an integer from 1 to 5, not {}",
                spec.fan_speed
            ));
        }
        let tz: Tz = spec.timezone.parse().map_err(|_| {
            format!(
                "`timezone`: an IANA time zone such as \"Europe/Berlin\", not {:?}",
                spec.timezone
            )
        })?;
        Ok(Self {
            spec,
            day,
            start,
            end,
            tz,
        })
    }

    pub fn id(&self) -> &str {
        self.spec.id.as_deref().unwrap_or_default()
    }

    /// The occurrence that starts on `date` (a date of the schedule's day).
    fn on(&self, date: NaiveDate) -> Occurrence {
        let end_date = if self.end > self.start {
            date
        } else {
            date + Days::days(1)
        };
        Occurrence {
            start: instant(self.tz, date, self.start),
            end: instant(self.tz, end_date, self.end),
        }
    }

    /// The occurrences whose start is at or after the week holding `from_ms` began, in order,
    /// `weeks` of them.
    pub fn occurrences(&self, from_ms: i64, weeks: i64) -> impl Iterator<Item = Occurrence> + '_ {
        let local = DateTime::from_timestamp_millis(from_ms)
            .unwrap_or_default()
            .with_timezone(&self.tz)
            .date_naive();
        let back = (local.weekday().num_days_from_monday() as i64
            - self.day.num_days_from_monday() as i64)
            .rem_euclid(7);
        // A week earlier too: the run that started last week may still be going.
        let first = local - Days::days(back + 7);
        (0..weeks + 1).map(move |w| self.on(first + Days::weeks(w)))
    }

    /// The run going on at `now_ms`, or else the last one that ended by then.
    pub fn current(&self, now_ms: i64) -> Option<Occurrence> {
        self.occurrences(now_ms, 2)
            .filter(|o| o.start <= now_ms)
            .last()
    }

    /// Whether some run of `self` and some run of `other` share an instant, within the year
    /// from `from_ms`.
    pub fn overlaps(&self, other: &Schedule, from_ms: i64) -> bool {
        let theirs: Vec<Occurrence> = other.occurrences(from_ms, OVERLAP_WEEKS).collect();
        self.occurrences(from_ms, OVERLAP_WEEKS)
            .any(|a| theirs.iter().any(|b| a.start < b.end && b.start < a.end))
    }
}

/// `date` at `time` in `tz` as epoch milliseconds: the first of a repeated local time; a skipped
/// one read with the offset before the gap, which moves it past the gap by the gap's length
/// (as `java.time` does: 02:30 on a spring-forward night in Berlin is 03:30 CEST).
fn instant(tz: Tz, date: NaiveDate, time: NaiveTime) -> i64 {
    use chrono::Offset;
    let local = date.and_time(time);
    if let Some(t) = tz.from_local_datetime(&local).earliest() {
        return t.with_timezone(&Utc).timestamp_millis();
    }
    // A day earlier is before the change, whatever the zone's offset.
    let before = tz.offset_from_utc_datetime(&(local - Days::days(1))).fix();
    (local - Days::seconds(before.local_minus_utc() as i64))
        .and_utc()
        .timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(day: &str, start: &str, end: &str, tz: &str) -> Schedule {
        Schedule::check(ScheduleSpec {
            id: Some("s".into()),
            device: "p".into(),
            day: day.into(),
            start_time: start.into(),
            end_time: end.into(),
            fan_speed: 3,
            timezone: tz.into(),
            enabled: true,
        })
        .unwrap()
    }

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn nine_in_berlin_is_eight_utc_in_winter_and_seven_in_summer() {
        let s = schedule("monday", "09:00", "17:00", "Europe/Berlin");
        // 2027-03-28 is the spring-forward Sunday.
        let runs: Vec<_> = s.occurrences(ms("2027-03-20T00:00:00Z"), 3).collect();
        assert!(runs.contains(&Occurrence {
            start: ms("2027-03-22T08:00:00Z"),
            end: ms("2027-03-22T16:00:00Z"),
        }));
        assert!(runs.contains(&Occurrence {
            start: ms("2027-03-29T07:00:00Z"),
            end: ms("2027-03-29T15:00:00Z"),
        }));
        assert_eq!(
            s.current(ms("2027-03-29T10:00:00Z")).unwrap().start,
            ms("2027-03-29T07:00:00Z")
        );
    }

    #[test]
    fn skipped_and_repeated_local_times() {
        let gap = schedule("sunday", "02:30", "04:00", "Europe/Berlin");
        let run = gap.current(ms("2027-03-28T03:00:00Z")).unwrap();
        assert_eq!(run.start, ms("2027-03-28T01:30:00Z"), "03:30 CEST");
        assert_eq!(run.end, ms("2027-03-28T02:00:00Z"), "04:00 CEST");
        // 2027-10-31: 02:30 happens twice; the first is 00:30 UTC.
        let twice = schedule("sunday", "02:30", "05:00", "Europe/Berlin");
        let run = twice.current(ms("2027-10-31T03:00:00Z")).unwrap();
        assert_eq!(run.start, ms("2027-10-31T00:30:00Z"));
    }

    #[test]
    fn overnight_runs_and_overlaps_across_time_zones() {
        let night = schedule("friday", "22:00", "06:00", "UTC");
        let run = night.current(ms("2027-01-09T05:00:00Z")).unwrap();
        assert_eq!(
            (run.start, run.end),
            (ms("2027-01-08T22:00:00Z"), ms("2027-01-09T06:00:00Z"))
        );
        let now = ms("2027-01-01T00:00:00Z");
        let saturday_early = schedule("saturday", "05:00", "07:00", "UTC");
        assert!(night.overlaps(&saturday_early, now));
        // 08:00 in Berlin is 07:00 UTC in winter, 06:00 in summer: overlaps in summer only.
        let berlin = schedule("saturday", "08:00", "09:00", "Europe/Berlin");
        let utc_morning = schedule("saturday", "06:00", "06:30", "UTC");
        assert!(berlin.overlaps(&utc_morning, now));
        assert!(!berlin.overlaps(
            &schedule("saturday", "09:00", "10:00", "Europe/Berlin"),
            now
        ));
    }

    #[test]
    fn bad_fields_are_named() {
        let spec = |day: &str, start: &str, speed: u64, tz: &str| ScheduleSpec {
            id: None,
            device: "p".into(),
            day: day.into(),
            start_time: start.into(),
            end_time: "10:00".into(),
            fan_speed: speed,
            timezone: tz.into(),
            enabled: true,
        };
        for (s, field) in [
            (spec("someday", "09:00", 3, "UTC"), "`day`"),
            (spec("monday", "9am", 3, "UTC"), "`startTime`"),
            (spec("monday", "25:00", 3, "UTC"), "`startTime`"),
            (spec("monday", "10:00", 3, "UTC"), "`endTime`"),
            (spec("monday", "09:00", 6, "UTC"), "`fanSpeed`"),
            (spec("monday", "09:00", 3, "Mars/Olympus"), "`timezone`"),
        ] {
            let e = Schedule::check(s).unwrap_err();
            assert!(e.starts_with(field), "{e}");
        }
    }
}

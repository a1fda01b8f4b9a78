//! The reading rules of the API contract, one function per field.

use chrono::DateTime;

use crate::TimeBounds;

/// Latest accepted time: the start of year 10000, in epoch milliseconds.
pub const MAX_TIME_MS: i64 = 253_402_300_800_000;

fn check_name(field: &str, value: &str, max: usize, allow_colon: bool) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if value.chars().count() > max {
        return Err(format!("{field} is longer than {max} characters"));
    }
    let ok = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || (allow_colon && c == ':')
    };
    if let Some(bad) = value.chars().find(|c| !ok(*c)) {
        let allowed = if allow_colon {
            "[A-Za-z0-9._:-]"
        } else {
            "[A-Za-z0-9._-]"
        };
        return Err(format!(
            "{field} {value:?} has character {bad:?} outside {allowed}"
        ));
    }
    Ok(())
}

pub fn check_sensor(value: &str) -> Result<(), String> {
    check_name("sensor", value, 128, true)
}

pub fn check_device(value: &str) -> Result<(), String> {
    check_name("device", value, 128, true)
}

pub fn check_variable(value: &str) -> Result<(), String> {
    check_name("variable", value, 64, false)
}

pub fn check_value(value: f64) -> Result<(), String> {
    if value.is_nan() {
        Err("value is NaN".into())
    } else if value.is_infinite() {
        Err("value is infinite".into())
    } else {
        Ok(())
    }
}

pub fn check_time_ms(time_ms: i64) -> Result<i64, String> {
    if (0..MAX_TIME_MS).contains(&time_ms) {
        Ok(time_ms)
    } else {
        Err(format!(
            "time {time_ms} is outside 1970-01-01..10000-01-01 (epoch milliseconds)"
        ))
    }
}

/// Whether a reading stamped `time_ms` may be written now: not older than the retention (it
/// would be acknowledged, then deleted) nor further ahead of the clock than `max_future`.
pub fn check_time_bounds(time_ms: i64, now_ms: i64, bounds: &TimeBounds) -> Result<(), String> {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let (oldest, newest) = (
        now_ms.saturating_sub(ms(bounds.retention)),
        now_ms.saturating_add(ms(bounds.max_future)),
    );
    let text = |ms: i64| {
        DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| ms.to_string())
    };
    if time_ms < oldest {
        Err(format!(
            "time {} is beyond the retention ({}, so before {}): it would be deleted",
            text(time_ms),
            as_flag(bounds.retention),
            text(oldest)
        ))
    } else if time_ms > newest {
        Err(format!(
            "time {} is more than {} ahead of the server's clock (after {}; --max-future)",
            text(time_ms),
            as_flag(bounds.max_future),
            text(newest)
        ))
    } else {
        Ok(())
    }
}

/// A duration as the flags spell it (`90d`, `1h`, `1h30m`): humantime's own format counts
/// months of 30.44 days.
fn as_flag(d: std::time::Duration) -> String {
    let mut left = d.as_secs();
    let mut out = String::new();
    for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= secs {
            out.push_str(&format!("{}{unit}", left / secs));
            left %= secs;
        }
    }
    if out.is_empty() {
        format!("{}ms", d.as_millis())
    } else {
        out
    }
}

pub fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    let t = DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("time {text:?} is not RFC 3339: {e}"))?;
    check_time_ms(t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        assert!(check_sensor("sensor-abc:1.2_x").is_ok());
        assert!(check_variable("temp:x").unwrap_err().contains("':'"));
        assert!(check_sensor(&"s".repeat(129))
            .unwrap_err()
            .contains("longer than 128"));
        assert!(check_sensor(&"s".repeat(128)).is_ok());
        assert!(check_variable("").unwrap_err().contains("empty"));
        assert!(check_sensor("a b").unwrap_err().contains("' '"));
        assert!(check_value(f64::NAN).is_err());
        assert!(check_value(f64::NEG_INFINITY).is_err());
        assert_eq!(
            parse_rfc3339_ms("2026-01-20T10:30:00Z"),
            Ok(1_768_905_000_000)
        );
        assert!(parse_rfc3339_ms("2026-13-20T10:30:00Z").is_err());
        assert!(check_time_ms(-1).is_err());
    }
}

//! What a limit says: a rate (`100/minute`, as slowapi users write it) and a quota
//! (`10000/day`, `250000/month`, counted in calendar periods of UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::AccessError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub requests: u32,
    pub per: Duration,
}

impl std::str::FromStr for Rate {
    type Err = AccessError;

    /// `N/second`, `N/minute`, `N/hour` (also `N/s`, `N/m`, `N/h`, `N per minute`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (requests, unit) = count_and_unit(s, "rate")?;
        let per = match unit.as_str() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            u => {
                return Err(AccessError::Limit(format!(
                    "rate {s:?}: unknown unit {u:?} (second, minute, hour)"
                )))
            }
        };
        Ok(Rate { requests, per })
    }
}

/// Calendar periods a quota counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub requests: u64,
    pub per: Period,
}

impl std::str::FromStr for Quota {
    type Err = AccessError;

    /// `N/day` or `N/month` (also `N/d`, `N per month`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (requests, unit) = count_and_unit(s, "quota")?;
        let per = match unit.as_str() {
            "d" | "day" => Period::Day,
            "mo" | "month" => Period::Month,
            u => {
                return Err(AccessError::Limit(format!(
                    "quota {s:?}: unknown unit {u:?} (day, month)"
                )))
            }
        };
        Ok(Quota {
            requests: u64::from(requests),
            per,
        })
    }
}

fn count_and_unit(s: &str, what: &str) -> Result<(u32, String), AccessError> {
    let norm = s.trim().to_ascii_lowercase().replace(" per ", "/");
    let (n, unit) = norm
        .split_once('/')
        .ok_or_else(|| AccessError::Limit(format!("{what} {s:?} is not N/unit")))?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| AccessError::Limit(format!("{what} {s:?}: {n:?} is not a count")))?;
    if n == 0 {
        return Err(AccessError::Limit(format!(
            "{what} {s:?} must allow at least one request"
        )));
    }
    Ok((n, unit.trim().trim_end_matches('s').to_owned()))
}

/// The calendar period `now` falls in (UTC): its name (for storage keys) and the time left in it.
pub fn window(per: Period, now: SystemTime) -> (String, Duration) {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let today = jiff::Timestamp::from_second(secs as i64)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let (name, end) = match per {
        Period::Day => (today.strftime("%Y-%m-%d").to_string(), today.tomorrow()),
        Period::Month => (
            today.strftime("%Y-%m").to_string(),
            today.last_of_month().tomorrow(),
        ),
    };
    let end = end
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map_or(secs, |z| z.timestamp().as_second() as u64);
    (name, Duration::from_secs(end.saturating_sub(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let r: Rate = "100/minute".parse().unwrap();
        assert_eq!((r.requests, r.per), (100, Duration::from_secs(60)));
        assert_eq!(
            "5 per second".parse::<Rate>().unwrap().per,
            Duration::from_secs(1)
        );
        assert!("x/minute".parse::<Rate>().is_err());
        assert!("5/fortnight".parse::<Rate>().is_err());
        assert!("0/minute".parse::<Rate>().is_err());
        let q: Quota = "10000/day".parse().unwrap();
        assert_eq!((q.requests, q.per), (10_000, Period::Day));
        assert_eq!("5 per months".parse::<Quota>().unwrap().per, Period::Month);
        assert!("5/hour".parse::<Quota>().is_err());
    }

    #[test]
    fn windows_end_at_midnight_and_at_the_month_end() {
        // 2024-02-29T23:00:00Z, a leap day.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_247_600);
        assert_eq!(
            window(Period::Day, t),
            ("2024-02-29".into(), Duration::from_secs(3600))
        );
        assert_eq!(
            window(Period::Month, t),
            ("2024-02".into(), Duration::from_secs(3600))
        );
        // 2026-12-15T00:00:00Z: December's end is in the next year.
        let t = UNIX_EPOCH + Duration::from_secs(1_797_292_800);
        let (name, left) = window(Period::Month, t);
        assert_eq!(name, "2026-12");
        assert_eq!(left, Duration::from_secs(17 * 86_400));
    }
}

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

/// The calendar period `now` falls in: its name (for storage keys) and the time left in it.
pub fn window(per: Period, now: SystemTime) -> (String, Duration) {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    match per {
        Period::Day => {
            let end = (days + 1) as u64 * 86_400;
            (
                format!("{y:04}-{m:02}-{d:02}"),
                Duration::from_secs(end - secs),
            )
        }
        Period::Month => {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let end = days_from_civil(ny, nm, 1) as u64 * 86_400;
            (format!("{y:04}-{m:02}"), Duration::from_secs(end - secs))
        }
    }
}

/// Days since 1970-01-01 → (year, month, day) of the Gregorian calendar (Howard Hinnant's
/// well-known algorithm; also the log lines' timestamps).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

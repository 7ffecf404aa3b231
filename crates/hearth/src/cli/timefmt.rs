//! Times as a person reads and types them (UTC, to the second), without a date library.

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2026-12-01 16:40:02Z`.
pub fn format_utc(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// RFC 3339 in UTC for JSON: `2026-12-01T16:40:02.123Z`.
pub fn rfc3339(ms: u64) -> String {
    let t = format_utc(ms);
    format!("{}T{}.{:03}Z", &t[..10], &t[11..19], ms % 1000)
}

fn parse_utc(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))?;
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let (y, m, dd): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&dd) || y < 1970 {
        return None;
    }
    let mut t = time.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let sec: i64 = match t.next() {
        Some(x) => x.parse().ok()?,
        None => 0,
    };
    if t.next().is_some() || h > 23 || mi > 59 || sec > 60 || h < 0 || mi < 0 || sec < 0 {
        return None;
    }
    let secs = days_from_civil(y, m, dd) * 86_400 + h * 3600 + mi * 60 + sec;
    u64::try_from(secs).ok().map(|s| s * 1000)
}

/// `--since`: `30s`, `10m`, `2h`, `1d` back from `now_ms`; a UTC time; or epoch ms.
pub fn parse_since(s: &str, now_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    let bad = || {
        format!(
            "{s:?} is not a time: write a duration back from now (30s, 10m, 2h, 1d), a UTC time \
             (2026-12-01T16:40:00Z) or milliseconds since the Unix epoch"
        )
    };
    if let Some(unit) = s.chars().last().filter(|c| "smhd".contains(*c)) {
        let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
        let per = match unit {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            _ => 86_400_000,
        };
        return Ok(now_ms.saturating_sub(n.saturating_mul(per)));
    }
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    parse_utc(s).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_format_and_parse_back() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00Z");
        // 2026-12-01T16:40:02.5Z
        let ms = 1_796_143_202_500;
        assert_eq!(format_utc(ms), "2026-12-01 16:40:02Z");
        assert_eq!(rfc3339(ms), "2026-12-01T16:40:02.500Z");
        assert_eq!(parse_since("2026-12-01T16:40:02Z", 0), Ok(ms - 500));
        assert_eq!(parse_since("2026-12-01 16:40Z", 0), Ok(ms - 2_500));
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(parse_since("2000-02-29T00:00:00Z", 0), Ok(951_782_400_000));
    }

    #[test]
    fn durations_count_back_from_now_and_typos_are_refused() {
        let now = 10_000_000;
        assert_eq!(parse_since("30s", now), Ok(now - 30_000));
        assert_eq!(parse_since("10m", now), Ok(now - 600_000));
        assert_eq!(parse_since("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_since("1d", now), Ok(0), "never before the epoch");
        assert_eq!(parse_since("1234", now), Ok(1234));
        for bad in [
            "",
            "m",
            "10x",
            "-5m",
            "2026-13-01T00:00Z",
            "2026-12-01T25:00Z",
            "yesterday",
            "2026-12-01T16:40:00",
            "1.5h",
        ] {
            let e = parse_since(bad, now).expect_err(bad);
            assert!(e.contains("is not a time"), "{e}");
        }
    }
}

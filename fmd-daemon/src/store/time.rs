//! Timestamps at the store's edges: the fixed RFC 3339 form rows are shown in, and the absolute or
//! relative times (`15m`, `2h`, `7d`) that filters accept from the API and the CLI.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::{format_description::well_known::Rfc3339, macros::format_description, OffsetDateTime};

use super::Error;

/// Microseconds since the Unix epoch, UTC: the store's one time unit.
pub type Micros = i64;

/// Now, in microseconds since the epoch (0 if the clock is before 1970).
pub fn now_us() -> Micros {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        Micros::try_from(d.as_micros()).unwrap_or(Micros::MAX)
    })
}

/// `2026-11-23T15:56:41.123456Z`: UTC, always six fractional digits, so the strings sort like the times.
pub fn format_us(us: Micros) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        // Out of the time crate's range (beyond year 9999): still show something that says so.
        .unwrap_or_else(|| format!("@{us}us"))
}

/// Parses an RFC 3339 time (any offset, any fractional precision) to microseconds.
pub fn parse_rfc3339(input: &str) -> Option<Micros> {
    let t = OffsetDateTime::parse(input, &Rfc3339).ok()?;
    Micros::try_from(t.unix_timestamp_nanos().div_euclid(1_000)).ok()
}

/// Parses a filter bound: an RFC 3339 time, or a duration before `now` such as `15m`, `2h`, `7d`, `1h30m`.
pub fn parse_instant(input: &str, now: Micros) -> Result<Micros, Error> {
    let bad = || Error::BadTime {
        input: input.to_owned(),
    };
    let input = input.trim();
    if let Some(us) = parse_rfc3339(input) {
        return Ok(us);
    }
    let ago: Duration = humantime::parse_duration(input).map_err(|_| bad())?;
    let ago = Micros::try_from(ago.as_micros()).map_err(|_| bad())?;
    now.checked_sub(ago).ok_or_else(bad)
}

/// Serde for a [`Micros`] field shown as [`format_us`] text.
pub mod serde_us {
    use serde::{de, Deserialize, Deserializer, Serializer};

    use super::Micros;

    pub fn serialize<S: Serializer>(us: &Micros, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_us(*us))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Micros, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_rfc3339(&text)
            .ok_or_else(|| de::Error::custom(format!("{text:?} is not an RFC 3339 time")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Micros = 1_795_449_401_123_456; // 2026-11-23T15:56:41.123456Z

    fn check(input: &str, expect: Option<&str>) {
        let got = parse_instant(input, NOW).ok().map(format_us);
        assert_eq!(got.as_deref(), expect, "input {input:?}");
    }

    #[test]
    fn formats_utc_with_microseconds() {
        for (us, expect) in [
            (NOW, "2026-11-23T15:56:41.123456Z"),
            (0, "1970-01-01T00:00:00.000000Z"),
            (1_000_000, "1970-01-01T00:00:01.000000Z"),
            (-1, "1969-12-31T23:59:59.999999Z"),
            (Micros::MAX, "@9223372036854775807us"),
        ] {
            assert_eq!(format_us(us), expect);
        }
    }

    #[test]
    fn parses_absolute_and_relative_times() {
        check(
            "2026-11-23T15:56:41.123456Z",
            Some("2026-11-23T15:56:41.123456Z"),
        );
        check(
            "2026-11-23T16:56:41+01:00",
            Some("2026-11-23T15:56:41.000000Z"),
        );
        check(
            "2026-11-23T15:56:41.1234567Z",
            Some("2026-11-23T15:56:41.123456Z"),
        );
        check("15m", Some("2026-11-23T15:41:41.123456Z"));
        check(" 2h ", Some("2026-11-23T13:56:41.123456Z"));
        check("7d", Some("2026-11-16T15:56:41.123456Z"));
        check("1h30m", Some("2026-11-23T14:26:41.123456Z"));
        check("90s", Some("2026-11-23T15:55:11.123456Z"));
        check("0s", Some("2026-11-23T15:56:41.123456Z"));
        check("", None);
        check("yesterday", None);
        check("15", None);
        check("-5m", None);
        check("2026-11-23", None);
        check("2026-11-23 15:56:41", None);
    }

    #[test]
    fn serde_round_trips() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "serde_us")]
            ts: Micros,
        }
        let json = serde_json::to_string(&T { ts: NOW }).expect("serialize");
        assert_eq!(json, r#"{"ts":"2026-11-23T15:56:41.123456Z"}"#);
        assert_eq!(
            serde_json::from_str::<T>(&json).expect("deserialize"),
            T { ts: NOW }
        );
        assert!(serde_json::from_str::<T>(r#"{"ts":"now"}"#).is_err());
    }
}

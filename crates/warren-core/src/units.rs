//! Durations and sizes as people write them: `1500ms`, `2s`, `1m`; `64M`, `1G`, `4096`.
//!
//! Plain numbers are milliseconds for durations and bytes for sizes. Size suffixes are binary
//! (`K` = 1024), with or without a trailing `B` or `iB`.

use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serializer};

/// Why a duration or size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text is empty.
    #[error("empty value")]
    Empty,
    /// The numeric part is missing or not a number.
    #[error("`{0}` is not a number followed by an optional unit")]
    NotANumber(String),
    /// The unit is not one this parser knows.
    #[error("unknown unit `{unit}` in `{text}` (expected {expected})")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit as written.
        unit: String,
        /// The units accepted.
        expected: &'static str,
    },
    /// The value does not fit in 64 bits.
    #[error("`{0}` is too large")]
    Overflow(String),
}

const DURATION_UNITS: &str = "ns, us, ms, s, m or h";
const SIZE_UNITS: &str = "B, K, M, G or T";

fn split_number(text: &str) -> Result<(f64, &str), UnitError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(UnitError::Empty);
    }
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let value: f64 = number
        .parse()
        .map_err(|_| UnitError::NotANumber(text.to_string()))?;
    Ok((value, unit.trim()))
}

/// Parses a duration: `1500ms`, `2s`, `1.5s`, `2m`, `1h`, `250us`; a plain number is milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let (value, unit) = split_number(text)?;
    let nanos_per_unit: f64 = match unit {
        "" | "ms" => 1e6,
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "s" | "sec" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        other => {
            return Err(UnitError::UnknownUnit {
                text: text.to_string(),
                unit: other.to_string(),
                expected: DURATION_UNITS,
            })
        }
    };
    let nanos = value * nanos_per_unit;
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(UnitError::Overflow(text.to_string()));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// Parses a size in bytes: `64M`, `1G`, `512K`, `1.5G`, `4096`; suffixes are powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let (value, unit) = split_number(text)?;
    let unit_upper = unit.to_ascii_uppercase();
    let base = unit_upper
        .strip_suffix("IB")
        .or_else(|| unit_upper.strip_suffix('B'))
        .unwrap_or(&unit_upper);
    let multiplier: f64 = match base {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(UnitError::UnknownUnit {
                text: text.to_string(),
                unit: unit.to_string(),
                expected: SIZE_UNITS,
            })
        }
    };
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(UnitError::Overflow(text.to_string()));
    }
    Ok(bytes.round() as u64)
}

/// Formats a size compactly with a binary suffix, exact when possible (`64M`, `1536K`, `1000`).
pub fn format_size(bytes: u64) -> String {
    const SUFFIXES: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (unit, suffix) in SUFFIXES {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// Formats a duration compactly (`1500ms`, `2s`).
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) && millis > 0 {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

/// Serde helpers for an optional duration written as milliseconds or as text like `"2s"`.
pub mod serde_duration_ms {
    use super::*;

    /// Serializes as whole milliseconds.
    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }

    /// Accepts a number of milliseconds or a duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<NumberOrText>::deserialize(d)? {
            None => Ok(None),
            Some(NumberOrText::Number(ms)) => Ok(Some(Duration::from_millis(ms))),
            Some(NumberOrText::Text(text)) => {
                parse_duration(&text).map(Some).map_err(de::Error::custom)
            }
        }
    }
}

/// Serde helpers for an optional size written as bytes or as text like `"64M"`.
pub mod serde_size {
    use super::*;

    /// Serializes as a number of bytes.
    pub fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_u64(*v),
            None => s.serialize_none(),
        }
    }

    /// Accepts a number of bytes or a size string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<NumberOrText>::deserialize(d)? {
            None => Ok(None),
            Some(NumberOrText::Number(n)) => Ok(Some(n)),
            Some(NumberOrText::Text(text)) => {
                parse_size(&text).map(Some).map_err(de::Error::custom)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_duration(text: &str, expected_ms: Option<u128>) {
        let got = parse_duration(text).ok().map(|d| d.as_millis());
        assert_eq!(got, expected_ms, "parse_duration({text:?})");
    }

    fn check_size(text: &str, expected: Option<u64>) {
        assert_eq!(parse_size(text).ok(), expected, "parse_size({text:?})");
    }

    #[test]
    fn durations() {
        check_duration("1500ms", Some(1500));
        check_duration("2s", Some(2000));
        check_duration("1.5s", Some(1500));
        check_duration("2m", Some(120_000));
        check_duration("1h", Some(3_600_000));
        check_duration("250", Some(250));
        check_duration(" 3s ", Some(3000));
        check_duration("", None);
        check_duration("s", None);
        check_duration("2 parsecs", None);
        check_duration("-1s", None);
        check_duration("1e400s", None);
    }

    #[test]
    fn sizes() {
        check_size("64M", Some(64 << 20));
        check_size("1G", Some(1 << 30));
        check_size("1GiB", Some(1 << 30));
        check_size("512k", Some(512 << 10));
        check_size("4096", Some(4096));
        check_size("10B", Some(10));
        check_size("1.5K", Some(1536));
        check_size("12X", None);
        check_size("", None);
        check_size("M", None);
    }

    #[test]
    fn formatting_round_trips() {
        for bytes in [0u64, 1000, 1024, 64 << 20, 1 << 30, 1536 << 10] {
            assert_eq!(parse_size(&format_size(bytes)).ok(), Some(bytes));
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
    }

    #[test]
    fn unknown_unit_names_it() {
        let err = parse_size("3Q")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("`Q`"), "{err}");
    }
}

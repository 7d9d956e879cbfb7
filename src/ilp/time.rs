//! Timestamps as Interledger writes them, without a date library.
//!
//! * ILP Prepare `expiresAt`: 17 fixed digits `YYYYMMDDHHmmSSfff`, UTC (RFC 27, RFC 30).
//! * BTP / OER GeneralizedTime: `YYYYMMDDHHmmSS[.f{1,3}]Z`, 15 to 19 characters (RFC 30). We write the
//!   19-character `.fffZ` form, which is the only one the JS `btp-packet` reads, and accept all four.
//! * ISO 8601 (`2017-12-23T01:21:40.549Z`) for people and JSON.
//!
//! Leap seconds are smeared in ILP (RFC 30), so a seconds field of 60 is invalid.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A UTC instant with millisecond precision, from 0000-01-01 to 9999-12-31.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    unix_millis: i64,
}

/// Why a timestamp did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampError {
    /// The text has the wrong number of characters.
    WrongLength(usize),
    /// The character at this index (within the timestamp) is not what the format requires.
    BadCharacter(usize),
    /// A field is out of range: month, day, hour, minute or second.
    FieldOutOfRange(&'static str),
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimestampError::WrongLength(n) => write!(f, "timestamp has {n} characters"),
            TimestampError::BadCharacter(i) => write!(f, "unexpected character at index {i}"),
            TimestampError::FieldOutOfRange(field) => write!(f, "{field} out of range"),
        }
    }
}

impl std::error::Error for TimestampError {}

const MILLIS_PER_DAY: i64 = 86_400_000;
/// 0000-01-01T00:00:00.000Z
const MIN_MILLIS: i64 = -62_167_219_200_000;
/// 9999-12-31T23:59:59.999Z
const MAX_MILLIS: i64 = 253_402_300_799_999;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The broken-down fields of a timestamp.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
}

#[inline]
fn digits(text: &[u8], start: usize, len: usize) -> Result<u32, TimestampError> {
    let mut value = 0u32;
    for (i, &c) in text[start..start + len].iter().enumerate() {
        if !c.is_ascii_digit() {
            return Err(TimestampError::BadCharacter(start + i));
        }
        value = value * 10 + u32::from(c - b'0');
    }
    Ok(value)
}

fn write_digits(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

impl Timestamp {
    /// The earliest representable instant, 0000-01-01T00:00:00.000Z.
    pub const MIN: Timestamp = Timestamp {
        unix_millis: MIN_MILLIS,
    };
    /// The latest representable instant, 9999-12-31T23:59:59.999Z.
    pub const MAX: Timestamp = Timestamp {
        unix_millis: MAX_MILLIS,
    };

    /// The instant `unix_millis` milliseconds after 1970-01-01T00:00:00Z, if it lies within
    /// years 0000 to 9999.
    pub fn from_unix_millis(unix_millis: i64) -> Option<Self> {
        (MIN_MILLIS..=MAX_MILLIS)
            .contains(&unix_millis)
            .then_some(Timestamp { unix_millis })
    }

    /// Milliseconds since 1970-01-01T00:00:00Z (negative before it).
    pub fn unix_millis(self) -> i64 {
        self.unix_millis
    }

    /// The current time, truncated to the millisecond.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// This instant moved by `millis` (saturating at the representable range).
    pub fn add_millis(self, millis: i64) -> Self {
        Timestamp {
            unix_millis: self
                .unix_millis
                .saturating_add(millis)
                .clamp(MIN_MILLIS, MAX_MILLIS),
        }
    }

    /// As a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        if self.unix_millis >= 0 {
            UNIX_EPOCH + Duration::from_millis(self.unix_millis as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(self.unix_millis.unsigned_abs())
        }
    }

    fn from_civil(c: &Civil) -> Result<Self, TimestampError> {
        if !(1..=12).contains(&c.month) {
            return Err(TimestampError::FieldOutOfRange("month"));
        }
        if c.day == 0 || c.day > days_in_month(c.year, c.month) {
            return Err(TimestampError::FieldOutOfRange("day"));
        }
        if c.hour > 23 {
            return Err(TimestampError::FieldOutOfRange("hour"));
        }
        if c.minute > 59 {
            return Err(TimestampError::FieldOutOfRange("minute"));
        }
        if c.second > 59 {
            return Err(TimestampError::FieldOutOfRange("second"));
        }
        let days = days_from_civil(c.year, c.month, c.day);
        let millis_of_day =
            ((i64::from(c.hour) * 60 + i64::from(c.minute)) * 60 + i64::from(c.second)) * 1000
                + i64::from(c.millis);
        Ok(Timestamp {
            unix_millis: days * MILLIS_PER_DAY + millis_of_day,
        })
    }

    fn to_civil(self) -> Civil {
        let days = self.unix_millis.div_euclid(MILLIS_PER_DAY);
        let ms = self.unix_millis.rem_euclid(MILLIS_PER_DAY) as u32;
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: ms / 3_600_000,
            minute: ms / 60_000 % 60,
            second: ms / 1000 % 60,
            millis: ms % 1000,
        }
    }

    fn parse_date_time(text: &[u8]) -> Result<Civil, TimestampError> {
        Ok(Civil {
            year: i64::from(digits(text, 0, 4)?),
            month: digits(text, 4, 2)?,
            day: digits(text, 6, 2)?,
            hour: digits(text, 8, 2)?,
            minute: digits(text, 10, 2)?,
            second: digits(text, 12, 2)?,
            millis: 0,
        })
    }

    fn write_date_time(self, out: &mut [u8]) -> u32 {
        let c = self.to_civil();
        write_digits(&mut out[0..4], c.year as u32);
        write_digits(&mut out[4..6], c.month);
        write_digits(&mut out[6..8], c.day);
        write_digits(&mut out[8..10], c.hour);
        write_digits(&mut out[10..12], c.minute);
        write_digits(&mut out[12..14], c.second);
        c.millis
    }

    /// Parses the 17-digit ILP form `YYYYMMDDHHmmSSfff`.
    pub fn parse_ilp(text: &[u8]) -> Result<Self, TimestampError> {
        if text.len() != 17 {
            return Err(TimestampError::WrongLength(text.len()));
        }
        let mut civil = Self::parse_date_time(text)?;
        civil.millis = digits(text, 14, 3)?;
        Self::from_civil(&civil)
    }

    /// The 17-digit ILP form `YYYYMMDDHHmmSSfff`.
    pub fn to_ilp(self) -> [u8; 17] {
        let mut out = [0u8; 17];
        let millis = self.write_date_time(&mut out);
        write_digits(&mut out[14..17], millis);
        out
    }

    /// Parses a GeneralizedTime `YYYYMMDDHHmmSS[.f{1,3}]Z` (15, 17, 18 or 19 characters).
    pub fn parse_generalized(text: &[u8]) -> Result<Self, TimestampError> {
        let len = text.len();
        if !matches!(len, 15 | 17..=19) {
            return Err(TimestampError::WrongLength(len));
        }
        let mut civil = Self::parse_date_time(text)?;
        if len > 15 {
            if text[14] != b'.' {
                return Err(TimestampError::BadCharacter(14));
            }
            let fraction_len = len - 16;
            let fraction = digits(text, 15, fraction_len)?;
            civil.millis = fraction * 10u32.pow(3 - fraction_len as u32);
        }
        if text[len - 1] != b'Z' {
            return Err(TimestampError::BadCharacter(len - 1));
        }
        Self::from_civil(&civil)
    }

    /// The 19-character GeneralizedTime `YYYYMMDDHHmmSS.fffZ` that JS `btp-packet` writes and reads.
    pub fn to_generalized(self) -> [u8; 19] {
        let mut out = [0u8; 19];
        let millis = self.write_date_time(&mut out);
        out[14] = b'.';
        write_digits(&mut out[15..18], millis);
        out[18] = b'Z';
        out
    }

    /// ISO 8601 / RFC 3339 form, `2017-12-23T01:21:40.549Z`.
    pub fn to_iso8601(self) -> String {
        let c = self.to_civil();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
        )
    }
}

impl From<SystemTime> for Timestamp {
    /// Converts, truncating to the millisecond and clamping to years 0000 to 9999.
    fn from(time: SystemTime) -> Self {
        let millis = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_millis())
                .map(|ms| -ms)
                .unwrap_or(i64::MIN),
        };
        Timestamp {
            unix_millis: millis.clamp(MIN_MILLIS, MAX_MILLIS),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso8601())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ilp_form_round_trips() {
        let t = Timestamp::parse_ilp(b"20171223012140549").unwrap();
        assert_eq!(t.to_iso8601(), "2017-12-23T01:21:40.549Z");
        assert_eq!(&t.to_ilp(), b"20171223012140549");
        assert_eq!(t.unix_millis(), 1_513_992_100_549);
    }

    #[test]
    fn ilp_form_rejects_bad_text() {
        assert_eq!(
            Timestamp::parse_ilp(b"2017122301214054"),
            Err(TimestampError::WrongLength(16))
        );
        assert_eq!(
            Timestamp::parse_ilp(b"2017122301214054x"),
            Err(TimestampError::BadCharacter(16))
        );
        // RFC 30: leap seconds are smeared, so :60 is invalid.
        assert_eq!(
            Timestamp::parse_ilp(b"20161231235960852"),
            Err(TimestampError::FieldOutOfRange("second"))
        );
        assert_eq!(
            Timestamp::parse_ilp(b"20170229000000000"),
            Err(TimestampError::FieldOutOfRange("day"))
        );
        assert!(Timestamp::parse_ilp(b"20160229000000000").is_ok());
    }

    #[test]
    fn generalized_time_forms() {
        let full = Timestamp::parse_generalized(b"20171224161432.279Z").unwrap();
        assert_eq!(full.to_iso8601(), "2017-12-24T16:14:32.279Z");
        assert_eq!(&full.to_generalized(), b"20171224161432.279Z");
        let tenth = Timestamp::parse_generalized(b"20171224161432.2Z").unwrap();
        assert_eq!(tenth.unix_millis() % 1000, 200);
        let hundredth = Timestamp::parse_generalized(b"20171224161432.27Z").unwrap();
        assert_eq!(hundredth.unix_millis() % 1000, 270);
        let whole = Timestamp::parse_generalized(b"20171224161432Z").unwrap();
        assert_eq!(&whole.to_generalized(), b"20171224161432.000Z");
        assert_eq!(
            Timestamp::parse_generalized(b"20171224161432.Z"),
            Err(TimestampError::WrongLength(16))
        );
        assert_eq!(
            Timestamp::parse_generalized(b"20171224161432.279"),
            Err(TimestampError::BadCharacter(17))
        );
    }

    #[test]
    fn civil_conversion_matches_system_time_everywhere() {
        for &millis in &[
            0i64,
            1,
            86_399_999,
            951_782_400_000,
            -1,
            MIN_MILLIS,
            MAX_MILLIS,
        ] {
            let t = Timestamp::from_unix_millis(millis).unwrap();
            assert_eq!(Timestamp::parse_ilp(&t.to_ilp()), Ok(t), "{millis}");
            assert_eq!(Timestamp::parse_generalized(&t.to_generalized()), Ok(t));
        }
        assert_eq!(Timestamp::from_unix_millis(MAX_MILLIS + 1), None);
    }
}

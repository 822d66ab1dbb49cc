//! Calendar dates of license codes, without a clock: "today" is an argument.

use std::fmt;

/// A UTC calendar day, stored as days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CivilDate {
    days_since_epoch: i32,
}

const DATE_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

impl CivilDate {
    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Result<CivilDate, String> {
        let date = time::Date::parse(text, DATE_FORMAT)
            .map_err(|err| format!("`{text}` is not a date of the form YYYY-MM-DD ({err})"))?;
        Ok(CivilDate::from_time(date))
    }

    /// The UTC day that contains `unix_ms` milliseconds since the epoch.
    pub fn from_unix_ms(unix_ms: i64) -> CivilDate {
        CivilDate {
            days_since_epoch: unix_ms.div_euclid(86_400_000) as i32,
        }
    }

    pub fn days_since_epoch(self) -> i32 {
        self.days_since_epoch
    }

    fn from_time(date: time::Date) -> CivilDate {
        let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1)
            .expect("1970-01-01 is a valid date");
        CivilDate {
            days_since_epoch: (date - epoch).whole_days() as i32,
        }
    }

    fn to_time(self) -> time::Date {
        let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1)
            .expect("1970-01-01 is a valid date");
        epoch + time::Duration::days(self.days_since_epoch as i64)
    }
}

impl fmt::Display for CivilDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_time().format(DATE_FORMAT).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

/// When a license code stops being served: at the end of a UTC day, or never.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expiry {
    Permanent,
    /// Served through the end of this day (UTC).
    EndOf(CivilDate),
}

impl Expiry {
    pub fn parse(text: &str) -> Result<Expiry, String> {
        if text == "permanent" {
            return Ok(Expiry::Permanent);
        }
        CivilDate::parse(text)
            .map(Expiry::EndOf)
            .map_err(|err| format!("{err}, or `permanent`"))
    }

    /// True once `today` is past the last day served.
    pub fn has_expired(self, today: CivilDate) -> bool {
        match self {
            Expiry::Permanent => false,
            Expiry::EndOf(last_day) => today > last_day,
        }
    }
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expiry::Permanent => f.write_str("permanent"),
            Expiry::EndOf(date) => date.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for text in ["1970-01-01", "2026-11-22", "2000-02-29", "2099-12-31"] {
            assert_eq!(CivilDate::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            CivilDate::parse("1970-01-02").unwrap().days_since_epoch(),
            1
        );
        assert!(CivilDate::parse("2026-02-30").is_err());
        assert!(CivilDate::parse("22/11/2026").is_err());
    }

    #[test]
    fn expiry_is_inclusive_of_its_last_day() {
        let last = CivilDate::parse("2026-11-22").unwrap();
        let expiry = Expiry::EndOf(last);
        assert!(!expiry.has_expired(last));
        assert!(expiry.has_expired(CivilDate::parse("2026-11-23").unwrap()));
        assert!(!Expiry::Permanent.has_expired(CivilDate::parse("2999-01-01").unwrap()));
        assert_eq!(
            CivilDate::from_unix_ms(1_795_392_000_000 - 1).to_string(),
            "2026-11-22"
        );
    }
}

//! The unsigned-code format: the `[[license]]` tables a vendor writes for
//! `tessera license sign`, with defaults for the fields a vendor may omit,
//! and their conversion to an [`UnsignedCode`] ready to sign.
//!
//! The core has no clock and no randomness: the day a code is issued (when
//! the table does not say) and the random part of a generated id come in as
//! values from the caller.

use serde::Deserialize;

use crate::date::{CivilDate, Expiry};
use crate::license::{HostBinding, Policy, UnsignedCode};
use crate::version::Version;

/// Bytes of randomness in a generated code id (`vendor-feature-<hex>`).
pub const GENERATED_ID_RANDOM_BYTES: usize = 4;

/// Why an unsigned code file or table is refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnsignedError {
    #[error("not a file of unsigned [[license]] tables: {0}")]
    Syntax(String),
    #[error("holds no [[license]] tables")]
    Empty,
    #[error("code {id}: {field}: {message}")]
    InvalidField {
        id: String,
        field: &'static str,
        message: String,
    },
}

/// One `[[license]]` table of an unsigned code file; omitted fields take defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsignedText {
    /// Generated from vendor, feature and random bytes when absent.
    pub id: Option<String>,
    pub feature: String,
    pub seats: u32,
    #[serde(default = "default_version_min")]
    pub version_min: String,
    #[serde(default = "default_version_max")]
    pub version_max: String,
    /// The signing day when absent.
    pub issued: Option<String>,
    pub expiry: String,
    #[serde(default = "default_hostid")]
    pub hostid: String,
    #[serde(default = "default_threshold")]
    pub borrow_threshold_percent: u32,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_s: u32,
    #[serde(default = "default_lease")]
    pub lease_s: u32,
    /// Temporary licenses (seed 004): any of these allows them, the seed's
    /// defaults fill the rest (8 h, extended after half, returned on close,
    /// 3 devices, no longer offline borrow).
    #[serde(default)]
    pub temporary_period_s: Option<u32>,
    #[serde(default)]
    pub temporary_extend_after_s: Option<u32>,
    #[serde(default)]
    pub temporary_return_on_close: Option<bool>,
    #[serde(default)]
    pub temporary_devices_max: Option<u32>,
    #[serde(default)]
    pub temporary_offline_days_max: Option<u32>,
}

/// `version_min` of a table that gives none: every version.
pub const DEFAULT_VERSION_MIN: &str = "0";
/// `version_max` of a table that gives none: every version.
pub const DEFAULT_VERSION_MAX: &str = "999999";
/// `hostid` of a table that gives none: any host.
pub const DEFAULT_HOSTID: &str = "any";

fn default_version_min() -> String {
    DEFAULT_VERSION_MIN.into()
}
fn default_version_max() -> String {
    DEFAULT_VERSION_MAX.into()
}
fn default_hostid() -> String {
    DEFAULT_HOSTID.into()
}
fn default_threshold() -> u32 {
    Policy::DEFAULT.borrow_threshold_percent
}
fn default_heartbeat() -> u32 {
    Policy::DEFAULT.heartbeat_interval_s
}
fn default_lease() -> u32 {
    Policy::DEFAULT.lease_s
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsignedFile {
    license: Vec<UnsignedText>,
}

/// Parses a file of unsigned `[[license]]` tables; refuses one with none.
pub fn parse_unsigned_file(text: &str) -> Result<Vec<UnsignedText>, UnsignedError> {
    let file: UnsignedFile =
        toml::from_str(text).map_err(|err| UnsignedError::Syntax(err.to_string()))?;
    if file.license.is_empty() {
        return Err(UnsignedError::Empty);
    }
    Ok(file.license)
}

impl UnsignedText {
    /// The fields to sign for `vendor`. `today` is the issue day when the
    /// table gives none; `random` makes the id when the table gives none.
    /// Field values are checked for syntax here; their ranges and relations
    /// are checked by [`crate::VendorSecretKey::sign`].
    pub fn into_unsigned(
        self,
        vendor: &str,
        today: CivilDate,
        random: [u8; GENERATED_ID_RANDOM_BYTES],
    ) -> Result<UnsignedCode, UnsignedError> {
        let id = match self.id {
            Some(id) => id,
            None => format!("{vendor}-{}-{}", self.feature, hex::encode(random)),
        };
        let bad = |field: &'static str| {
            let id = id.clone();
            move |message: String| UnsignedError::InvalidField { id, field, message }
        };
        Ok(UnsignedCode {
            vendor: vendor.to_string(),
            feature: self.feature,
            version_min: Version::parse(&self.version_min).map_err(bad("version_min"))?,
            version_max: Version::parse(&self.version_max).map_err(bad("version_max"))?,
            seats: self.seats,
            issued: match self.issued {
                Some(day) => CivilDate::parse(&day).map_err(bad("issued"))?,
                None => today,
            },
            expiry: Expiry::parse(&self.expiry).map_err(bad("expiry"))?,
            hostid: HostBinding::parse(&self.hostid).map_err(bad("hostid"))?,
            policy: Policy {
                borrow_threshold_percent: self.borrow_threshold_percent,
                heartbeat_interval_s: self.heartbeat_interval_s,
                lease_s: self.lease_s,
            },
            temporary: crate::temporary::TemporaryText {
                temporary_period_s: self.temporary_period_s,
                temporary_extend_after_s: self.temporary_extend_after_s,
                temporary_return_on_close: self.temporary_return_on_close,
                temporary_devices_max: self.temporary_devices_max,
                temporary_offline_days_max: self.temporary_offline_days_max,
            }
            .policy(),
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::tests::test_key;

    const TODAY: &str = "2026-03-04";

    fn today() -> CivilDate {
        CivilDate::parse(TODAY).unwrap()
    }

    fn convert(text: &str) -> Result<Vec<UnsignedCode>, UnsignedError> {
        parse_unsigned_file(text)?
            .into_iter()
            .map(|table| table.into_unsigned("acme", today(), [0xab, 0xcd, 0x01, 0x02]))
            .collect()
    }

    #[test]
    fn omitted_fields_take_defaults() {
        let codes =
            convert("[[license]]\nfeature = \"cad\"\nseats = 5\nexpiry = \"permanent\"\n").unwrap();
        assert_eq!(codes.len(), 1);
        let code = &codes[0];
        assert_eq!(code.id, "acme-cad-abcd0102");
        assert_eq!(code.vendor, "acme");
        assert_eq!(code.version_min, Version::parse("0").unwrap());
        assert_eq!(code.version_max, Version::parse("999999").unwrap());
        assert_eq!(code.issued, today());
        assert_eq!(code.expiry, Expiry::Permanent);
        assert_eq!(code.hostid, HostBinding::Any);
        assert_eq!(code.policy, Policy::DEFAULT);
        // The defaults sign as they are.
        test_key("acme", 3).sign(code.clone()).unwrap();
    }

    #[test]
    fn given_fields_are_kept() {
        let codes = convert(
            "[[license]]\nid = \"c-1\"\nfeature = \"cad\"\nseats = 5\nversion_min = \"1.0\"\n\
             version_max = \"2.5\"\nissued = \"2026-01-02\"\nexpiry = \"2027-01-01\"\n\
             hostid = \"h-9\"\nborrow_threshold_percent = 60\nheartbeat_interval_s = 5\n\
             lease_s = 20\n\n[[license]]\nfeature = \"sim\"\nseats = 1\nexpiry = \"permanent\"\n",
        )
        .unwrap();
        assert_eq!(codes.len(), 2);
        let code = &codes[0];
        assert_eq!(code.id, "c-1");
        assert_eq!(code.version_min.to_string(), "1.0");
        assert_eq!(code.version_max.to_string(), "2.5");
        assert_eq!(code.issued.to_string(), "2026-01-02");
        assert_eq!(code.expiry.to_string(), "2027-01-01");
        assert_eq!(code.hostid, HostBinding::Host("h-9".into()));
        assert_eq!(
            code.policy,
            Policy {
                borrow_threshold_percent: 60,
                heartbeat_interval_s: 5,
                lease_s: 20
            }
        );
        assert_eq!(codes[1].id, "acme-sim-abcd0102");
    }

    #[test]
    fn refusals_name_what_to_fix() {
        type Case = (&'static str, fn(&UnsignedError) -> bool);
        let cases: [Case; 6] = [
            ("", |e| matches!(e, UnsignedError::Syntax(_))),
            ("license = []", |e| *e == UnsignedError::Empty),
            (
                "[[license]]\nfeature = \"cad\"\nseats = 1\nexpiry = \"permanent\"\ncolour = 1\n",
                |e| matches!(e, UnsignedError::Syntax(m) if m.contains("colour")),
            ),
            (
                "[[license]]\nid = \"x\"\nfeature = \"cad\"\nseats = 1\nexpiry = \"someday\"\n",
                |e| matches!(e, UnsignedError::InvalidField { id, field: "expiry", .. } if id == "x"),
            ),
            (
                "[[license]]\nfeature = \"cad\"\nseats = 1\nexpiry = \"permanent\"\nversion_max = \"a\"\n",
                |e| matches!(e, UnsignedError::InvalidField { id, field: "version_max", .. } if id == "acme-cad-abcd0102"),
            ),
            (
                "[[license]]\nfeature = \"cad\"\nseats = 1\nexpiry = \"permanent\"\nhostid = \"a b\"\n",
                |e| matches!(e, UnsignedError::InvalidField { field: "hostid", .. }),
            ),
        ];
        for (text, expected) in cases {
            let err = convert(text).unwrap_err();
            assert!(expected(&err), "{text:?} gave {err:?}");
        }
        let err = convert("[[license]]\nid = \"x\"\nfeature = \"cad\"\nseats = 1\nexpiry = \"permanent\"\nissued = \"2026-13-01\"\n").unwrap_err();
        assert!(err.to_string().starts_with("code x: issued: "), "{err}");
    }
}

//! Temporary licenses (seed 004): a seat that lives for hours or days,
//! survives the program's restart and works with no network.
//!
//! The vendor allows them per code ([`TemporaryPolicy`], signed with the
//! code). A user's *ticket* (the request's user name) may hold a temporary
//! license on at most `devices_max` devices at once; each is a seat of the
//! feature, taken from the pool's free seats and recorded in the replicated
//! control state (`control::FeatureAllocation::temporaries`), so no server
//! holds it and none can lose it. The program keeps the pool's signed
//! token ([`TemporaryFields`]) and checks it offline.

use crate::names::check_name;

/// What a vendor allows for temporary licenses of a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TemporaryPolicy {
    /// How long one activation or extension lasts.
    pub period_s: u32,
    /// How long after its activation a license may be extended.
    pub extend_after_s: u32,
    /// Whether closing the program returns the license at once.
    pub return_on_close: bool,
    /// Most devices one ticket may hold a license on at once.
    pub devices_max: u32,
    /// Longest offline borrow a user may ask for, in days (0: only `period_s`).
    pub offline_days_max: u32,
}

/// Shortest and longest period of one activation.
pub const PERIOD_S_MIN: u32 = 60;
pub const PERIOD_S_MAX: u32 = 30 * 86_400;
/// Most devices per ticket a code may allow.
pub const DEVICES_MAX: u32 = 100;
/// Longest offline borrow a code may allow, in days.
pub const OFFLINE_DAYS_MAX: u32 = 365;

impl TemporaryPolicy {
    /// The seed's defaults: 8 h, extended after 4 h, returned on close, 3 devices.
    pub const DEFAULT: TemporaryPolicy = TemporaryPolicy {
        period_s: 8 * 3_600,
        extend_after_s: 4 * 3_600,
        return_on_close: true,
        devices_max: 3,
        offline_days_max: 0,
    };

    pub fn validate(&self) -> Result<(), String> {
        if !(PERIOD_S_MIN..=PERIOD_S_MAX).contains(&self.period_s) {
            return Err(format!(
                "temporary_period_s is {}; it must be {PERIOD_S_MIN} to {PERIOD_S_MAX}",
                self.period_s
            ));
        }
        if self.extend_after_s == 0 || self.extend_after_s >= self.period_s {
            return Err(format!(
                "temporary_extend_after_s is {}; it must be at least 1 and less than \
                 temporary_period_s ({})",
                self.extend_after_s, self.period_s
            ));
        }
        if !(1..=DEVICES_MAX).contains(&self.devices_max) {
            return Err(format!(
                "temporary_devices_max is {}; it must be 1 to {DEVICES_MAX}",
                self.devices_max
            ));
        }
        if self.offline_days_max > OFFLINE_DAYS_MAX {
            return Err(format!(
                "temporary_offline_days_max is {}; it must be at most {OFFLINE_DAYS_MAX}",
                self.offline_days_max
            ));
        }
        Ok(())
    }

    /// The lines this policy adds to a code's canonical form, after the others.
    pub(crate) fn canonical_lines(&self) -> [(&'static str, String); 5] {
        [
            ("temporary_period_s", self.period_s.to_string()),
            ("temporary_extend_after_s", self.extend_after_s.to_string()),
            (
                "temporary_return_on_close",
                self.return_on_close.to_string(),
            ),
            ("temporary_devices_max", self.devices_max.to_string()),
            (
                "temporary_offline_days_max",
                self.offline_days_max.to_string(),
            ),
        ]
    }

    /// The policy of several codes of one feature: the strictest of each
    /// term, so no code's vendor terms are loosened by another's.
    pub fn strictest<'a>(
        policies: impl IntoIterator<Item = &'a TemporaryPolicy>,
    ) -> Option<TemporaryPolicy> {
        policies
            .into_iter()
            .copied()
            .reduce(|a, b| TemporaryPolicy {
                period_s: a.period_s.min(b.period_s),
                extend_after_s: a.extend_after_s.min(b.extend_after_s),
                return_on_close: a.return_on_close || b.return_on_close,
                devices_max: a.devices_max.min(b.devices_max),
                offline_days_max: a.offline_days_max.min(b.offline_days_max),
            })
    }
}

/// `[temporary.FEATURE]` of a pool file: the administrator's terms for
/// temporary licenses of a feature, which may tighten the vendor's and
/// never loosen them. Unset fields keep the vendor's terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemporaryLimits {
    /// `false`: no temporary licenses of the feature in this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_s: Option<u32>,
    /// When the SDK extends; below the period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend_after_s: Option<u32>,
    /// `true` where the vendor's terms say `false`; never the other way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_on_close: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_days_max: Option<u32>,
}

impl TemporaryLimits {
    /// Checks these terms against the vendor's `policy` (the strictest of
    /// the feature's codes): each may only be tighter.
    pub fn check(&self, vendor: &TemporaryPolicy) -> Result<(), String> {
        let looser = |term: &str, pool: String, theirs: String| {
            Err(format!(
                "{term} is {pool}, looser than the vendor's {theirs}; a pool may only tighten \
                 the vendor's terms"
            ))
        };
        if let Some(p) = self.period_s {
            if p < PERIOD_S_MIN {
                return Err(format!(
                    "period_s is {p}; it must be at least {PERIOD_S_MIN}"
                ));
            }
            if p > vendor.period_s {
                return looser("period_s", p.to_string(), vendor.period_s.to_string());
            }
        }
        if let Some(d) = self.devices_max {
            if d == 0 {
                return Err(
                    "devices_max is 0; it must be at least 1 (or set allowed = false)".into(),
                );
            }
            if d > vendor.devices_max {
                return looser("devices_max", d.to_string(), vendor.devices_max.to_string());
            }
        }
        if let Some(d) = self.offline_days_max {
            if d > vendor.offline_days_max {
                return looser(
                    "offline_days_max",
                    d.to_string(),
                    vendor.offline_days_max.to_string(),
                );
            }
        }
        if self.return_on_close == Some(false) && vendor.return_on_close {
            return looser("return_on_close", "false".into(), "true".into());
        }
        let period_s = self.period_s.unwrap_or(vendor.period_s);
        let extend_after_s = self.extend_after_s.unwrap_or(vendor.extend_after_s);
        if extend_after_s == 0 || extend_after_s >= period_s {
            return Err(format!(
                "extend_after_s is {extend_after_s}; it must be at least 1 and below the period \
                 ({period_s} s){}",
                if self.extend_after_s.is_none() {
                    " (the vendor's; set extend_after_s with a shorter period_s)"
                } else {
                    ""
                }
            ));
        }
        Ok(())
    }

    /// The terms in force: the vendor's `policy` tightened by these;
    /// `None` when the pool allows no temporary licenses.
    pub fn apply(&self, vendor: TemporaryPolicy) -> Option<TemporaryPolicy> {
        if self.allowed == Some(false) {
            return None;
        }
        let period_s = self
            .period_s
            .map_or(vendor.period_s, |p| p.min(vendor.period_s));
        let extend_after_s = self.extend_after_s.unwrap_or(vendor.extend_after_s);
        Some(TemporaryPolicy {
            period_s,
            // Below the period whatever the codes served say.
            extend_after_s: if extend_after_s < period_s {
                extend_after_s
            } else {
                period_s / 2
            },
            return_on_close: vendor.return_on_close || self.return_on_close == Some(true),
            devices_max: self
                .devices_max
                .map_or(vendor.devices_max, |d| d.min(vendor.devices_max)),
            offline_days_max: self
                .offline_days_max
                .map_or(vendor.offline_days_max, |d| d.min(vendor.offline_days_max)),
        })
    }
}

/// The optional fields of a `[[license]]` table that allow temporary
/// licenses; any one present allows them, and the seed's defaults fill the
/// rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TemporaryText {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary_period_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary_extend_after_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary_return_on_close: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary_devices_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary_offline_days_max: Option<u32>,
}

impl TemporaryText {
    /// The policy these fields give, if any is present.
    pub fn policy(&self) -> Option<TemporaryPolicy> {
        let any = self.temporary_period_s.is_some()
            || self.temporary_extend_after_s.is_some()
            || self.temporary_return_on_close.is_some()
            || self.temporary_devices_max.is_some()
            || self.temporary_offline_days_max.is_some();
        let d = TemporaryPolicy::DEFAULT;
        any.then(|| {
            let period_s = self.temporary_period_s.unwrap_or(d.period_s);
            TemporaryPolicy {
                period_s,
                // Half the period unless said: the seed's 4 h of 8 h.
                extend_after_s: self.temporary_extend_after_s.unwrap_or(period_s / 2),
                return_on_close: self.temporary_return_on_close.unwrap_or(d.return_on_close),
                devices_max: self.temporary_devices_max.unwrap_or(d.devices_max),
                offline_days_max: self
                    .temporary_offline_days_max
                    .unwrap_or(d.offline_days_max),
            }
        })
    }

    /// Every field written out, as a signed code's table holds them.
    pub fn of(policy: Option<TemporaryPolicy>) -> TemporaryText {
        match policy {
            None => TemporaryText::default(),
            Some(p) => TemporaryText {
                temporary_period_s: Some(p.period_s),
                temporary_extend_after_s: Some(p.extend_after_s),
                temporary_return_on_close: Some(p.return_on_close),
                temporary_devices_max: Some(p.devices_max),
                temporary_offline_days_max: Some(p.offline_days_max),
            },
        }
    }
}

/// Header of a temporary license token's canonical form.
pub const TOKEN_HEADER: &str = "tessera-temporary-v1";

/// What a temporary license token's signature covers (PROTOCOL.md,
/// "Temporary licenses"). Signed by the activating or extending server's
/// answer key, over the codes behind the feature, so a program checks it
/// against its vendor's keys with no network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenFields {
    pub license_id: String,
    pub pool_id: String,
    pub server_id: String,
    pub hostid: String,
    pub feature: String,
    pub ticket: String,
    pub device: String,
    pub seats: u32,
    pub issued_unix_ms: i64,
    pub expires_unix_ms: i64,
    pub extend_after_unix_ms: i64,
    pub return_on_close: bool,
    /// [`crate::answer::codes_sha256`] of the codes the token carries.
    pub codes_sha256: String,
}

impl TokenFields {
    /// The exact bytes the signature covers; `key_id` is the signing key's.
    pub fn canonical_form(&self, key_id: &str) -> String {
        crate::license::canonical(
            TOKEN_HEADER,
            &[
                ("key_id", key_id.to_string()),
                ("license_id", self.license_id.clone()),
                ("pool_id", self.pool_id.clone()),
                ("server_id", self.server_id.clone()),
                ("hostid", self.hostid.clone()),
                ("feature", self.feature.clone()),
                ("ticket", self.ticket.clone()),
                ("device", self.device.clone()),
                ("seats", self.seats.to_string()),
                ("issued_unix_ms", self.issued_unix_ms.to_string()),
                ("expires_unix_ms", self.expires_unix_ms.to_string()),
                (
                    "extend_after_unix_ms",
                    self.extend_after_unix_ms.to_string(),
                ),
                ("return_on_close", self.return_on_close.to_string()),
                ("codes_sha256", self.codes_sha256.clone()),
            ],
        )
    }
}

/// A device id as the SDK derives it: a name, bounded.
pub fn check_device(device: &str) -> Result<(), String> {
    check_name("device", device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::tests::{test_key, unsigned};
    use crate::LicenseCode;

    #[test]
    fn the_policy_is_signed_with_the_code_and_reads_back_whole() {
        let key = test_key("acme", 7);
        let plain = key.sign(unsigned("cad-1", "cad", 10)).unwrap();
        assert!(!plain.canonical_form().contains("temporary"));
        let mut fields = unsigned("cad-2", "cad", 10);
        fields.temporary = Some(TemporaryPolicy::DEFAULT);
        let code = key.sign(fields).unwrap();
        assert!(code
            .canonical_form()
            .ends_with("temporary_devices_max=3\ntemporary_offline_days_max=0\n"));
        let text = code.to_text();
        let back = LicenseCode::from_text(&text).unwrap();
        assert_eq!(back, code);
        back.verify(&[key.public()]).unwrap();
        // A changed term breaks the signature; a term left out is refused.
        let mut more = text.clone();
        more.temporary_devices_max = Some(30);
        let changed = LicenseCode::from_text(&more).unwrap();
        assert!(changed.verify(&[key.public()]).is_err());
        let mut partial = text;
        partial.temporary_offline_days_max = None;
        let err = LicenseCode::from_text(&partial).unwrap_err().to_string();
        assert!(err.contains("all five temporary_* fields"), "{err}");
    }

    #[test]
    fn terms_are_bounded_and_several_codes_keep_the_strictest() {
        let bad = |change: fn(&mut TemporaryPolicy)| {
            let mut policy = TemporaryPolicy::DEFAULT;
            change(&mut policy);
            policy.validate().unwrap_err()
        };
        assert!(bad(|p| p.period_s = 10).contains("temporary_period_s"));
        assert!(bad(|p| p.extend_after_s = p.period_s).contains("less than"));
        assert!(bad(|p| p.devices_max = 0).contains("temporary_devices_max"));
        assert!(bad(|p| p.offline_days_max = 1_000).contains("offline"));
        let loose = TemporaryPolicy {
            devices_max: 10,
            offline_days_max: 7,
            return_on_close: false,
            ..TemporaryPolicy::DEFAULT
        };
        let strict = TemporaryPolicy::strictest([&loose, &TemporaryPolicy::DEFAULT]).unwrap();
        assert_eq!(strict, TemporaryPolicy::DEFAULT);
        assert_eq!(
            TemporaryText {
                temporary_devices_max: Some(2),
                ..TemporaryText::default()
            }
            .policy(),
            Some(TemporaryPolicy {
                devices_max: 2,
                ..TemporaryPolicy::DEFAULT
            })
        );
        assert_eq!(TemporaryText::default().policy(), None);
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;
    use crate::answer::ServerSecretKey;

    /// The vector PROTOCOL.md quotes: the answer key of seed 5, these fields.
    #[test]
    fn token_vector() {
        let key = ServerSecretKey::from_seed([5; 32]);
        let fields = TokenFields {
            license_id: "t0c5a7d2e9f1b4c3a".into(),
            pool_id: "acme-eng".into(),
            server_id: "A".into(),
            hostid: "mid-0011223344556677".into(),
            feature: "cad".into(),
            ticket: "alice".into(),
            device: "dev-1f2e3d4c5b6a7988".into(),
            seats: 1,
            issued_unix_ms: 1_796_083_200_000,
            expires_unix_ms: 1_796_112_000_000,
            extend_after_unix_ms: 1_796_097_600_000,
            return_on_close: true,
            codes_sha256: "0".repeat(64),
        };
        let canonical = fields.canonical_form(&key.public().key_id());
        assert!(canonical.starts_with("tessera-temporary-v1\nkey_id="));
        assert!(canonical.ends_with(&format!(
            "return_on_close=true\ncodes_sha256={}\n",
            "0".repeat(64)
        )));
        let signature = key.sign_text(&canonical);
        assert_eq!(
            signature,
            "RR6dIQpzN22jbtEEHaF+zupo8Vs62WxY1CCAXgcIF/b4y52dboOzRzb0AHB48+vKcQJH/qNqf9yjG0K2u8e1Ag=="
        );
        key.public().verify_text(&canonical, &signature).unwrap();
        let mut moved = fields.clone();
        moved.device = "dev-another-machine".into();
        assert!(key
            .public()
            .verify_text(&moved.canonical_form(&key.public().key_id()), &signature)
            .is_err());
    }
}

//! The license table: the pool's codes as evaluated on one server on one day.
//!
//! It is never modified; when the day changes or the codes change, the server
//! evaluates a new one. A code is *served* only if its signature checks
//! against a trusted vendor key, it has not expired, and it is bound to any
//! host, to this server's hostid, or to a VID this server holds a valid
//! certificate for (seed 003). Each code not served carries the reason,
//! which `tessera status` shows.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::date::{CivilDate, Expiry};
use crate::license::{LicenseCode, LicenseCodeText, LicenseError, Policy, VendorPublicKey};
use crate::version::Version;

/// Why a code is not served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotServedReason {
    Expired {
        last_day: CivilDate,
    },
    NotYetValid {
        issued: CivilDate,
    },
    WrongHost {
        bound_to: String,
        this_host: String,
    },
    /// Bound to `vid:<vid>`, and this server holds no valid certificate for it.
    NoVidCertificate {
        vid: String,
    },
    Signature(LicenseError),
}

impl fmt::Display for NotServedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotServedReason::Expired { last_day } => write!(f, "expired at the end of {last_day}"),
            NotServedReason::NotYetValid { issued } => {
                write!(f, "issued {issued}, which is after today on this server")
            }
            NotServedReason::WrongHost {
                bound_to,
                this_host,
            } => write!(
                f,
                "bound to hostid {bound_to}, but this server's hostid is {this_host}"
            ),
            NotServedReason::NoVidCertificate { vid } => write!(
                f,
                "bound to VID {vid}, and this server holds no valid certificate for it from a \
                 master server"
            ),
            NotServedReason::Signature(err) => err.fmt(f),
        }
    }
}

/// One code and whether it is served.
#[derive(Clone, Debug)]
pub struct CodeVerdict {
    pub code: LicenseCode,
    pub not_served: Option<NotServedReason>,
}

/// Everything known about one feature.
#[derive(Clone, Debug)]
pub struct FeatureLicense {
    pub feature: String,
    pub vendor: String,
    /// Sum of the seats of the served codes.
    pub hard_limit: u32,
    /// From the served code issued last (ties: the greatest id), so that a
    /// vendor's newer code sets the terms.
    pub policy: Policy,
    pub codes: Vec<CodeVerdict>,
    /// The served codes as a signed answer carries them, and their digest
    /// ([`crate::answer::codes_sha256`]): made once per table, not per answer.
    pub served_texts: Arc<[LicenseCodeText]>,
    pub served_sha256: String,
}

impl FeatureLicense {
    /// True if a served code's version range includes `version`.
    pub fn covers(&self, version: &Version) -> bool {
        self.served().any(|code| {
            let fields = code.fields();
            &fields.version_min <= version && version <= &fields.version_max
        })
    }

    pub fn served(&self) -> impl Iterator<Item = &LicenseCode> {
        self.codes
            .iter()
            .filter(|verdict| verdict.not_served.is_none())
            .map(|verdict| &verdict.code)
    }

    /// The reasons the feature's codes are not served, for an error message.
    pub fn why_not_served(&self) -> String {
        let reasons: Vec<String> = self
            .codes
            .iter()
            .filter_map(|verdict| {
                verdict
                    .not_served
                    .as_ref()
                    .map(|reason| format!("code {}: {reason}", verdict.code.id()))
            })
            .collect();
        reasons.join("; ")
    }
}

/// The codes of a pool, by feature.
#[derive(Clone, Debug, Default)]
pub struct LicenseTable {
    features: BTreeMap<String, FeatureLicense>,
}

/// What a server is, for host binding: its machine's hostid and the VIDs
/// it holds a valid certificate for.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    pub hostid: &'a str,
    pub vids: &'a [String],
}

impl LicenseTable {
    /// The table of a server that holds no VID certificate.
    pub fn evaluate(
        codes: &[LicenseCode],
        trusted: &[VendorPublicKey],
        hostid: &str,
        today: CivilDate,
    ) -> LicenseTable {
        LicenseTable::evaluate_for(codes, trusted, Identity { hostid, vids: &[] }, today)
    }

    pub fn evaluate_for(
        codes: &[LicenseCode],
        trusted: &[VendorPublicKey],
        identity: Identity<'_>,
        today: CivilDate,
    ) -> LicenseTable {
        let mut features: BTreeMap<String, FeatureLicense> = BTreeMap::new();
        for code in codes {
            let verdict = CodeVerdict {
                code: code.clone(),
                not_served: judge(code, trusted, identity, today),
            };
            let entry = features
                .entry(code.feature().to_string())
                .or_insert_with(|| FeatureLicense {
                    feature: code.feature().to_string(),
                    vendor: code.vendor().to_string(),
                    hard_limit: 0,
                    policy: code.fields().policy,
                    codes: Vec::new(),
                    served_texts: Arc::default(),
                    served_sha256: String::new(),
                });
            if verdict.not_served.is_none() {
                entry.hard_limit = entry.hard_limit.saturating_add(code.seats());
            }
            entry.codes.push(verdict);
        }
        for feature in features.values_mut() {
            let newest = feature
                .served()
                .max_by(|a, b| (a.fields().issued, a.id()).cmp(&(b.fields().issued, b.id())))
                .map(|code| code.fields().policy);
            if let Some(policy) = newest {
                feature.policy = policy;
            }
            feature.served_texts = feature.served().map(LicenseCode::to_text).collect();
            feature.served_sha256 = crate::answer::codes_sha256(feature.served());
        }
        LicenseTable { features }
    }

    pub fn feature(&self, name: &str) -> Option<&FeatureLicense> {
        self.features.get(name)
    }

    pub fn features(&self) -> impl Iterator<Item = &FeatureLicense> {
        self.features.values()
    }
}

fn judge(
    code: &LicenseCode,
    trusted: &[VendorPublicKey],
    identity: Identity<'_>,
    today: CivilDate,
) -> Option<NotServedReason> {
    if let Err(err) = code.verify(trusted) {
        return Some(NotServedReason::Signature(err));
    }
    let fields = code.fields();
    if let Expiry::EndOf(last_day) = fields.expiry {
        if fields.expiry.has_expired(today) {
            return Some(NotServedReason::Expired { last_day });
        }
    }
    // One day of slack: a vendor east of the server may date a code tomorrow.
    if fields.issued.days_since_epoch() > today.days_since_epoch() + 1 {
        return Some(NotServedReason::NotYetValid {
            issued: fields.issued,
        });
    }
    let bound_to = fields.hostid.to_string();
    if let Some(vid) = crate::master::vid_of_binding(&bound_to) {
        if !identity.vids.iter().any(|held| held == vid) {
            return Some(NotServedReason::NoVidCertificate {
                vid: vid.to_string(),
            });
        }
        return None;
    }
    if !fields.hostid.allows(identity.hostid) {
        return Some(NotServedReason::WrongHost {
            bound_to,
            this_host: identity.hostid.to_string(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::tests::{test_key, unsigned};
    use crate::license::HostBinding;

    fn day(text: &str) -> CivilDate {
        CivilDate::parse(text).unwrap()
    }

    #[test]
    fn served_codes_add_up_and_others_say_why() {
        let acme = test_key("acme", 1);
        let rogue = test_key("acme", 9);
        let mut expired = unsigned("old", "cad", 50);
        expired.expiry = Expiry::parse("2026-06-30").unwrap();
        let mut bound = unsigned("bound", "cad", 7);
        bound.hostid = HostBinding::Host("mid-other".into());
        let mut newer = unsigned("new", "cad", 5);
        newer.issued = day("2026-03-01");
        newer.policy.lease_s = 60;
        let codes = vec![
            acme.sign(unsigned("base", "cad", 10)).unwrap(),
            acme.sign(newer).unwrap(),
            acme.sign(expired).unwrap(),
            acme.sign(bound).unwrap(),
            rogue.sign(unsigned("forged", "cad", 1000)).unwrap(),
        ];
        let table = LicenseTable::evaluate(&codes, &[acme.public()], "mid-this", day("2026-11-22"));
        let cad = table.feature("cad").unwrap();
        assert_eq!(cad.hard_limit, 15);
        assert_eq!(cad.policy.lease_s, 60, "newest served code sets the policy");
        let why = cad.why_not_served();
        assert!(
            why.contains("code old: expired at the end of 2026-06-30"),
            "{why}"
        );
        assert!(
            why.contains("code bound: bound to hostid mid-other"),
            "{why}"
        );
        assert!(why.contains("code forged: license code forged"), "{why}");
        assert!(cad.covers(&Version::parse("2.5").unwrap()));
        assert!(!cad.covers(&Version::parse("3").unwrap()));
        assert!(table.feature("sim").is_none());
    }

    #[test]
    fn a_feature_with_nothing_served_has_no_seats() {
        let acme = test_key("acme", 1);
        let codes = vec![acme.sign(unsigned("a", "cad", 10)).unwrap()];
        let table = LicenseTable::evaluate(&codes, &[], "h", day("2026-11-22"));
        let cad = table.feature("cad").unwrap();
        assert_eq!(cad.hard_limit, 0);
        assert!(!cad.covers(&Version::parse("1.0").unwrap()));
        assert!(cad.why_not_served().contains("not trusted"));
    }

    /// A code bound to a VID is served only by a server holding a valid
    /// certificate for that VID; a hostid spelled like the VID serves nothing.
    #[test]
    fn a_vid_bound_code_needs_a_certificate_for_its_vid() {
        let acme = test_key("acme", 1);
        let mut bound = unsigned("vid-bound", "cad", 12);
        bound.hostid = HostBinding::parse("vid:acme-vid-1").unwrap();
        let codes = vec![acme.sign(bound).unwrap()];
        let trusted = [acme.public()];
        let today = day("2026-11-22");

        let without = LicenseTable::evaluate(&codes, &trusted, "mid-this", today);
        let cad = without.feature("cad").unwrap();
        assert_eq!(cad.hard_limit, 0);
        assert!(
            cad.why_not_served()
                .contains("bound to VID acme-vid-1, and this server holds no valid certificate"),
            "{}",
            cad.why_not_served()
        );
        // A machine whose hostid were the binding's text still gets nothing.
        let spoofed = LicenseTable::evaluate(&codes, &trusted, "vid:acme-vid-1", today);
        assert_eq!(spoofed.feature("cad").unwrap().hard_limit, 0);

        let other = ["acme-vid-2".to_string()];
        let wrong = LicenseTable::evaluate_for(
            &codes,
            &trusted,
            Identity {
                hostid: "mid-this",
                vids: &other,
            },
            today,
        );
        assert_eq!(wrong.feature("cad").unwrap().hard_limit, 0);

        let held = ["acme-vid-1".to_string()];
        let with = LicenseTable::evaluate_for(
            &codes,
            &trusted,
            Identity {
                hostid: "mid-this",
                vids: &held,
            },
            today,
        );
        assert_eq!(with.feature("cad").unwrap().hard_limit, 12);
    }
}

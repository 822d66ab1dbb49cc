//! License codes: vendor-signed entitlements, their canonical form and Ed25519
//! signatures, and the vendor keys that make and check them.
//!
//! A code is written in TOML as a `[[license]]` table. What is signed is not
//! the TOML but the *canonical form*: a fixed header line, then one
//! `name=value` line per field in a fixed order, each ending in `\n`. Every
//! value is restricted to an alphabet without `=` or line breaks
//! ([`crate::names::check_name`]), so the form is unambiguous. PROTOCOL.md
//! gives the form and a test vector ([`tests::test_vector`]).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

use crate::date::{CivilDate, Expiry};
use crate::names::check_name;
use crate::temporary::{TemporaryPolicy, TemporaryText};
use crate::version::Version;

/// First line of the canonical form; a later format gets a new marker.
pub const CANONICAL_HEADER: &str = "tessera-license-v1";

/// Why a license code or key is refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum LicenseError {
    #[error("license code {id}: {message}")]
    InvalidField { id: String, message: String },
    #[error("license file is not valid TOML of [[license]] tables: {0}")]
    Syntax(String),
    #[error(
        "license code {id} for feature `{feature}` is signed by vendor key {key_id}, which is not trusted; \
         add the public key of vendor `{vendor}` to `vendors` in the server config"
    )]
    UnknownVendorKey {
        id: String,
        feature: String,
        vendor: String,
        key_id: String,
    },
    #[error(
        "license code {id} names vendor `{vendor}` but key {key_id} belongs to vendor `{key_vendor}`"
    )]
    VendorMismatch {
        id: String,
        vendor: String,
        key_id: String,
        key_vendor: String,
    },
    #[error(
        "license code {id} for feature `{feature}` has a bad signature: the code was changed after \
         it was signed, or signed with another key"
    )]
    BadSignature { id: String, feature: String },
    #[error("vendor key: {0}")]
    BadKey(String),
}

/// The first 8 bytes of SHA-256 of a vendor public key, in hex: names the key
/// in codes and messages.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VendorKeyId(String);

impl VendorKeyId {
    pub fn of(key: &VerifyingKey) -> VendorKeyId {
        VendorKeyId(key_id_hex(key))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// A key id as written in a signed document (checked as a name by the caller).
    pub(crate) fn from_text(text: &str) -> VendorKeyId {
        VendorKeyId(text.to_string())
    }
}

impl fmt::Display for VendorKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A vendor's public key, trusted by a server's config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorPublicKey {
    pub vendor: String,
    pub key: VerifyingKey,
}

impl VendorPublicKey {
    /// From the vendor's name and the base64 of the 32 key bytes.
    pub fn from_base64(vendor: &str, public_key: &str) -> Result<VendorPublicKey, LicenseError> {
        check_name("vendor", vendor).map_err(LicenseError::BadKey)?;
        let bytes = decode_32(public_key)
            .map_err(|err| LicenseError::BadKey(format!("public key of `{vendor}`: {err}")))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|err| {
            LicenseError::BadKey(format!(
                "public key of `{vendor}` is not an Ed25519 point: {err}"
            ))
        })?;
        Ok(VendorPublicKey {
            vendor: vendor.to_string(),
            key,
        })
    }

    pub fn key_id(&self) -> VendorKeyId {
        VendorKeyId::of(&self.key)
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.key.as_bytes())
    }
}

/// A vendor's signing key. Made from 32 random bytes by the caller (the core
/// has no randomness source).
#[derive(Clone)]
pub struct VendorSecretKey {
    pub vendor: String,
    key: SigningKey,
}

impl fmt::Debug for VendorSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendorSecretKey")
            .field("vendor", &self.vendor)
            .field("key_id", &self.public().key_id())
            .finish_non_exhaustive()
    }
}

impl VendorSecretKey {
    pub fn from_seed(vendor: &str, seed: [u8; 32]) -> Result<VendorSecretKey, LicenseError> {
        check_name("vendor", vendor).map_err(LicenseError::BadKey)?;
        Ok(VendorSecretKey {
            vendor: vendor.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn from_base64(vendor: &str, secret_key: &str) -> Result<VendorSecretKey, LicenseError> {
        let seed = decode_32(secret_key)
            .map_err(|err| LicenseError::BadKey(format!("secret key of `{vendor}`: {err}")))?;
        VendorSecretKey::from_seed(vendor, seed)
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.key.to_bytes())
    }

    pub fn public(&self) -> VendorPublicKey {
        VendorPublicKey {
            vendor: self.vendor.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `unsigned` (its `vendor` and `key_id` are set from this key).
    /// Signs a canonical form of another signed document (`master.rs`).
    pub(crate) fn sign_bytes(&self, canonical: &[u8]) -> Signature {
        self.key.sign(canonical)
    }

    pub fn sign(&self, unsigned: UnsignedCode) -> Result<LicenseCode, LicenseError> {
        let mut code = LicenseCode {
            fields: unsigned,
            key_id: self.public().key_id(),
            signature: Signature::from_bytes(&[0; 64]),
        };
        code.fields.vendor = self.vendor.clone();
        code.fields.validate()?;
        code.signature = self.key.sign(code.canonical_form().as_bytes());
        Ok(code)
    }
}

/// The first 8 bytes of SHA-256 of a public key, in hex: how a vendor key
/// and a master key are named.
pub(crate) fn key_id_hex(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

/// Why a signed document's vendor key is not among the trusted ones.
pub(crate) enum KeyLookup {
    Unknown,
    /// The key is trusted, but as another vendor's (named).
    OtherVendor(String),
}

/// The trusted key `key_id` names, if it is `vendor`'s.
pub(crate) fn trusted_key<'a>(
    trusted: &'a [VendorPublicKey],
    key_id: &VendorKeyId,
    vendor: &str,
) -> Result<&'a VendorPublicKey, KeyLookup> {
    let key = trusted
        .iter()
        .find(|key| key.key_id() == *key_id)
        .ok_or(KeyLookup::Unknown)?;
    if key.vendor != vendor {
        return Err(KeyLookup::OtherVendor(key.vendor.clone()));
    }
    Ok(key)
}

/// A signed document's canonical form: `header`, then `name=value` lines.
pub(crate) fn canonical(header: &str, lines: &[(&str, String)]) -> String {
    let mut text = String::with_capacity(512);
    text.push_str(header);
    text.push('\n');
    for (name, value) in lines {
        text.push_str(name);
        text.push('=');
        text.push_str(value);
        text.push('\n');
    }
    text
}

pub(crate) fn decode_signature(text: &str) -> Result<Signature, String> {
    let bytes: [u8; 64] = BASE64
        .decode(text.trim())
        .map_err(|err| format!("signature is not base64 ({err})"))?
        .try_into()
        .map_err(|bytes: Vec<u8>| format!("signature is {} bytes, expected 64", bytes.len()))?;
    Ok(Signature::from_bytes(&bytes))
}

pub(crate) fn decode_32(text: &str) -> Result<[u8; 32], String> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|err| format!("not base64 ({err})"))?;
    bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| format!("{} bytes, expected 32", bytes.len()))
}

/// Which machine may serve a code.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostBinding {
    Any,
    /// Only a server whose hostid (`tessera hostid`) equals this.
    Host(String),
}

impl HostBinding {
    pub fn parse(text: &str) -> Result<HostBinding, String> {
        if text == "any" {
            return Ok(HostBinding::Any);
        }
        check_name("hostid", text)?;
        Ok(HostBinding::Host(text.to_string()))
    }

    pub fn allows(&self, hostid: &str) -> bool {
        match self {
            HostBinding::Any => true,
            HostBinding::Host(bound) => bound == hostid,
        }
    }
}

impl fmt::Display for HostBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostBinding::Any => f.write_str("any"),
            HostBinding::Host(host) => f.write_str(host),
        }
    }
}

/// Lease policy a code sets for its feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    /// A server asks the leader for more seats once in-use / allocation exceeds this.
    pub borrow_threshold_percent: u32,
    /// How often clients heartbeat.
    pub heartbeat_interval_s: u32,
    /// How long a grant lives without a heartbeat, measured from the client's send time.
    pub lease_s: u32,
}

/// Shortest lease a code may set, in seconds.
pub const LEASE_S_MIN: u32 = 2;
/// Longest lease a code may set, in seconds (one day).
pub const LEASE_S_MAX: u32 = 86_400;

impl Policy {
    pub const DEFAULT: Policy = Policy {
        borrow_threshold_percent: 80,
        heartbeat_interval_s: 10,
        lease_s: 30,
    };

    fn validate(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.borrow_threshold_percent) {
            return Err(format!(
                "borrow_threshold_percent is {}; it must be 1 to 100",
                self.borrow_threshold_percent
            ));
        }
        if !(LEASE_S_MIN..=LEASE_S_MAX).contains(&self.lease_s) {
            return Err(format!(
                "lease_s is {}; it must be {LEASE_S_MIN} to {LEASE_S_MAX}",
                self.lease_s
            ));
        }
        // At least two heartbeats per lease, so that one lost heartbeat never costs the seat.
        // (In u64: twice an interval of 2^31 s or more does not fit a u32.)
        if self.heartbeat_interval_s == 0
            || u64::from(self.heartbeat_interval_s) * 2 > u64::from(self.lease_s)
        {
            return Err(format!(
                "heartbeat_interval_s is {}; it must be at least 1 and at most half of lease_s ({})",
                self.heartbeat_interval_s, self.lease_s
            ));
        }
        Ok(())
    }
}

/// The fields of a code, before signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsignedCode {
    /// Unique among the codes of a pool; the same code twice never adds up.
    pub id: String,
    /// Set from the signing key by [`VendorSecretKey::sign`].
    pub vendor: String,
    pub feature: String,
    pub version_min: Version,
    pub version_max: Version,
    /// Seats this code adds to the feature's hard limit.
    pub seats: u32,
    pub issued: CivilDate,
    pub expiry: Expiry,
    pub hostid: HostBinding,
    pub policy: Policy,
    /// Whether, and how, its seats may be taken as temporary licenses
    /// (seed 004); `None`: not at all.
    pub temporary: Option<TemporaryPolicy>,
}

/// Most seats one code may carry.
pub const CODE_SEATS_MAX: u32 = 10_000_000;

impl UnsignedCode {
    fn validate(&self) -> Result<(), LicenseError> {
        let invalid = |message: String| LicenseError::InvalidField {
            id: self.id.clone(),
            message,
        };
        check_name("id", &self.id).map_err(invalid)?;
        check_name("vendor", &self.vendor).map_err(invalid)?;
        check_name("feature", &self.feature).map_err(invalid)?;
        if self.version_min > self.version_max {
            return Err(invalid(format!(
                "version_min {} is above version_max {}",
                self.version_min, self.version_max
            )));
        }
        if self.seats == 0 || self.seats > CODE_SEATS_MAX {
            return Err(invalid(format!(
                "seats is {}; it must be 1 to {CODE_SEATS_MAX}",
                self.seats
            )));
        }
        if let Expiry::EndOf(last_day) = self.expiry {
            if last_day < self.issued {
                return Err(invalid(format!(
                    "expiry {last_day} is before issued {}",
                    self.issued
                )));
            }
        }
        self.policy.validate().map_err(invalid)?;
        if let Some(temporary) = &self.temporary {
            temporary.validate().map_err(invalid)?;
        }
        Ok(())
    }
}

/// A signed license code as loaded from a file. The signature is checked by
/// [`LicenseCode::verify`]; a code is never served before that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenseCode {
    fields: UnsignedCode,
    key_id: VendorKeyId,
    signature: Signature,
}

/// The TOML shape of one `[[license]]` table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LicenseCodeText {
    pub id: String,
    pub vendor: String,
    pub feature: String,
    pub version_min: String,
    pub version_max: String,
    pub seats: u32,
    pub issued: String,
    pub expiry: String,
    pub hostid: String,
    pub borrow_threshold_percent: u32,
    pub heartbeat_interval_s: u32,
    pub lease_s: u32,
    /// Temporary licenses (seed 004): all five present, or none.
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
    pub key_id: String,
    pub signature: String,
}

impl LicenseCodeText {
    fn temporary_text(&self) -> TemporaryText {
        TemporaryText {
            temporary_period_s: self.temporary_period_s,
            temporary_extend_after_s: self.temporary_extend_after_s,
            temporary_return_on_close: self.temporary_return_on_close,
            temporary_devices_max: self.temporary_devices_max,
            temporary_offline_days_max: self.temporary_offline_days_max,
        }
    }
}

/// A file of `[[license]]` tables, as `tessera license sign` writes it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LicenseFileText {
    #[serde(default)]
    license: Vec<LicenseCodeText>,
    /// A master license file is also a license file of its slot code
    /// (`master.rs`); the master license itself is read there.
    #[serde(default, rename = "master_license", skip_serializing)]
    _master_license: Option<toml::Table>,
}

impl LicenseCode {
    pub fn id(&self) -> &str {
        &self.fields.id
    }
    pub fn vendor(&self) -> &str {
        &self.fields.vendor
    }
    pub fn feature(&self) -> &str {
        &self.fields.feature
    }
    pub fn seats(&self) -> u32 {
        self.fields.seats
    }
    pub fn fields(&self) -> &UnsignedCode {
        &self.fields
    }
    pub fn key_id(&self) -> &VendorKeyId {
        &self.key_id
    }
    /// The vendor's signature, as bytes.
    pub fn signature_bytes(&self) -> [u8; 64] {
        self.signature.to_bytes()
    }

    /// The exact bytes the signature covers.
    pub fn canonical_form(&self) -> String {
        let f = &self.fields;
        let lines = [
            ("id", f.id.clone()),
            ("vendor", f.vendor.clone()),
            ("key_id", self.key_id.to_string()),
            ("feature", f.feature.clone()),
            ("version_min", f.version_min.to_string()),
            ("version_max", f.version_max.to_string()),
            ("seats", f.seats.to_string()),
            ("issued", f.issued.to_string()),
            ("expiry", f.expiry.to_string()),
            ("hostid", f.hostid.to_string()),
            (
                "borrow_threshold_percent",
                f.policy.borrow_threshold_percent.to_string(),
            ),
            (
                "heartbeat_interval_s",
                f.policy.heartbeat_interval_s.to_string(),
            ),
            ("lease_s", f.policy.lease_s.to_string()),
        ];
        match &f.temporary {
            // Absent, no line: codes without temporary licenses (and their
            // test vector) keep their canonical form.
            None => canonical(CANONICAL_HEADER, &lines),
            Some(temporary) => {
                let mut all = lines.to_vec();
                all.extend(temporary.canonical_lines());
                canonical(CANONICAL_HEADER, &all)
            }
        }
    }

    /// Checks the signature against the trusted keys.
    pub fn verify(&self, trusted: &[VendorPublicKey]) -> Result<(), LicenseError> {
        let key =
            trusted_key(trusted, &self.key_id, &self.fields.vendor).map_err(
                |lookup| match lookup {
                    KeyLookup::Unknown => LicenseError::UnknownVendorKey {
                        id: self.fields.id.clone(),
                        feature: self.fields.feature.clone(),
                        vendor: self.fields.vendor.clone(),
                        key_id: self.key_id.to_string(),
                    },
                    KeyLookup::OtherVendor(key_vendor) => LicenseError::VendorMismatch {
                        id: self.fields.id.clone(),
                        vendor: self.fields.vendor.clone(),
                        key_id: self.key_id.to_string(),
                        key_vendor,
                    },
                },
            )?;
        key.key
            .verify(self.canonical_form().as_bytes(), &self.signature)
            .map_err(|_| LicenseError::BadSignature {
                id: self.fields.id.clone(),
                feature: self.fields.feature.clone(),
            })
    }

    pub fn to_text(&self) -> LicenseCodeText {
        let f = &self.fields;
        LicenseCodeText {
            id: f.id.clone(),
            vendor: f.vendor.clone(),
            feature: f.feature.clone(),
            version_min: f.version_min.to_string(),
            version_max: f.version_max.to_string(),
            seats: f.seats,
            issued: f.issued.to_string(),
            expiry: f.expiry.to_string(),
            hostid: f.hostid.to_string(),
            borrow_threshold_percent: f.policy.borrow_threshold_percent,
            heartbeat_interval_s: f.policy.heartbeat_interval_s,
            lease_s: f.policy.lease_s,
            temporary_period_s: f.temporary.map(|t| t.period_s),
            temporary_extend_after_s: f.temporary.map(|t| t.extend_after_s),
            temporary_return_on_close: f.temporary.map(|t| t.return_on_close),
            temporary_devices_max: f.temporary.map(|t| t.devices_max),
            temporary_offline_days_max: f.temporary.map(|t| t.offline_days_max),
            key_id: self.key_id.to_string(),
            signature: BASE64.encode(self.signature.to_bytes()),
        }
    }

    /// Parses one code's fields; does not check the signature.
    pub fn from_text(text: &LicenseCodeText) -> Result<LicenseCode, LicenseError> {
        let invalid = |message: String| LicenseError::InvalidField {
            id: text.id.clone(),
            message,
        };
        let fields = UnsignedCode {
            id: text.id.clone(),
            vendor: text.vendor.clone(),
            feature: text.feature.clone(),
            version_min: Version::parse(&text.version_min).map_err(invalid)?,
            version_max: Version::parse(&text.version_max).map_err(invalid)?,
            seats: text.seats,
            issued: CivilDate::parse(&text.issued)
                .map_err(|err| invalid(format!("issued: {err}")))?,
            expiry: Expiry::parse(&text.expiry).map_err(|err| invalid(format!("expiry: {err}")))?,
            hostid: HostBinding::parse(&text.hostid).map_err(invalid)?,
            policy: Policy {
                borrow_threshold_percent: text.borrow_threshold_percent,
                heartbeat_interval_s: text.heartbeat_interval_s,
                lease_s: text.lease_s,
            },
            temporary: text.temporary_text().policy(),
        };
        fields.validate()?;
        // A signed code writes all five terms: one that leaves some to
        // defaults would show terms its signature does not cover as written.
        if fields.temporary.is_some()
            && TemporaryText::of(fields.temporary) != text.temporary_text()
        {
            return Err(invalid(
                "a code allowing temporary licenses writes all five temporary_* fields".into(),
            ));
        }
        check_name("key_id", &text.key_id).map_err(invalid)?;
        let signature = decode_signature(&text.signature).map_err(invalid)?;
        let code = LicenseCode {
            fields,
            key_id: VendorKeyId(text.key_id.clone()),
            signature,
        };
        // Values written differently from their canonical spelling (`1.00` for
        // `1.0`) would sign one text and show another; refuse them.
        if code.to_text().version_min != text.version_min
            || code.to_text().version_max != text.version_max
        {
            return Err(invalid(
                "versions must be written without leading zeros (1.0, not 01.00)".to_string(),
            ));
        }
        Ok(code)
    }

    /// Parses a file of `[[license]]` tables; signatures are not checked.
    pub fn parse_file(text: &str) -> Result<Vec<LicenseCode>, LicenseError> {
        let file: LicenseFileText =
            toml::from_str(text).map_err(|err| LicenseError::Syntax(err.to_string()))?;
        file.license.iter().map(LicenseCode::from_text).collect()
    }

    /// Writes codes as a file of `[[license]]` tables.
    pub fn write_file(codes: &[LicenseCode]) -> String {
        let file = LicenseFileText {
            license: codes.iter().map(LicenseCode::to_text).collect(),
            _master_license: None,
        };
        toml::to_string(&file).expect("license codes always serialize")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn test_key(vendor: &str, seed_byte: u8) -> VendorSecretKey {
        VendorSecretKey::from_seed(vendor, [seed_byte; 32]).unwrap()
    }

    pub(crate) fn unsigned(id: &str, feature: &str, seats: u32) -> UnsignedCode {
        UnsignedCode {
            id: id.into(),
            vendor: String::new(),
            feature: feature.into(),
            version_min: Version::parse("1.0").unwrap(),
            version_max: Version::parse("2.99").unwrap(),
            seats,
            issued: CivilDate::parse("2026-01-01").unwrap(),
            expiry: Expiry::parse("2027-12-31").unwrap(),
            hostid: HostBinding::Any,
            policy: Policy::DEFAULT,
            temporary: None,
        }
    }

    /// The vector PROTOCOL.md quotes: a fixed seed, a fixed code, a fixed signature.
    #[test]
    fn test_vector() {
        let key = test_key("acme", 7);
        assert_eq!(
            key.public().to_base64(),
            "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw="
        );
        assert_eq!(key.public().key_id().as_str(), "fe812c12f3ab4ce6");
        let code = key.sign(unsigned("acme-cad-0001", "cad", 100)).unwrap();
        assert_eq!(
            code.canonical_form(),
            "tessera-license-v1\nid=acme-cad-0001\nvendor=acme\nkey_id=fe812c12f3ab4ce6\n\
             feature=cad\nversion_min=1.0\nversion_max=2.99\nseats=100\nissued=2026-01-01\n\
             expiry=2027-12-31\nhostid=any\nborrow_threshold_percent=80\n\
             heartbeat_interval_s=10\nlease_s=30\n"
        );
        assert_eq!(
            code.to_text().signature,
            "z9gxTV1G4v4Do5u2Y3evM8koVOYFixcIH5F4jV5Ju1Ng74C5lnD69Lz9DKLemz//UgTG64JD01PjyUBvjVYCBw=="
        );
        code.verify(&[key.public()]).unwrap();
    }

    #[test]
    fn file_round_trip_and_verify() {
        let key = test_key("acme", 1);
        let codes = vec![
            key.sign(unsigned("a1", "cad", 10)).unwrap(),
            key.sign(unsigned("a2", "sim", 5)).unwrap(),
        ];
        let text = LicenseCode::write_file(&codes);
        let parsed = LicenseCode::parse_file(&text).unwrap();
        assert_eq!(parsed, codes);
        for code in &parsed {
            code.verify(&[key.public()]).unwrap();
        }
    }

    #[test]
    fn every_changed_field_breaks_the_signature() {
        let key = test_key("acme", 1);
        let code = key.sign(unsigned("a1", "cad", 10)).unwrap();
        let edits: Vec<fn(&mut LicenseCodeText)> = vec![
            |t| t.id = "a2".into(),
            |t| t.feature = "cae".into(),
            |t| t.version_max = "3.0".into(),
            |t| t.seats = 11,
            |t| t.issued = "2026-01-02".into(),
            |t| t.expiry = "permanent".into(),
            |t| t.hostid = "mid-0123".into(),
            |t| t.borrow_threshold_percent = 81,
            |t| t.heartbeat_interval_s = 9,
            |t| t.lease_s = 31,
        ];
        for edit in edits {
            let mut text = code.to_text();
            edit(&mut text);
            let tampered = LicenseCode::from_text(&text).unwrap();
            assert!(matches!(
                tampered.verify(&[key.public()]),
                Err(LicenseError::BadSignature { .. })
            ));
        }
    }

    #[test]
    fn unknown_key_and_vendor_mismatch() {
        let acme = test_key("acme", 1);
        let globex = test_key("globex", 2);
        let code = acme.sign(unsigned("a1", "cad", 10)).unwrap();
        let err = code.verify(&[globex.public()]).unwrap_err();
        assert!(err.to_string().contains("not trusted"), "{err}");
        let impostor = VendorPublicKey {
            vendor: "globex".into(),
            key: acme.public().key,
        };
        assert!(matches!(
            code.verify(&[impostor]),
            Err(LicenseError::VendorMismatch { .. })
        ));
    }

    #[test]
    fn bad_fields_are_refused_with_reasons() {
        let key = test_key("acme", 1);
        type Edit = fn(&mut UnsignedCode);
        let cases: Vec<(Edit, &str)> = vec![
            (|c| c.seats = 0, "seats is 0"),
            (|c| c.feature = "a b".into(), "feature"),
            (
                |c| c.version_min = Version::parse("3").unwrap(),
                "above version_max",
            ),
            (|c| c.policy.lease_s = 1, "lease_s is 1"),
            (
                |c| c.policy.heartbeat_interval_s = 20,
                "at most half of lease_s",
            ),
            // Found by the fuzz target `fuzz_license_code_files`: twice
            // this overflowed a u32 (a panic in debug builds; in release,
            // 2^31 doubled wrapped to 0 and passed).
            (
                |c| c.policy.heartbeat_interval_s = u32::MAX,
                "at most half of lease_s",
            ),
            (
                |c| c.policy.heartbeat_interval_s = 1 << 31,
                "at most half of lease_s",
            ),
            (
                |c| c.expiry = Expiry::parse("2025-01-01").unwrap(),
                "before issued",
            ),
        ];
        for (edit, expected) in cases {
            let mut code = unsigned("a1", "cad", 10);
            edit(&mut code);
            let err = key.sign(code).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
        let garbage = LicenseCode::parse_file("[[license]]\nid = 3").unwrap_err();
        assert!(matches!(garbage, LicenseError::Syntax(_)));
    }
}
